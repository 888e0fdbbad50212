"""``facestream eval identify``: closed-set top-1/top-5 and open-set TAR/FAR of a gallery on probes."""

from __future__ import annotations

from collections import Counter, defaultdict
from pathlib import Path

import numpy as np

from pipeline.gallery.photo_list import Source
from pipeline.gallery.stills import StillEmbedder
from pipeline.match import Matcher, decide
from tools.reports import save_figure, write_csv


def run_identify(engine: StillEmbedder, matcher: Matcher, enrolled: set[str], probes: list[Source],
                 threshold: float, margin: float, report_dir: Path | None = None,
                 own: dict[str, float] | None = None) -> dict:
    """``own``: identities' own thresholds (raised by rejected faces), applied as the daemon applies them."""
    results = engine.embed_files([p.path for p in probes], progress="probes")
    ok = [(p, r) for p, r in zip(probes, results, strict=True) if r.ok]
    failed = [(p, r) for p, r in zip(probes, results, strict=True) if not r.ok]
    vecs = np.stack([r.vec for _, r in ok]) if ok else np.zeros((0, 1), np.float32)
    cands = matcher.topk(vecs, 5) if ok else []
    rows = []
    top1 = top5 = known = unknown = tar_hits = far_hits = 0
    confusion: Counter[tuple[str, str]] = Counter()
    genuine_scores, impostor_scores = [], []
    open_set_genuine: list[float] = []
    open_set_impostors: list[float] = []
    per_id: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0])  # probes, top1 hits, accepted correctly
    for (p, _), c in zip(ok, cands, strict=True):
        d = decide(c, threshold, margin, own)
        is_known = p.identity in enrolled
        names = [n for n, _ in c]
        if is_known:
            known += 1
            per_id[p.identity][0] += 1
            hit1 = bool(names) and names[0] == p.identity
            top1 += hit1
            top5 += p.identity in names[:5]
            per_id[p.identity][1] += hit1
            if d.identity == p.identity:
                tar_hits += 1
                per_id[p.identity][2] += 1
            if names and not hit1:
                confusion[(p.identity, names[0])] += 1
            (genuine_scores if hit1 else impostor_scores).append(d.score)
            # The same probe as a stranger: its best score among the other identities (leave-own-identity-out).
            open_set_impostors.append(next((sc for n, sc in c if n != p.identity), -1.0))
            if hit1:
                open_set_genuine.append(d.score)
        else:
            unknown += 1
            far_hits += d.identity is not None
            impostor_scores.append(d.score)
            open_set_impostors.append(d.score)
        rows.append({"path": str(p.path), "actual": p.identity if is_known else f"{p.identity} (not enrolled)",
                     "predicted": d.identity or "", "score": round(d.score, 4), "margin": round(d.margin, 4),
                     "top3": ";".join(f"{n}:{s:.3f}" for n, s in c[:3])})
    result = {
        "top1": round(top1 / known, 5) if known else None,
        "top5": round(top5 / known, 5) if known else None,
        "tar": round(tar_hits / known, 5) if known else None,
        "far": round(far_hits / unknown, 5) if unknown else None,
        "probes": len(probes), "known_probes": known, "unknown_probes": unknown,
        "failed_detections": len(failed), "threshold": threshold, "margin": margin, "matcher": matcher.kind,
        **{f"tar_at_far_{far:g}": tar_at_far(open_set_genuine, known, open_set_impostors, far) for far in (1e-3, 1e-2)},
        "impostor_trials": len(open_set_impostors),
    }
    if report_dir is not None:
        report_dir.mkdir(parents=True, exist_ok=True)
        write_csv(report_dir / "predictions.csv", ["path", "actual", "predicted", "score", "margin", "top3"], rows)
        write_csv(report_dir / "per_identity.csv", ["identity", "probes", "top1", "accepted_correctly"],
                   [{"identity": k, "probes": v[0], "top1": round(v[1] / v[0], 4),
                     "accepted_correctly": round(v[2] / v[0], 4)} for k, v in sorted(per_id.items())])
        write_csv(report_dir / "failed.csv", ["path", "identity", "reason"],
                   [{"path": str(p.path), "identity": p.identity, "reason": r.reason} for p, r in failed])
        _plot_confusion(report_dir / "confusion.png", confusion)
        _plot_hist(report_dir / "scores.png", genuine_scores, impostor_scores, threshold)
    return result


def tar_at_far(genuine: list[float], known: int, impostors: list[float], far: float) -> float | None:
    """Open-set TAR at a stranger FAR, threshold only: the threshold lets at most ``far`` of the impostor
    top-1 scores through; TAR is the share of known probes named correctly at or above it. None when
    there are too few impostor trials to resolve ``far``."""
    if not known or len(impostors) * far < 1:
        return None
    ranked = np.sort(np.asarray(impostors))[::-1]
    t = float(ranked[int(np.floor(far * len(ranked) + 1e-9))]) + 1e-6
    return round(float(np.sum(np.asarray(genuine) >= t)) / known, 5)


def _plot_confusion(path: Path, confusion: Counter[tuple[str, str]], top: int = 15) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pairs = confusion.most_common(top)
    names = sorted({n for (a, b), _ in pairs for n in (a, b)})
    fig, ax = plt.subplots(figsize=(max(4, 0.5 * len(names) + 2), max(3, 0.5 * len(names) + 1.5)))
    if names:
        idx = {n: i for i, n in enumerate(names)}
        m = np.zeros((len(names), len(names)), int)
        for (a, b), n in pairs:
            m[idx[a], idx[b]] = n
        ax.imshow(m, cmap="Reds")
        ax.set_xticks(range(len(names)), names, rotation=90, fontsize=7)
        ax.set_yticks(range(len(names)), names, fontsize=7)
        ax.set_xlabel("predicted (top-1)")
        ax.set_ylabel("actual")
    else:
        ax.text(0.5, 0.5, "no confusions", ha="center", va="center")
        ax.axis("off")
    ax.set_title("most confused identities")
    fig.tight_layout()
    save_figure(fig, path, dpi=110)
    plt.close(fig)


def _plot_hist(path: Path, genuine: list[float], impostor: list[float], threshold: float) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    bins = np.linspace(min([*genuine, *impostor, 0.0]), 1.0, 60)
    ax.hist(genuine, bins=bins, alpha=0.6, label=f"genuine top-1 ({len(genuine)})")
    ax.hist(impostor, bins=bins, alpha=0.6, label=f"impostor / unknown top-1 ({len(impostor)})")
    ax.axvline(threshold, color="k", linestyle="--", label=f"threshold {threshold:.3f}")
    ax.set_xlabel("top-1 score")
    ax.legend(fontsize=8)
    fig.tight_layout()
    save_figure(fig, path, dpi=110)
    plt.close(fig)
