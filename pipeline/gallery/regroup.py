"""Merge and split identities: two names that are one person, or one name that holds two people.

Each is one transaction (``Gallery.regroup``) that also stores the gallery's new calibration, computed
beforehand on the gallery as it will be: a reader (a daemon reloading) sees the old gallery or the new one,
never a half. Templates keep their photos, quality and order; centroids and outlier flags are recomputed
as enrolment computes them (``trimmed_centroid``), so splitting off what a merge brought in gives back the
identities, centroids and calibration from before. A template is named by its position in the identity's
list (1-based: ``gallery list --templates``, ``GET /v1/identities``).
"""

from __future__ import annotations

import numpy as np

from pipeline import names
from pipeline.gallery.calibration import full_calibration
from pipeline.gallery.enrol import trimmed_centroid
from pipeline.gallery.store import Gallery, GalleryError, Identity


def _person(name: str, rows: list[tuple[np.ndarray, str, str, dict]]) -> Identity:
    vecs = np.stack([r[0] for r in rows]).astype(np.float32)
    centroid, outlier = trimmed_centroid(vecs)
    return Identity(name, centroid, vecs, outlier, [r[1] for r in rows], [r[2] for r in rows], [r[3] for r in rows])


def _rows(p: Identity) -> list[tuple[np.ndarray, str, str, dict]]:
    return list(zip(p.templates, p.paths, p.sha256s, p.quality or [{}] * len(p.paths), strict=True))


def _find(people: list[Identity], name: str, gallery: Gallery) -> Identity:
    person = next((p for p in people if p.name == name), None)
    if person is None:
        raise GalleryError(f"no identity named {names.clip(name)!r} in {gallery.path}")
    return person


def merge(gallery: Gallery, into: str, other: str, target_far: float) -> dict:
    """``other``'s templates, offered photos and negatives go to ``into``; ``other`` is removed."""
    if into == other:
        raise GalleryError(f"cannot merge {names.clip(into)!r} into itself: give two different identities")
    with gallery.writing():
        people = gallery.identities()
        a, b = _find(people, into, gallery), _find(people, other, gallery)
        have = set(a.sha256s)
        rows = _rows(a) + [r for r in _rows(b) if r[2] not in have]  # one photo enrolled for both: once
        merged = _person(into, rows)
        after = [p for p in people if p.name not in (into, other)] + [merged]
        negatives = gallery.negatives()
        if other in negatives:
            negatives[into] = np.vstack([negatives.get(into, np.zeros((0, gallery.dim), np.float32)),
                                         negatives.pop(other)])
        figures = full_calibration(after, negatives, gallery.model_id, target_far)
        gallery.regroup([merged], [other], {other: into}, {}, figures)
    return {"merged": other, "into": into, "templates": len(merged.paths), "moved": len(rows) - len(a.paths),
            "threshold": figures["threshold"], "margin": figures["margin"], "version": gallery.version}


def parse_positions(text: str | list) -> list[int]:
    """``"3,4"`` (or a list of ints) -> [3, 4]; a ValueError of one line for anything else."""
    items = text.split(",") if isinstance(text, str) else list(text)
    try:
        out = [int(str(x).strip()) for x in items if str(x).strip()]
    except ValueError:
        raise ValueError(f"templates: give positions like 3,4 (see gallery list --templates), got {text!r}") from None
    if not out:
        raise ValueError("templates: give at least one template position")
    return out


def split(gallery: Gallery, name: str, positions: list[int], new: str, target_far: float) -> dict:
    """The templates at ``positions`` (1-based) of ``name`` become the new identity ``new``."""
    with gallery.writing():
        people = gallery.identities()
        a = _find(people, name, gallery)
        if new in {p.name for p in people}:
            raise GalleryError(f"an identity named {names.clip(new)!r} already exists: merge into it instead")
        try:
            new = names.check_new_name(new, [p.name for p in people])
        except names.BadName as exc:
            raise GalleryError(str(exc)) from None
        n = len(a.paths)
        if bad := sorted({p for p in positions if not 1 <= p <= n}):
            raise GalleryError(f"{names.clip(name)!r} has templates 1-{n}; no template {bad[0]}")
        picked = sorted(set(positions))
        if len(picked) == n:
            raise GalleryError(f"splitting every template of {names.clip(name)!r} off is a rename: use gallery "
                               "rename")
        rows = _rows(a)
        stay = _person(name, [r for i, r in enumerate(rows, 1) if i not in picked])
        gone = _person(new, [rows[i - 1] for i in picked])
        after = [p for p in people if p.name != name] + [stay, gone]
        figures = full_calibration(after, gallery.negatives(), gallery.model_id, target_far)
        gallery.regroup([stay, gone], [], {}, {new: set(gone.sha256s)}, figures)
    return {"split": name, "into": new, "templates": len(gone.paths), "left": len(stay.paths),
            "threshold": figures["threshold"], "margin": figures["margin"], "version": gallery.version}
