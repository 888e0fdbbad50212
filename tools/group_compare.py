"""The comparison behind the choice of grouping method (docs/profiles.md, "Unknown people grouped"): purity
and completeness of each method on labelled embeddings, at a same-person threshold.

``python -m tools.group_compare --index DIR --person-from REGEX``: the unknown tracks of an analysis, the
person read from the video name (REGEX's first group). ``--photos CSV``: photos listed as
``filename,identity`` (the shared data's ``labels.csv``), embedded as a gallery would. ``--threshold``
defaults to the index's own, else to the photo gallery prior of the model for that many people.
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

import numpy as np

from pipeline.face_groups import compare_methods


def _from_index(folder: Path, pattern: str) -> tuple[np.ndarray, list[str], float]:
    from pipeline.face_index import FaceIndex

    ix = FaceIndex.open(folder)
    keep = [i for i, r in enumerate(ix.rows) if r["decision"] == "unknown"]
    rx = re.compile(pattern)
    truth = []
    for i in keep:
        m = rx.search(ix.rows[i]["video"])
        if m is None:
            raise ValueError(f"--person-from {pattern!r} does not match video {ix.rows[i]['video']!r}")
        truth.append(m.group(1))
    return ix.vectors[keep], truth, ix.meta.threshold


def _from_photos(csv_path: Path) -> tuple[np.ndarray, list[str], str]:
    from models.detector import DetectorSettings, MTCNNDetector
    from models.embedder import load_embedder
    from pipeline.gallery.photo_list import collect_sources
    from pipeline.gallery.stills import StillEmbedder

    sources = collect_sources(csv_path, strict=False)
    engine = StillEmbedder(MTCNNDetector(DetectorSettings(max_side=1600)), load_embedder("dlib-resnet-v1", "torch"),
                           None, policy="dominant")
    found = engine.embed_files([s.path for s in sources])
    ok = [(r.vec, s.identity) for r, s in zip(found, sources, strict=True) if r.ok]
    return np.stack([v for v, _ in ok]), [p for _, p in ok], engine.embedder.model_id


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--index", type=Path, help="an analysis folder")
    ap.add_argument("--person-from", default=r"^(.*?)(?:_again|_part\d+)?$", help="regex: person from video name")
    ap.add_argument("--photos", type=Path, help="a labels CSV (filename,identity)")
    ap.add_argument("--threshold", type=float)
    args = ap.parse_args(argv)
    if args.index:
        vecs, truth, threshold = _from_index(args.index, args.person_from)
    else:
        from pipeline.gallery.operating_point import prior_point

        vecs, truth, model_id = _from_photos(args.photos)
        threshold = prior_point(model_id, [], 0.01 * 1).threshold
    threshold = args.threshold if args.threshold is not None else threshold
    print(json.dumps({"appearances": len(truth), "people": len(set(truth)), "threshold": round(threshold, 4)}))
    for row in compare_methods(vecs, truth, threshold):
        print(json.dumps(row))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
