"""Photos to identities: quality gates, centroids, and the two writes (build a gallery, enrol one person).

Quality gates keep bad reference photos out (they poison matching more than anything else); every
skipped file is reported with its reason. Embeddings are cached inside the gallery by file hash +
detector + model, so a rebuild only embeds new photos. Every write is one transaction and leaves the
gallery calibrated.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from pipeline.csv_files import write_dicts
from pipeline.gallery.calibration import recalibrate
from pipeline.gallery.photo_list import Source
from pipeline.gallery.store import Gallery, Identity
from pipeline.names import check_new_name

if TYPE_CHECKING:  # types only: merge and split (trimmed_centroid) import neither torch nor OpenCV
    from pipeline.gallery.stills import FaceResult, StillEmbedder


@dataclass(frozen=True)
class QualityGates:
    """Thresholds a reference photo's face must pass to be enrolled."""

    min_face_px: float = 40.0
    min_blur: float = 10.0
    min_prob: float = 0.95

    def check(self, info: dict) -> str | None:
        if float(info.get("face_px", 0)) < self.min_face_px:
            return f"face too small ({info.get('face_px')} px < {self.min_face_px:g})"
        if float(info.get("blur", 0)) < self.min_blur:
            return f"too blurred (Laplacian variance {info.get('blur')} < {self.min_blur:g})"
        if float(info.get("prob", 0)) < self.min_prob:
            return f"low detection probability ({info.get('prob')} < {self.min_prob:g})"
        return None


def trimmed_centroid(vecs: np.ndarray, k: float = 2.5) -> tuple[np.ndarray, np.ndarray]:
    """Mean direction after dropping templates far from the identity's own mean.

    A template is an outlier when its similarity to the mean is below median - k * MAD (MAD
    floored at 0.02), judged only with 3+ templates. Returns (unit centroid, outlier mask)."""
    mean = vecs.mean(0)
    mean /= np.linalg.norm(mean)
    outlier = np.zeros(len(vecs), bool)
    if len(vecs) >= 3:
        sims = vecs @ mean
        med = float(np.median(sims))
        mad = max(float(np.median(np.abs(sims - med))), 0.02)
        outlier = sims < med - k * mad
        if outlier.all():
            outlier[:] = False
    kept = vecs[~outlier]
    c = kept.mean(0)
    return (c / np.linalg.norm(c)).astype(np.float32), outlier


def find_conflicts(people: list[Identity], threshold: float | None) -> tuple[list[dict], list[dict]]:
    """Templates nearer another identity's centroid than their own (likely mislabelled), and identity
    pairs whose centroids are closer than the threshold (easily confused)."""
    if len(people) < 2:
        return [], []
    names = [p.name for p in people]
    cents = np.stack([p.centroid for p in people])
    mislabelled = []
    for i, p in enumerate(people):
        if not len(p.templates):
            continue
        sims = p.templates @ cents.T
        for t, row in enumerate(sims):
            j = int(np.argmax(row))
            if j != i:
                mislabelled.append({"path": p.paths[t], "identity": p.name, "nearest": names[j],
                                    "own_score": round(float(row[i]), 4), "nearest_score": round(float(row[j]), 4)})
    close = []
    limit = threshold if threshold is not None else 0.96
    cs = cents @ cents.T
    for i in range(len(people)):
        for j in range(i + 1, len(people)):
            if cs[i, j] >= limit:
                close.append({"a": names[i], "b": names[j], "similarity": round(float(cs[i, j]), 4)})
    return mislabelled, close


DEFAULT_TARGET_FAR = 0.01


