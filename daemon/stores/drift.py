"""The drift file: each identity's recent accepted scores and refusals, as a running daemon last wrote them, so
that ``gallery info`` (which runs offline) can flag who slides towards the threshold.

A small JSON document (0600, replaced whole through a temporary file, so a reader never sees half of one):
``{"schema": 1, "model": ..., "updated": EPOCH, "threshold": T, "identities": {NAME: {"accepted": [...],
"refused": [...], "accepted_total": N, "refused_total": N}}}``. Scores only: no times, cameras or faces, so
it says how well someone matches, never when they came. Erasing or renaming a person changes it too.
Standard library only: ``gallery info`` imports neither torch nor OpenCV.
"""

from __future__ import annotations

import json
import os
import statistics
import time
from pathlib import Path
from typing import Any

from pipeline.private_files import open_private

SCHEMA = 1
NEAR_REFUSAL = 0.05  # a refusal this close below the threshold is a near miss (counted apart)


def default_location(gallery: Path | str, state_dir: Path) -> Path:
    """Beside a gallery file; in the state directory for a gallery in a database (no file to sit beside)."""
    if isinstance(gallery, Path):
        return gallery.with_name(gallery.name + ".drift.json")
    return state_dir.expanduser() / "drift.json"


def drift_location(settings: Any, gallery: Path | str | None) -> Path | None:
    """Where this run keeps the drift file; None without a gallery or with ``drift.enabled = false``."""
    d = settings.drift
    if gallery is None or not d.enabled:
        return None
    return Path(d.path) if d.path is not None else default_location(gallery, settings.paths.state_dir)


def read_drift(path: Path) -> dict[str, Any] | None:
    """The file's document; None when there is none yet; a one-line ValueError when it is not a drift file."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    try:
        doc = json.loads(text)
    except ValueError:
        raise ValueError(f"drift file {path} is not JSON (remove it: the daemon writes a new one)") from None
    if not isinstance(doc, dict) or doc.get("schema") != SCHEMA or not isinstance(doc.get("identities"), dict):
        raise ValueError(f"drift file {path} is not a facestream drift file of schema {SCHEMA}")
    return doc


def write_drift(path: Path, doc: dict[str, Any]) -> None:
    """Replace the file whole (a temporary file beside it, 0600, then a rename)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open_private(tmp, "w", encoding="utf-8") as f:
            json.dump(doc, f, separators=(",", ":"))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def new_document(model: str | None, threshold: float, identities: dict[str, Any]) -> dict[str, Any]:
    return {"schema": SCHEMA, "model": model, "updated": round(time.time(), 3), "threshold": round(threshold, 4),
            "identities": identities}


def change_identity(path: Path | None, name: str, new_name: str | None = None) -> bool:
    """Forget ``name`` (erased) or move it to ``new_name`` (renamed) in the file; True when it held them."""
    if path is None:
        return False
    doc = read_drift(path)
    if doc is None or name not in doc["identities"]:
        return False
    entry = doc["identities"].pop(name)
    if new_name is not None:
        doc["identities"][new_name] = entry
    write_drift(path, doc)
    return True


def quantile(ordered: list[float], q: float) -> float:
    """The ``q`` quantile of sorted scores, interpolated between neighbours (0.5 is the median)."""
    pos = q * (len(ordered) - 1)
    lo = int(pos)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def summarize(entry: dict[str, Any], threshold: float, near: float = 0.01, min_scores: int = 5) -> dict[str, Any]:
    """An identity's drift figures against ``threshold``: the recent median of its accepted scores and its margin
    to the threshold, its refusals (tracks that had it as top-1 and named nobody), and whether it is flagged."""
    acc = [float(s) for s in entry.get("accepted", [])]
    ref = [float(s) for s in entry.get("refused", [])]
    med = statistics.median(acc) if acc else None
    margin = None if med is None else med - threshold
    drifting = margin is not None and len(acc) >= min_scores and margin <= near
    out: dict[str, Any] = {
        "accepted": len(acc), "accepted_total": int(entry.get("accepted_total", len(acc))),
        "recent_median": None if med is None else round(med, 4),
        "recent_min": round(min(acc), 4) if acc else None,
        "margin_to_threshold": None if margin is None else round(margin, 4),
        "refusals": len(ref), "refusals_total": int(entry.get("refused_total", len(ref))),
        "refusals_near": sum(1 for s in ref if s >= threshold - NEAR_REFUSAL),
        "refusal_median": round(statistics.median(ref), 4) if ref else None,
        "threshold": round(threshold, 4), "drifting": drifting, "advice": None,
    }
    if drifting:
        assert med is not None
        out["advice"] = (f"recent median {med:.3f} over {len(acc)} accepted tracks is within {near:g} of the threshold "
                         f"{threshold:.3f}" + (f" ({out['refusals']} refused)" if ref else "")
                         + ": enrol a fresh photo or clip (gallery add NAME PHOTO, or --video CLIP)")
    return out


def flagged(doc: dict[str, Any] | None, names: list[str], threshold: float, near: float,
            min_scores: int, own: dict[str, float] | None = None
            ) -> tuple[dict[str, dict[str, Any]], list[dict[str, Any]]]:
    """(every tracked identity of the gallery's ``names`` with its figures, the flagged ones with their advice).
    ``own``: identities' own thresholds ("not this person"), which decide for them where they are higher."""
    if doc is None:
        return {}, []
    keep, own = set(names), own or {}
    figures = {n: summarize(e, max(threshold, own.get(n, threshold)), near, min_scores)
               for n, e in sorted(doc["identities"].items()) if n in keep and isinstance(e, dict)}
    flags = [{"identity": n, **{k: f[k] for k in ("recent_median", "margin_to_threshold", "accepted", "refusals")},
              "advice": f["advice"]} for n, f in figures.items() if f["drifting"]]
    return figures, flags
