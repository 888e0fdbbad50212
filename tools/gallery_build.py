"""``facestream gallery build``: photos (folder per identity, or a CSV) to a gallery file.

Quality gates keep bad reference photos out (they poison matching more than anything else);
every skipped file is reported with its reason. Embeddings are cached inside the gallery by
file hash + detector + model, so a rebuild only embeds new photos.
"""

from __future__ import annotations

import csv
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.gallery import Gallery, Identity
from pipeline.names import BadName, check_new_name, clean_name, clip, collisions
from pipeline.private_files import check_output, open_private
from pipeline.stills import FaceResult, StillEmbedder
from tools.calibrate import recalibrate
from tools.reports import write_csv


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


@dataclass(frozen=True)
class Source:
    path: Path
    identity: str


def collect_sources(src: str | Path, role: str | None = None, strict: bool = True) -> list[Source]:
    """A folder of identity folders, or a CSV ``filename,identity[,role]`` (paths relative to it). Names that
    will be enrolled follow the name rule (``strict``); probes' labels are only compared, never stored."""
    name_of = clean_name if strict else str
    src = Path(src)
    if src.is_dir():
        if role:
            raise ValueError("--role applies to a CSV source, not a folder")
        out = []
        for d in sorted(p for p in src.iterdir() if p.is_dir() and not p.name.startswith(".")):
            try:
                name = name_of(d.name)
            except BadName as exc:
                raise ValueError(f"{src}: folder {clip(d.name)!r}: {exc}") from None
            out += [Source(f, name) for f in sorted(d.rglob("*")) if f.is_file() and not f.name.startswith(".")]
        if not out:
            raise ValueError(f"{src}: no identity folders with files in them")
        if strict:
            _refuse_collisions(src, out)
        return out
    if not src.is_file():
        raise ValueError(f"{src} is neither a folder nor a CSV file")
    try:
        with src.open(newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            cols = set(reader.fieldnames or [])
            if not {"filename", "identity"} <= cols:
                raise ValueError(f"{src}: CSV needs columns filename,identity[,role]")
            if role and "role" not in cols:
                raise ValueError(f"{src}: --role {role} given but the CSV has no role column")
            out = []
            for r in reader:
                if role and (r.get("role") or "").strip() != role:
                    continue
                name, ident = (r.get("filename") or "").strip(), (r.get("identity") or "").strip()
                if not name or not ident:
                    raise ValueError(f"{src}:{reader.line_num}: row needs a filename and an identity")
                try:
                    ident = name_of(ident)
                except BadName as exc:
                    raise ValueError(f"{src}:{reader.line_num}: {exc}") from None
                out.append(Source(src.parent / name, ident))
    except UnicodeDecodeError:
        raise ValueError(f"{src}: not a UTF-8 CSV file") from None
    if not out:
        raise ValueError(f"{src}: no rows" + (f" with role {role!r}" if role else ""))
    if strict:
        _refuse_collisions(src, out)
    return out


def _refuse_collisions(src: Path, sources: list[Source]) -> None:
    """Two spellings of one name (``JOE_BIDEN`` and ``joe_biden``) would enrol one person twice."""
    if clash := collisions(dict.fromkeys(s.identity for s in sources)):
        a, b = clash[0]
        raise ValueError(f"{src}: identity names {clip(a)!r} and {clip(b)!r} are too alike (the same after case "
                         "folding and look-alike characters): use one name for one person")


def holdout(sources: list[Source], n: int, seed: int) -> tuple[list[Source], list[str]]:
    """Withhold ``n`` identities chosen by ``seed`` (open-set evaluation: they become strangers)."""
    import random

    names = sorted({s.identity for s in sources})
    if not 0 < n < len(names):
        raise ValueError(f"--holdout must be between 1 and {len(names) - 1}, got {n}")
    out = sorted(random.Random(seed).sample(names, n))
    gone = set(out)
    return [s for s in sources if s.identity not in gone], out


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
        write_csv(report_dir / "skipped.csv", ["path", "identity", "reason"], skipped)
        write_csv(report_dir / "mislabelled.csv", ["path", "identity", "nearest", "own_score", "nearest_score"],
                   mislabelled)
        write_csv(report_dir / "close_identities.csv", ["a", "b", "similarity"], close)
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
