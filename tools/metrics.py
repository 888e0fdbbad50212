"""ROC plots of verification runs (the metrics themselves are pipeline/score_metrics.py)."""

from __future__ import annotations

import numpy as np
from sklearn.metrics import roc_curve

from tools.reports import save_figure


def save_roc_png(path: str, curves: dict[str, tuple[np.ndarray, np.ndarray]], title: str) -> None:
    """Plot ROC curves (log FAR axis) to ``path``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4.5))
    for label, (scores, same) in curves.items():
        fpr, tpr, _ = roc_curve(same.astype(int), scores)
        ax.plot(np.maximum(fpr, 1e-4), tpr, label=label)
    ax.set_xscale("log")
    ax.set_xlabel("false accept rate")
    ax.set_ylabel("true accept rate")
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    ax.legend(loc="lower right")
    fig.tight_layout()
    save_figure(fig, path, dpi=120)
    plt.close(fig)
