"""The threshold and margin a gallery is matched at, and where they came from.

A stranger is compared with every enrolled identity, so with N identities the chance that one of them
clears the threshold is about N times the per-comparison false accept rate. A gallery too small for
leave-identity-out calibration therefore gets the threshold at which the model's measured impostor tail
(:attr:`models.registry.EmbedderSpec.impostor_tail`, photo against photo) passes ``target_far / N``,
raised by the gallery's own centroid shift: a centroid averages several photos, and impostors score
higher against an average than against a single photo (measured inside the gallery, median against
median). On LFW this gave 0.3-0.5 % of 1,500 strangers accepted at a 1 % target for galleries of 4 to
128 identities (README).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from models.registry import get_spec, split_model_id
from pipeline.gallery.store import Gallery, Identity

SVM_THRESHOLD = 0.5  # SVM scores are calibrated probabilities; the margin rule still applies


@dataclass(frozen=True)
class OperatingPoint:
    """Threshold and top-1 − top-2 margin, with a one-line ``source`` users are shown."""

    threshold: float
    margin: float
    source: str
    own: dict[str, float] = field(default_factory=dict)  # identities' own thresholds ("not this person")

    def describe(self) -> str:
        raised = f"; {len(self.own)} identit{'y' if len(self.own) == 1 else 'ies'} with an own threshold" \
            if self.own else ""
        return f"threshold {self.threshold:.4f}, margin {self.margin:.3f} ({self.source}){raised}"


def tail_threshold(model_id: str, per_comparison_far: float) -> float:
    """Cosine threshold at which the model's impostor tail passes ``per_comparison_far`` (log-linear
    between measured points, extended along the last two points beyond them)."""
    if not 0.0 < per_comparison_far < 1.0:
        raise ValueError(f"per-comparison FAR must be in (0, 1), got {per_comparison_far}")
    tail = get_spec(split_model_id(model_id)[0]).impostor_tail
    if not tail:
        raise ValueError(f"model {model_id} has no measured impostor tail: calibrate its gallery with enough "
                         "identities, or set pipeline.threshold")
    xs = [math.log10(f) for f, _ in tail]  # descending FAR
    ys = [t for _, t in tail]
    x = math.log10(per_comparison_far)
    if x >= xs[0]:
        return ys[0]
    for (x0, y0), (x1, y1) in zip(zip(xs, ys, strict=True), zip(xs[1:], ys[1:], strict=True), strict=False):
        if x1 <= x <= x0:
            return y0 + (y1 - y0) * (x - x0) / (x1 - x0)
    (x0, y0), (x1, y1) = (xs[-2], ys[-2]), (xs[-1], ys[-1])
    return min(0.999, y1 + (y1 - y0) * (x - x1) / (x1 - x0))


def centroid_shift(people: list[Identity]) -> float:
    """How much higher impostors score against centroids than against single photos, in this gallery:
    median(template · other centroids) − median(template · other identities' templates); 0 when the
    gallery has fewer than two identities with templates."""
    people = [p for p in people if len(p.templates)]
    if len(people) < 2:
        return 0.0
    templates = np.vstack([p.templates for p in people]).astype(np.float64)
    label = np.concatenate([np.full(len(p.templates), i) for i, p in enumerate(people)])
    cents = np.stack([p.centroid for p in people]).astype(np.float64)
    to_centroids = (templates @ cents.T)[label[:, None] != np.arange(len(people))[None, :]]
    to_templates = (templates @ templates.T)[label[:, None] != label[None, :]]
    return max(0.0, float(np.median(to_centroids) - np.median(to_templates)))


def prior_point(model_id: str, people: list[Identity], target_far: float) -> OperatingPoint:
    """The size-aware threshold of a gallery too small to calibrate (module docstring)."""
    n = max(1, len(people))
    shift = centroid_shift(people)
    t = min(0.999, tail_threshold(model_id, target_far / n) + shift)
    return OperatingPoint(round(t, 6), 0.0, f"model impostor tail for {n} identit{'y' if n == 1 else 'ies'} at "
                          f"target FAR {target_far:g}, centroid shift {shift:.4f}")


def gallery_point(gallery: Gallery, people: list[Identity], matcher: str, target_far: float,
                  threshold: float | None = None, margin: float | None = None) -> OperatingPoint:
    """The operating point a command matches ``gallery`` at: overrides, else the stored calibration,
    else (a gallery written before calibration was automatic) the size-aware prior. The identities' own
    thresholds (cosines raised by rejected faces) hold with every centroid operating point, a user's too."""
    from pipeline.gallery.negatives import per_identity

    own = per_identity(gallery.calibration) if matcher != "svm" else {}
    if threshold is not None:
        m = margin if margin is not None else gallery.margin
        return OperatingPoint(float(threshold), float(m), "set by the user", own)
    if matcher == "svm":
        return OperatingPoint(SVM_THRESHOLD, float(margin if margin is not None else 0.0),
                              "SVM probability threshold")
    cal = gallery.calibration
    if gallery.threshold is not None and cal is not None:
        m = margin if margin is not None else gallery.margin
        how = cal.get("method", f"leave-identity-out at target FAR {cal.get('target_far')}")
        src = f"gallery calibration: {how}"
        return OperatingPoint(float(gallery.threshold), float(m), src + ("" if margin is None else ", margin set"),
                              own)
    point = prior_point(gallery.model_id, people, target_far)
    m = point.margin if margin is None else float(margin)
    return OperatingPoint(point.threshold, m, "uncalibrated gallery: " + point.source, own)
