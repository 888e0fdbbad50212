"""``facestream gallery calibrate --roc-png``: the gallery's leave-one-out ROC as a plot (the calibration
itself is pipeline/gallery/calibration.py)."""

from __future__ import annotations

import numpy as np

from pipeline.gallery.calibration import trial_scores
from pipeline.gallery.store import Identity
from tools.reports import save_figure


def save_calibration_png(path: str, people: list[Identity]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.metrics import roc_curve

    genuine, gen_ok, impostor = trial_scores(people)
    own = np.where(gen_ok, genuine[:, 0], genuine[:, 1])
    scores = np.concatenate([own, impostor[:, 0]])
    same = np.concatenate([np.ones(len(own)), np.zeros(len(impostor))])
    fpr, tpr, _ = roc_curve(same, scores)
    fig, ax = plt.subplots(figsize=(6, 4.5))
    ax.plot(np.maximum(fpr, 1e-4), tpr)
    ax.set_xscale("log")
    ax.set_xlabel("false accept rate (stranger matched)")
    ax.set_ylabel("true accept rate")
    ax.set_title("gallery ROC (leave-one-out)")
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    save_figure(fig, path, dpi=120)
    plt.close(fig)
