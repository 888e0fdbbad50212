"""``facestream eval liveness``: APCER/BPCER of the liveness models on a labelled set of images and videos.

Per item the live score of the main (largest) face: for an image, its one face; for a video, the mean
over N frames sampled evenly across the clip (frames without a face are skipped). Items in which no
face is found at all are counted apart, per label, and listed: a door never sees their score, so they
are neither accepted nor refused by liveness.

The threshold is not tuned on the set being reported alone: the published operating point (0.5) is
reported on everything, and the threshold for a target APCER is reported both in-sample and tuned on a
stratified half (fixed seed) with the rates measured on the other half.
"""

from __future__ import annotations

import csv
import time
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from models.detector import MTCNNDetector
from pipeline.images import IMAGE_SUFFIXES, ImageError, load_rgb
from pipeline.liveness import LivenessScorer
from tools.liveness_metrics import ErrorRate, operating_point, roc_summary, save_pad_roc_png, threshold_for_apcer

VIDEO_SUFFIXES = frozenset({".mp4", ".mov", ".webm", ".avi", ".mkv", ".m4v"})
LABELS = {"live": True, "attack": False}
SPLIT_SEED = 0
NO_FACE = "no face detected"


@dataclass(frozen=True)
class LabelledItem:
    """One row of the labels CSV, its file resolved against the CSV's folder."""

    name: str
    path: Path
    live: bool
    kind: str

    @property
    def video(self) -> bool:
        return self.path.suffix.lower() in VIDEO_SUFFIXES

    @property
    def label(self) -> str:
        return "live" if self.live else "attack"


@dataclass(frozen=True)
class ItemScore:
    """The live score of an item's main face (None when no face was found), and how many faces gave it."""

    item: LabelledItem
    score: float | None
    faces: int
    frames: int
    reason: str = ""


