"""Verification metrics over similarity scores (higher = more alike): best threshold, accuracy, k-fold
accuracy, AUC / EER / TAR at a FAR. Used by gallery calibration and by ``eval verify``."""

from __future__ import annotations

import numpy as np
from sklearn.metrics import roc_auc_score, roc_curve


def best_threshold(scores: np.ndarray, same: np.ndarray) -> float:
    """Threshold maximising accuracy of ``score >= t`` (midpoint between adjacent scores)."""
    order = np.argsort(scores)
    s, y = scores[order], same[order].astype(bool)
    # Predicting "same" for indices >= k: correct = negatives below k + positives from k.
    neg_below = np.concatenate([[0], np.cumsum(~y)])
    pos_from = np.concatenate([np.cumsum(y[::-1])[::-1], [0]])
    correct = neg_below + pos_from
    k = int(np.argmax(correct))
    if k == 0:
        return float(s[0] - 1e-6)
    if k == len(s):
        return float(s[-1] + 1e-6)
    return float((s[k - 1] + s[k]) / 2.0)


def accuracy_at(scores: np.ndarray, same: np.ndarray, threshold: float) -> float:
    return float(np.mean((scores >= threshold) == same.astype(bool)))


def kfold_accuracy(scores: np.ndarray, same: np.ndarray, folds: int = 10) -> tuple[float, float]:
    """Mean accuracy with the threshold tuned on the other folds; returns (accuracy, mean threshold)."""
    n = len(scores)
    if n < folds:
        raise ValueError(f"need at least {folds} pairs for {folds}-fold tuning, got {n}")
    idx = np.arange(n)
    accs, ths = [], []
    for f in range(folds):
        test = idx % folds == f
        t = best_threshold(scores[~test], same[~test])
        accs.append(accuracy_at(scores[test], same[test], t))
        ths.append(t)
    return float(np.mean(accs)), float(np.mean(ths))


def roc_figures(scores: np.ndarray, same: np.ndarray, far_target: float = 1e-3) -> dict[str, float]:
    """AUC, EER and TAR at a FAR target (the largest TAR whose FAR does not exceed it)."""
    y = same.astype(int)
    if y.min() == y.max():
        raise ValueError("pairs must contain both same and different pairs")
    fpr, tpr, _ = roc_curve(y, scores)
    fnr = 1.0 - tpr
    i = int(np.nanargmin(np.abs(fnr - fpr)))
    eer = float((fpr[i] + fnr[i]) / 2.0)
    ok = fpr <= far_target
    tar = float(tpr[ok].max()) if ok.any() else 0.0
    return {"auc": float(roc_auc_score(y, scores)), "eer": eer, "tar_at_far": tar}
