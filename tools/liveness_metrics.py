"""Presentation attack detection metrics as ISO/IEC 30107-3 names them, over live scores (higher = more live).

APCER: share of attack presentations accepted as live (score >= threshold), per attack kind (the standard's
"PAI species"), with the worst kind as the system's figure. BPCER: share of bona fide (live) presentations
refused (score < threshold).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sklearn.metrics import roc_auc_score, roc_curve

from tools.reports import save_figure


@dataclass(frozen=True)
class ErrorRate:
    """``errors`` of ``total`` presentations misclassified; the rate is None when there were none to judge."""

    errors: int
    total: int

    @property
    def rate(self) -> float | None:
        return self.errors / self.total if self.total else None

    def as_dict(self) -> dict[str, float | int | None]:
        rate = self.rate
        return {"rate": None if rate is None else round(rate, 5), "errors": self.errors, "n": self.total}


def apcer(attack_scores: np.ndarray, threshold: float) -> ErrorRate:
    """Attacks accepted as live."""
    s = np.asarray(attack_scores, dtype=np.float64)
    return ErrorRate(int(np.sum(s >= threshold)), int(s.size))


def bpcer(live_scores: np.ndarray, threshold: float) -> ErrorRate:
    """Live presentations refused."""
    s = np.asarray(live_scores, dtype=np.float64)
    return ErrorRate(int(np.sum(s < threshold)), int(s.size))


def threshold_for_apcer(attack_scores: np.ndarray, target: float, all_scores: np.ndarray | None = None) -> float:
    """The lowest threshold (fewest live refused) whose APCER on ``attack_scores`` is at most ``target``.

    The value sits halfway between the highest attack score that must be refused and the next higher score
    of any presentation (``all_scores``), so a rounded copy of it classifies these presentations the same."""
    if not 0.0 <= target < 1.0:
        raise ValueError(f"target APCER must be in [0, 1), got {target}")
    s = np.sort(np.asarray(attack_scores, dtype=np.float64))[::-1]
    if s.size == 0:
        raise ValueError("a threshold for a target APCER needs attack presentations")
    allowed = int(np.floor(target * s.size + 1e-9))  # attacks that may still be accepted
    if allowed >= s.size:
        return 0.0
    refuse = s[allowed]  # this attack and every lower one must fall below the threshold
    pool = s if all_scores is None else np.concatenate([s, np.asarray(all_scores, dtype=np.float64)])
    above = pool[pool > refuse]
    upper = float(above.min()) if above.size else 1.0
    if upper <= refuse:  # refuse == 1.0: nothing can sit above it
        return float(np.nextafter(refuse, np.inf))
    return (refuse + upper) / 2.0


def rates_by_kind(scores: np.ndarray, live: np.ndarray, kinds: list[str], threshold: float) -> dict[str, dict]:
    """APCER for each attack kind and BPCER for each live kind, keyed ``attack/KIND`` and ``live/KIND``."""
    out: dict[str, dict] = {}
    for kind in sorted(set(kinds)):
        mask = np.array([k == kind for k in kinds], dtype=bool)
        if (mask & ~live).any():
            out[f"attack/{kind}"] = {"apcer": apcer(scores[mask & ~live], threshold).as_dict()}
        if (mask & live).any():
            out[f"live/{kind}"] = {"bpcer": bpcer(scores[mask & live], threshold).as_dict()}
    return out


def operating_point(scores: np.ndarray, live: np.ndarray, kinds: list[str], threshold: float) -> dict:
    """APCER (pooled and worst kind), BPCER and the per-kind rates at ``threshold``."""
    scores, live = np.asarray(scores, dtype=np.float64), np.asarray(live, dtype=bool)
    per_kind = rates_by_kind(scores, live, kinds, threshold)
    attack_rates = {k: v["apcer"]["rate"] for k, v in per_kind.items() if k.startswith("attack/")}
    worst = max(attack_rates, key=lambda k: attack_rates[k]) if attack_rates else None
    return {"threshold": round(threshold, 6), "apcer": apcer(scores[~live], threshold).as_dict(),
            "bpcer": bpcer(scores[live], threshold).as_dict(),
            "apcer_worst_kind": None if worst is None else {"kind": worst, "rate": attack_rates[worst]},
            "per_kind": per_kind}


def roc_summary(scores: np.ndarray, live: np.ndarray) -> dict[str, float] | None:
    """AUC and the equal error rate (APCER = BPCER); None unless both live and attack presentations exist."""
    y = np.asarray(live, dtype=int)
    if y.size == 0 or y.min() == y.max():
        return None
    fpr, tpr, _ = roc_curve(y, scores)
    fnr = 1.0 - tpr
    i = int(np.nanargmin(np.abs(fnr - fpr)))
    return {"auc": round(float(roc_auc_score(y, scores)), 5), "eer": round(float((fpr[i] + fnr[i]) / 2.0), 5)}


def save_pad_roc_png(path: str, curves: dict[str, tuple[np.ndarray, np.ndarray]], points: dict[str, tuple[float,
                     float]], title: str) -> None:
    """ROC with APCER across and 1 - BPCER (live accepted) up, one curve per attack set, plus marked operating
    points; written 0600 like every report."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4.8))
    for label, (scores, live) in curves.items():
        fpr, tpr, _ = roc_curve(np.asarray(live, dtype=int), scores)
        ax.plot(fpr, tpr, label=label, drawstyle="steps-post")
    for label, (a, b) in points.items():
        ax.plot([a], [1.0 - b], "o", label=label)
    ax.set_xlim(-0.01, 1.0)
    ax.set_ylim(0.0, 1.01)
    ax.set_xlabel("APCER (attacks accepted as live)")
    ax.set_ylabel("1 - BPCER (live people accepted)")
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    save_figure(fig, path, dpi=120)
    plt.close(fig)