def read_labels(path: str | Path) -> list[LabelledItem]:
    """Read ``filename,label[,kind]`` rows (label ``live`` or ``attack``); a bad row is a one-line ValueError."""
    path = Path(path)
    items: list[LabelledItem] = []
    try:
        with path.open(newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            missing = {"filename", "label"} - set(reader.fieldnames or [])
            if missing:
                raise ValueError(f"{path}: labels CSV lacks column(s) {', '.join(sorted(missing))} "
                                 "(needs filename,label and optionally kind)")
            for line, row in enumerate(reader, start=2):
                name = (row["filename"] or "").strip()
                label = (row["label"] or "").strip().lower()
                if label not in LABELS:
                    raise ValueError(f"{path}:{line}: label must be live or attack, got {row['label']!r}")
                file = path.parent / name
                if not name or not file.is_file():
                    raise ValueError(f"{path}:{line}: file not found: {file}")
                suffix = file.suffix.lower()
                if suffix not in IMAGE_SUFFIXES and suffix not in VIDEO_SUFFIXES:
                    raise ValueError(f"{path}:{line}: {name} is neither an image nor a video by its suffix")
                kind = (row.get("kind") or "").strip() or ("video" if suffix in VIDEO_SUFFIXES else "image")
                items.append(LabelledItem(name, file, LABELS[label], kind))
    except OSError as exc:
        raise ValueError(f"cannot read labels file {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise ValueError(f"{path}: not a UTF-8 CSV file") from None
    if not items:
        raise ValueError(f"{path}: no labelled items")
    return items


def sample_frames(video: Path, n: int) -> list[np.ndarray]:
    """``n`` RGB frames spread evenly over the clip (all of them when it has fewer). Frames are counted by
    decoding: containers' frame counts are wrong for some files (a WebM said 350 and held 214)."""
    cap = cv2.VideoCapture(str(video), cv2.CAP_FFMPEG)
    if not cap.isOpened():
        raise ValueError(f"{video}: not a video, or a format FFmpeg cannot open")
    total = 0
    while cap.grab():
        total += 1
    cap.release()
    if total == 0:
        raise ValueError(f"{video}: no decodable frame")
    wanted = set(np.unique(np.linspace(0, total - 1, min(n, total)).round().astype(int)).tolist())
    cap = cv2.VideoCapture(str(video), cv2.CAP_FFMPEG)
    frames, i = [], 0
    try:
        while len(frames) < len(wanted) and cap.grab():
            if i in wanted:
                ok, bgr = cap.retrieve()
                if ok and bgr is not None:
                    frames.append(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
            i += 1
    finally:
        cap.release()
    return frames


class _Timer:
    def __init__(self) -> None:
        self.seconds, self.faces = 0.0, 0

    def score(self, scorer: LivenessScorer, faces: list) -> np.ndarray:
        t0 = time.perf_counter()
        out = scorer.score_many(faces)
        self.seconds += time.perf_counter() - t0
        self.faces += len(faces)
        return out


def score_item(item: LabelledItem, detector: MTCNNDetector, scorer: LivenessScorer, video_frames: int,
               timer: _Timer) -> ItemScore:
    """The live score of the item's main face, or the reason there is none."""
    if item.video:
        frames = sample_frames(item.path, video_frames)
    else:
        try:
            frames = [load_rgb(item.path)]
        except ImageError as exc:
            return ItemScore(item, None, 0, 0, f"unreadable image: {exc}")
    faces = []
    for frame in frames:
        dets = detector.detect([frame])[0]
        if dets:  # sorted largest first
            faces.append((frame, dets[0].box))
    if not faces:
        return ItemScore(item, None, 0, len(frames), NO_FACE)
    return ItemScore(item, float(np.mean(timer.score(scorer, faces))), len(faces), len(frames))


def stratified_halves(results: list[ItemScore], seed: int = SPLIT_SEED) -> tuple[list[int], list[int]]:
    """Indices of a tune half and a test half, each (label, kind) group split in two at random."""
    rng = np.random.default_rng(seed)
    groups: dict[tuple[bool, str], list[int]] = {}
    for i, r in enumerate(results):
        groups.setdefault((r.item.live, r.item.kind), []).append(i)
    tune, test = [], []
    for key in sorted(groups):
        idx = rng.permutation(groups[key]).tolist()
        half = len(idx) // 2
        tune += idx[:half]
        test += idx[half:]
    return sorted(tune), sorted(test)


def _arrays(results: list[ItemScore]) -> tuple[np.ndarray, np.ndarray, list[str]]:
    return (np.array([r.score for r in results], dtype=np.float64), np.array([r.item.live for r in results],
            dtype=bool), [r.item.kind for r in results])


def evaluate(scored: list[ItemScore], threshold: float, target_apcer: float) -> dict:
    """Rates at ``threshold``, the threshold for ``target_apcer`` (in-sample and on a split), ROC figures."""
    scores, live, kinds = _arrays(scored)
    out: dict = {"at_threshold": operating_point(scores, live, kinds, threshold), "roc": roc_summary(scores, live)}
    if not (~live).any():
        return out
    t_all = threshold_for_apcer(scores[~live], target_apcer, scores)
    out["at_target_apcer"] = {"tuned_on": "all items (in-sample)",
                              **operating_point(scores, live, kinds, t_all)}
    tune, test = stratified_halves(scored)
    tune_live = live[tune]
    if (~tune_live).any() and test:
        t_half = threshold_for_apcer(scores[tune][~tune_live], target_apcer, scores[tune])
        s, y, k = scores[test], live[test], [kinds[i] for i in test]
        out["split"] = {"seed": SPLIT_SEED, "tune_items": len(tune), "test_items": len(test),
                        "tuned_threshold": round(t_half, 6),
                        "test_at_tuned_threshold": operating_point(s, y, k, t_half),
                        "test_at_threshold": operating_point(s, y, k, threshold)}
    return out


def run_eval_liveness(items: list[LabelledItem], detector: MTCNNDetector, scorer: LivenessScorer,
                      video_frames: int = 10, threshold: float | None = None, target_apcer: float = 0.10,
                      roc_png: str | None = None, progress: bool = True) -> dict:
    """Score every item and report APCER/BPCER; ``threshold`` None means the scorer's (published) one."""
    if video_frames < 1:
        raise ValueError(f"--video-frames must be >= 1, got {video_frames}")
    if not 0.0 < target_apcer < 1.0:
        raise ValueError(f"--target-apcer must be between 0 and 1, got {target_apcer}")
    given = threshold is not None
    threshold = scorer.threshold if threshold is None else threshold
    if not 0.0 <= threshold <= 1.0:
        raise ValueError(f"--threshold must be in [0, 1], got {threshold}")
    t0 = time.perf_counter()
    timer = _Timer()
    results = []
    from tqdm import tqdm

    for item in tqdm(items, desc="liveness", unit="item", disable=not progress, leave=False):
        results.append(score_item(item, detector, scorer, video_frames, timer))
    scored = [r for r in results if r.score is not None]
    unscored = [r for r in results if r.score is None]
    if roc_png:
        _roc(roc_png, scored, threshold, scorer.model_id)
    report = {
        "labels_items": len(results), "scored": len(scored),
        "unscored": {"live": sum(r.item.live for r in unscored), "attack": sum(not r.item.live for r in unscored),
                     "files": [{"file": r.item.name, "label": r.item.label, "reason": r.reason} for r in unscored]},
        "threshold": threshold,
        "threshold_source": "--threshold" if given else "published operating point (mean live softmax >= 0.5)",
        "target_apcer": target_apcer,
        **evaluate(scored, threshold, target_apcer),
        "no_face_refused_at_threshold": _no_face_refused(results, threshold),
        "model": scorer.model_id, "runtime": scorer.runtime, "video_frames": video_frames,
        "faces_scored": timer.faces,
        "liveness_ms_per_face": round(1000.0 * timer.seconds / timer.faces, 3) if timer.faces else None,
        "seconds": round(time.perf_counter() - t0, 1),
        "scores": [{"file": r.item.name, "label": r.item.label, "kind": r.item.kind, "score": r.score,
                    "faces": r.faces, "frames": r.frames} for r in results],
    }
    return report


def _no_face_refused(results: list[ItemScore], threshold: float) -> dict:
    """APCER and BPCER over all items with the unscored ones counted as refused, as a door sees them (it cannot
    open for a face it never found): ISO/IEC 30107-3 keeps such failures to acquire apart, this shows both."""
    attacks = [r for r in results if not r.item.live]
    lives = [r for r in results if r.item.live]
    accepted = sum(r.score is not None and r.score >= threshold for r in attacks)
    refused = sum(r.score is None or r.score < threshold for r in lives)
    return {"apcer": ErrorRate(accepted, len(attacks)).as_dict(), "bpcer": ErrorRate(refused, len(lives)).as_dict()}


def _roc(path: str, scored: list[ItemScore], threshold: float, title: str) -> None:
    scores, live, kinds = _arrays(scored)
    if live.all() or not live.any():
        raise ValueError("--roc-png needs both live and attack items with a detected face")
    curves = {"all attacks": (scores, live)}
    for kind in sorted({k for k, y in zip(kinds, live, strict=True) if not y}):
        mask = live | np.array([k == kind for k in kinds])
        curves[f"attack/{kind}"] = (scores[mask], live[mask])
    point = operating_point(scores, live, kinds, threshold)
    points = {f"threshold {threshold:g}": (point["apcer"]["rate"], point["bpcer"]["rate"])}
    save_pad_roc_png(path, curves, points, f"liveness {title}")


def text_summary(report: dict) -> dict:
    """The report as flat ``key value`` lines for a terminal (the per-item scores only in --json)."""
    out: dict = {"items": f"{report['labels_items']} ({report['scored']} scored; no face or unreadable: "
                          f"{report['unscored']['live']} live, {report['unscored']['attack']} attack)"}

    def rate(d: dict, key: str) -> str:
        r = d[key]
        return "-" if r["rate"] is None else f"{r['rate']:.4f} ({r['errors']}/{r['n']})"

    def point(prefix: str, p: dict) -> None:
        out[f"{prefix}.threshold"] = p["threshold"]
        out[f"{prefix}.apcer"] = rate(p, "apcer")
        out[f"{prefix}.bpcer"] = rate(p, "bpcer")
        for kind, v in p["per_kind"].items():
            key = "apcer" if "apcer" in v else "bpcer"
            out[f"{prefix}.{key}[{kind}]"] = rate(v, key)

    point("published", report["at_threshold"])
    if "at_target_apcer" in report:
        point(f"apcer<={report['target_apcer']:g}.in_sample", report["at_target_apcer"])
    if "split" in report:
        point(f"apcer<={report['target_apcer']:g}.split_test", report["split"]["test_at_tuned_threshold"])
    nf = report["no_face_refused_at_threshold"]
    out["published.no_face_refused.apcer"] = rate(nf, "apcer")
    out["published.no_face_refused.bpcer"] = rate(nf, "bpcer")
    if report["roc"]:
        out.update({"auc": report["roc"]["auc"], "eer": report["roc"]["eer"]})
    for key in ("model", "runtime", "video_frames", "liveness_ms_per_face", "seconds"):
        out[key] = report[key]
    return out
