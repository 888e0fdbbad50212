"""``facestream gallery export``: a gallery's centroids and templates for other tools."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pipeline.gallery.store import Gallery
from pipeline.private_files import check_output, open_private


def export(gallery: Gallery, out_prefix: Path) -> tuple[Path, Path]:
    """Write ``PREFIX.npz`` (centroids, templates, labels) and ``PREFIX.json`` (metadata) for other tools, both
    0600 whether new or overwritten: they hold every enrolled person's name and face templates."""
    import json

    npz = check_output(f"{out_prefix}.npz", "gallery export --out")  # both checked before either is written
    meta = check_output(f"{out_prefix}.json", "gallery export --out")
    people = gallery.identities()
    with open_private(npz, "wb") as f:  # a file object: numpy would open the path 0666 less the umask
        np.savez(f, names=np.array([p.name for p in people]),
                 centroids=np.stack([p.centroid for p in people]) if people else np.zeros((0, gallery.dim)),
                 templates=np.vstack([p.templates for p in people]) if people else np.zeros((0, gallery.dim)),
                 template_labels=np.array([p.name for p in people for _ in p.paths]),
                 template_outlier=np.concatenate([p.outlier for p in people]) if people else np.zeros(0, bool))
    info = gallery.info()
    info["identities_list"] = [{"name": p.name, "templates": len(p.paths), "outliers": int(p.outlier.sum()),
                                "paths": p.paths} for p in people]
    with open_private(meta, "w", encoding="utf-8") as f:
        f.write(json.dumps(info, indent=2))
    return npz, meta
