"""``facestream eval verify``: pair verification accuracy of a detector + embedder on a pairs CSV."""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.gallery.stills import FaceResult, StillEmbedder
from pipeline.score_metrics import accuracy_at, best_threshold, kfold_accuracy, roc_figures
from tools.metrics import save_roc_png


@dataclass(frozen=True)
class Pair:
    a: Path
    b: Path
    same: bool


def read_pairs(path: str | Path) -> list[Pair]:
    """Read ``img_a,img_b,same`` rows; image paths are relative to the CSV's folder."""
    path = Path(path)
    try:
        with path.open(newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            missing = {"img_a", "img_b", "same"} - set(reader.fieldnames or [])
            if missing:
                raise ValueError(f"{path}: pairs CSV lacks column(s) {', '.join(sorted(missing))}")
            pairs = []
            for line, row in enumerate(reader, start=2):
                same = (row["same"] or "").strip().lower()
                if same not in ("0", "1", "true", "false"):
                    raise ValueError(f"{path}:{line}: 'same' must be 0 or 1, got {row['same']!r}")
                pairs.append(Pair(path.parent / row["img_a"], path.parent / row["img_b"], same in ("1", "true")))
    except OSError as exc:
        raise ValueError(f"cannot read pairs file {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise ValueError(f"{path}: not a UTF-8 CSV file") from None
    if not pairs:
        raise ValueError(f"{path}: no pairs")
    return pairs


def pair_scores(pairs: list[Pair], results: dict[Path, FaceResult]) -> np.ndarray:
    """Cosine similarity per pair; a pair with a failed image scores -1 (rejected)."""
    out = np.empty(len(pairs), dtype=np.float64)
    for i, p in enumerate(pairs):
        ra, rb = results[p.a], results[p.b]
        out[i] = float(ra.vec @ rb.vec) if ra.ok and rb.ok else -1.0
    return out


def run_verify(engine: StillEmbedder, pairs_csv: str, tune_csv: str | None = None,
               roc_png: str | None = None, far_target: float = 1e-3) -> dict[str, float | int | str]:
    pairs = read_pairs(pairs_csv)
    tune = read_pairs(tune_csv) if tune_csv else []
    images = sorted({p.a for p in pairs + tune} | {p.b for p in pairs + tune})
    results = dict(zip(images, engine.embed_files(images, progress="embedding"), strict=True))
    scores = pair_scores(pairs, results)
    same = np.array([p.same for p in pairs])
    if tune:
        tscores = pair_scores(tune, results)
        tsame = np.array([p.same for p in tune])
        threshold = best_threshold(tscores, tsame)
        accuracy = accuracy_at(scores, same, threshold)
        tuned_on = str(tune_csv)
    else:
        accuracy, threshold = kfold_accuracy(scores, same)
        tuned_on = "10-fold"
    roc = roc_figures(scores, same, far_target)
    used = {p.a for p in pairs} | {p.b for p in pairs}
    failed = sorted(str(p) for p in used if not results[p].ok)
    if roc_png:
        curves = {"test": (scores, same)}
        if tune:
            curves["tune"] = (tscores, tsame)
        save_roc_png(roc_png, curves, f"{engine.embedder.model_id} on {Path(pairs_csv).name}")
    return {
        "accuracy": round(accuracy, 5),
        "auc": round(roc["auc"], 5),
        "eer": round(roc["eer"], 5),
        "tar_at_far_1e-3": round(roc["tar_at_far"], 5),
        "threshold": round(threshold, 5),
        "failed_detections": len(failed),
        "pairs": len(pairs),
        "images": len(used),
        "tuned_on": tuned_on,
        "model": engine.embedder.model_id,
        "runtime": engine.embedder.runner.runtime,
        "precision": engine.embedder.precision,
        "provider": engine.embedder.provider,
        "embedded": engine.computed,
        "from_cache": engine.cached,
        "failed_images": failed[:20],
    }
