""""Not this person": faces recorded as negatives of an identity, and the identity's own threshold they raise.

A wrong name is one face that scored above the gallery's threshold against someone's centroid. Rather than
move the gallery's operating point (every identity would pay for one mistake), the named identity gets its
own threshold: just above the best score of its negatives (``NEAR`` above, so near-copies of the face, the
next frames of the same visit, no longer name them either), never below the gallery's threshold, and never
above a bound taken from the identity's own genuine scores (leave-one-out scores of its templates against
the rest of its centroid): a negative that scores like the person's own photos (a look-alike, or a reject
of the right person by mistake) raises the threshold only to that bound, so the person is not locked out.
The thresholds are computed with every calibration (they follow a recalibrated gallery threshold) and stored
in its figures as ``per_identity``.
"""

from __future__ import annotations

import numpy as np

from pipeline.gallery.store import Gallery, GalleryError, Identity

NEAR = 0.01  # above the negative's own score: its near-copies are refused too
CAP_QUANTILE = 0.05  # the bound: ~95 % of the own leave-one-out scores stay above it (docs/benchmarks.md)
MAX_RAISE_FEW_TEMPLATES = 0.02  # the bound above the gallery threshold for an identity of one template


def genuine_bound(person: Identity, threshold: float) -> float:
    """The highest own threshold ``person`` may get: the ``CAP_QUANTILE`` of their templates' leave-one-out
    scores (never below the gallery's threshold); with fewer than two kept templates, a small fixed step."""
    kept = person.templates[~person.outlier] if len(person.templates) else person.templates
    if len(kept) < 2:
        return threshold + MAX_RAISE_FEW_TEMPLATES
    kept = kept.astype(np.float64)
    total = kept.sum(0)
    loo = total[None, :] - kept
    loo /= np.linalg.norm(loo, axis=1, keepdims=True)
    scores = np.einsum("ij,ij->i", kept, loo)
    return max(threshold, float(np.quantile(scores, CAP_QUANTILE)))


def own_thresholds(people: list[Identity], negatives: dict[str, np.ndarray], threshold: float | None) -> dict:
    """``{name: {threshold, negatives, wanted, bound, bounded}}`` for each identity with negatives."""
    if threshold is None:
        return {}
    out: dict[str, dict] = {}
    for p in people:
        neg = negatives.get(p.name)
        if neg is None or not len(neg):
            continue
        wanted = float(np.max(neg.astype(np.float64) @ p.centroid.astype(np.float64))) + NEAR
        bound = genuine_bound(p, threshold)
        own = max(threshold, min(wanted, bound))
        out[p.name] = {"threshold": round(own, 6), "negatives": len(neg), "wanted": round(wanted, 6),
                       "bound": round(bound, 6), "bounded": wanted > bound}
    return out


def with_own_thresholds(figures: dict | None, people: list[Identity], negatives: dict[str, np.ndarray]) -> dict | None:
    """The calibration ``figures`` with ``per_identity`` recomputed for these people and negatives."""
    if figures is None:
        return None
    own = own_thresholds(people, negatives, figures.get("threshold"))
    out = {k: v for k, v in figures.items() if k != "per_identity"}
    if own:
        out["per_identity"] = own
    return out


def per_identity(calibration: dict | None) -> dict[str, float]:
    """name -> own threshold, as stored with the calibration (empty for a gallery without negatives)."""
    return {n: float(v["threshold"]) for n, v in ((calibration or {}).get("per_identity") or {}).items()}


def reject(gallery: Gallery, name: str, vec: np.ndarray, source: str) -> dict:
    """Record ``vec`` as a face that is not ``name`` and raise their own threshold, in one transaction."""
    vec = np.asarray(vec, np.float32).reshape(-1)
    if len(vec) != gallery.dim:
        raise GalleryError(f"the face has {len(vec)} dimensions; gallery {gallery.path} holds {gallery.dim}")
    vec = vec / max(float(np.linalg.norm(vec)), 1e-12)
    with gallery.writing():
        people = gallery.identities()
        person = next((p for p in people if p.name == name), None)
        if person is None:
            raise GalleryError(f"no identity named {name!r} in {gallery.path}")
        if gallery.calibration is None or gallery.threshold is None:  # written before calibration was automatic
            raise GalleryError(f"gallery {gallery.path} is not calibrated: run 'facestream gallery calibrate' first")
        before = per_identity(gallery.calibration).get(name, gallery.threshold)
        negatives = gallery.negatives()
        negatives[name] = np.vstack([negatives.get(name, np.zeros((0, len(vec)), np.float32)), vec[None, :]])
        figures = with_own_thresholds(gallery.calibration, people, negatives)
        gallery.add_negative(name, vec, source, figures)
    own = (figures or {}).get("per_identity", {}).get(name, {})
    return {"identity": name, "score": round(float(vec @ person.centroid), 4), "negatives": own.get("negatives", 1),
            "threshold_before": before, "threshold": own.get("threshold", gallery.threshold),
            "gallery_threshold": gallery.threshold, "bound": own.get("bound"), "bounded": own.get("bounded", False),
            "version": gallery.version}