def build(engine: StillEmbedder, gallery: Gallery, sources: list[Source], gates: QualityGates,
          report_dir: Path | None, replace_all: bool = True, progress: bool = True,
          target_far: float = DEFAULT_TARGET_FAR) -> dict:
    """Embed, gate, deduplicate and write identities in one transaction, then calibrate; returns counts."""
    results = engine.embed_files([s.path for s in sources], progress="embedding" if progress else None)
    skipped: list[dict] = []
    seen: dict[str, Source] = {}
    per_id: dict[str, list[FaceResult]] = defaultdict(list)
    for s, r in zip(sources, results, strict=True):
        reason = r.reason
        if reason is None and r.sha256 in seen:
            first = seen[r.sha256]
            reason = f"duplicate of {first.path}" + (f" ({first.identity})" if first.identity != s.identity else "")
        if reason is None:
            reason = gates.check(r.info)
        if reason is not None:
            skipped.append({"path": str(s.path), "identity": s.identity, "reason": reason})
            continue
        seen[r.sha256] = s  # type: ignore[index]
        per_id[s.identity].append(r)
    people = []
    for name in sorted(per_id):
        rs = per_id[name]
        vecs = np.stack([r.vec for r in rs])
        centroid, outlier = trimmed_centroid(vecs)
        people.append(Identity(name, centroid, vecs, outlier, [str(r.path) for r in rs],
                               [r.sha256 for r in rs], [r.info for r in rs]))  # type: ignore[misc]
    no_photo = sorted({s.identity for s in sources} - set(per_id))
    mislabelled, close = find_conflicts(people, gallery.threshold)
    offered: dict[str, set[str]] = defaultdict(set)
    for s, r in zip(sources, results, strict=True):
        if r.sha256:
            offered[s.identity].add(r.sha256)
    gallery.replace_identities(people, keep_others=not replace_all, sources=offered)
    calibration = recalibrate(gallery, target_far)
    if report_dir is not None:
        report_dir.mkdir(parents=True, exist_ok=True)
        write_dicts(report_dir / "skipped.csv", ["path", "identity", "reason"], skipped)
        write_dicts(report_dir / "mislabelled.csv", ["path", "identity", "nearest", "own_score", "nearest_score"],
                   mislabelled)
        write_dicts(report_dir / "close_identities.csv", ["a", "b", "similarity"], close)
    return {
        "gallery": str(gallery.path), "model": gallery.model_id, "files": len(sources),
        "embedded": engine.computed, "from_cache": engine.cached, "enrolled": sum(len(p.templates) for p in people),
        "identities": len(people), "outliers": int(sum(p.outlier.sum() for p in people)), "skipped": len(skipped),
        "identities_without_photo": no_photo, "mislabelled_suspects": len(mislabelled),
        "close_identity_pairs": len(close), "threshold": calibration["threshold"], "margin": calibration["margin"],
        "calibration": calibration["method"], "skipped_files": skipped,
    }


def enrol(engine: StillEmbedder, gallery: Gallery, name: str, paths: list[Path], gates: QualityGates,
          target_far: float = DEFAULT_TARGET_FAR, results: list[FaceResult] | None = None,
          refuse_shared: bool = False) -> dict:
    """Add photos to one identity (created if new) without touching anyone else; one transaction; then
    calibrate the gallery again. ``results``: faces already embedded (from a video) instead of ``paths``.
    A photo enrolled for someone else is refused with ``refuse_shared``, else listed in ``shared_photos``."""
    people = gallery.identities()
    name = check_new_name(name, [p.name for p in people])
    existing = {p.name: p for p in people}.get(name)
    owners = {sha: p.name for p in people if p.name != name for sha in p.sha256s}
    results = list(results) if results is not None else engine.embed_files(paths)
    have = set(existing.sha256s) if existing else set()
    added, skipped, shared = [], [], []
    for r in results:
        reason = r.reason or ("already enrolled" if r.sha256 in have else None) or gates.check(r.info)
        if reason is None and r.sha256 in owners:
            # One photo, two people: one of the two names is wrong. The API refuses it; the CLI warns.
            if refuse_shared:
                reason = f"already enrolled for {owners[r.sha256]}"
            else:
                shared.append({"path": str(r.path), "also_enrolled_for": owners[r.sha256]})
        if reason:
            skipped.append({"path": str(r.path), "identity": name, "reason": reason})
            continue
        have.add(r.sha256)  # type: ignore[arg-type]
        added.append(r)
    if added:
        vecs = [r.vec for r in added]
        paths_ = [str(r.path) for r in added]
        shas = [r.sha256 for r in added]
        quality = [r.info for r in added]
        if existing:
            vecs = [*existing.templates, *vecs]
            paths_ = existing.paths + paths_
            shas = existing.sha256s + shas
            quality = (existing.quality or [{}] * len(existing.paths)) + quality
        stacked = np.stack(vecs)
        centroid, outlier = trimmed_centroid(stacked)
        gallery.replace_identities([Identity(name, centroid, stacked, outlier, paths_, shas, quality)],  # type: ignore[arg-type]
                                   keep_others=True, sources={name: {r.sha256 for r in results if r.sha256}})
        calibration = recalibrate(gallery, target_far)
    else:
        calibration = {"threshold": gallery.threshold, "margin": gallery.margin}
    return {"identity": name, "added": len(added), "skipped": len(skipped), "skipped_files": skipped,
            **({"shared_photos": shared} if shared else {}),
            "embedded": engine.computed, "from_cache": engine.cached, "threshold": calibration["threshold"],
            "margin": calibration["margin"]}
