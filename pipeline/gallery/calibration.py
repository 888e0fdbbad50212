"""Calibration: the threshold and top-1 - top-2 margin of a gallery for a target FAR, stored with it.

Genuine trials: each kept template against its own identity's centroid computed without it
(leave-one-out), competing with every other centroid. Impostor trials: each template against the
other identities only, as if its person were not enrolled: exactly the open-set situation of a
stranger at the door. The (threshold, margin) pair with the highest TAR at FAR <= target wins.
"""

from __future__ import annotations

import numpy as np

from pipeline.gallery.operating_point import prior_point
from pipeline.gallery.store import Gallery, Identity

MARGINS = np.round(np.arange(0.0, 0.155, 0.005), 3)
# Leave-identity-out calibration needs this many impostor trials per allowed false accept...
MIN_ALLOWED_FALSE_ACCEPTS = 2
# ...and this many genuine trials; smaller galleries get the size-aware prior (pipeline/gallery/operating_point.py).
MIN_GENUINE_TRIALS = 20


def trial_scores(people: list[Identity]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Genuine (top-1, top-2) scores with whether the own identity is top-1; impostor (top-1, top-2)."""
    if len(people) < 2:
        raise ValueError("calibration needs at least 2 identities")
    cents = np.stack([p.centroid for p in people])
    gen_s1, gen_s2, gen_ok, imp = [], [], [], []
    for i, p in enumerate(people):
        kept = p.templates[~p.outlier]
        if not len(kept):
            continue
        scores = kept @ cents.T
        others = np.delete(scores, i, axis=1)
        top2 = -np.sort(-others, axis=1)[:, :2]
        if top2.shape[1] == 1:
            top2 = np.hstack([top2, np.full((len(top2), 1), -1.0)])
        imp.append(top2)
        if len(kept) < 2:
            continue
        total = kept.sum(0)
        for t in range(len(kept)):
            loo = total - kept[t]
            loo /= np.linalg.norm(loo)
            own = float(kept[t] @ loo)
            best_other = float(top2[t, 0])
            if own >= best_other:
                gen_s1.append(own)
                gen_s2.append(best_other)
                gen_ok.append(True)
            else:
                gen_s1.append(best_other)
                gen_s2.append(max(own, float(top2[t, 1])))
                gen_ok.append(False)
    if not gen_s1:
        raise ValueError("calibration needs at least one identity with 2 or more templates")
    genuine = np.stack([gen_s1, gen_s2]).T
    return genuine, np.asarray(gen_ok), np.vstack(imp)


def choose_operating_point(genuine: np.ndarray, gen_ok: np.ndarray, impostor: np.ndarray,
                           target_far: float) -> dict[str, float]:
    """Grid over margins; for each, the lowest threshold meeting the FAR target; keep the best TAR."""
    best: dict[str, float] | None = None
    n_imp = len(impostor)
    allowed = int(np.floor(target_far * n_imp + 1e-9))
    for m in MARGINS:
        imp_pass = impostor[:, 0][(impostor[:, 0] - impostor[:, 1]) >= m]
        # the threshold must sit above all but `allowed` passing impostors
        t = float(np.sort(imp_pass)[::-1][allowed]) + 1e-06 if len(imp_pass) > allowed else -1.0
        accepted = gen_ok & (genuine[:, 0] >= t) & ((genuine[:, 0] - genuine[:, 1]) >= m)
        tar = float(accepted.mean())
        far = float(((impostor[:, 0] >= t) & ((impostor[:, 0] - impostor[:, 1]) >= m)).mean())
        if best is None or tar > best["tar"] + 1e-12:
            best = {"threshold": round(t, 6), "margin": float(m), "tar": tar, "far": far}
    assert best is not None
    return best


def eer_and_tar(genuine_scores: np.ndarray, impostor_scores: np.ndarray, target_far: float) -> tuple[float, float]:
    from pipeline.score_metrics import roc_figures

    scores = np.concatenate([genuine_scores, impostor_scores])
    same = np.concatenate([np.ones(len(genuine_scores)), np.zeros(len(impostor_scores))])
    roc = roc_figures(scores, same, target_far)
    return roc["eer"], roc["tar_at_far"]


def calibrate(people: list[Identity], target_far: float = 1e-3) -> dict:
    if not 0.0 < target_far < 1.0:
        raise ValueError(f"target FAR must be in (0, 1), got {target_far}")
    genuine, gen_ok, impostor = trial_scores(people)
    point = choose_operating_point(genuine, gen_ok, impostor, target_far)
    # Verification-style figures: own (leave-one-out) scores vs the best impostor score per trial.
    own = np.where(gen_ok, genuine[:, 0], genuine[:, 1])
    eer, tar = eer_and_tar(own, impostor[:, 0], target_far)
    return {
        "threshold": point["threshold"], "margin": point["margin"], "target_far": target_far,
        "tar": round(point["tar"], 5), "far": round(point["far"], 5), "eer": round(eer, 5),
        "tar_at_target_far_threshold_only": round(tar, 5), "genuine_trials": len(genuine),
        "impostor_trials": len(impostor), "identities": len(people),
    }


def calibrate_gallery(people: list[Identity], model_id: str, target_far: float) -> dict:
    """Leave-identity-out calibration when the gallery has enough trials for ``target_far``, else the
    size-aware prior; the result says which (``method``) and why."""
    if not 0.0 < target_far < 1.0:
        raise ValueError(f"target FAR must be in (0, 1), got {target_far}")
    n_imp = n_gen = 0
    if len(people) >= 2:
        try:
            genuine, _, impostor = trial_scores(people)
            n_imp, n_gen = len(impostor), len(genuine)
        except ValueError:
            pass
    if n_imp * target_far >= MIN_ALLOWED_FALSE_ACCEPTS and n_gen >= MIN_GENUINE_TRIALS:
        figures = calibrate(people, target_far)
        figures["method"] = f"leave-identity-out at target FAR {target_far:g}, {n_imp} impostor trials"
        return figures
    point = prior_point(model_id, people, target_far)
    return {"threshold": point.threshold, "margin": point.margin, "target_far": target_far,
            "method": f"{point.source} (too small to calibrate: {n_imp} impostor and {n_gen} genuine trials, "
                      f"needs {int(np.ceil(MIN_ALLOWED_FALSE_ACCEPTS / target_far))} and {MIN_GENUINE_TRIALS})",
            "identities": len(people), "impostor_trials": n_imp, "genuine_trials": n_gen}


def recalibrate(gallery: Gallery, target_far: float, bump: bool = False) -> dict:
    """Calibrate ``gallery`` as it is now and store the figures (every write leaves it calibrated); the
    version is bumped only when asked (a write that just happened already bumped it)."""
    people = gallery.identities()
    if not people:
        gallery.set_calibration(None, 0.0, None, bump)
        return {"threshold": None, "margin": 0.0, "method": "empty gallery"}
    figures = full_calibration(people, gallery.negatives(), gallery.model_id, target_far)
    gallery.set_calibration(figures["threshold"], figures["margin"], figures, bump)
    return figures


def full_calibration(people: list[Identity], negatives: dict[str, np.ndarray], model_id: str,
                     target_far: float) -> dict:
    """The gallery's calibration with each identity's own threshold raised by its negatives (``per_identity``)."""
    from pipeline.gallery.negatives import with_own_thresholds

    figures = with_own_thresholds(calibrate_gallery(people, model_id, target_far), people, negatives)
    assert figures is not None
    return figures
