"""Matchers: top-k (identity, score) for embeddings, and the accept rule (threshold + margin).

Centroid cosine is the default: adding a person is one row, no retraining. The linear SVM is an
option for galleries with many photos per person; its scores are calibrated probabilities. Centroids are
searched exactly with NumPy (top-k by ``argpartition``, not a sort of every score) up to ``APPROX_FROM``
identities and through an approximate FAISS index (``pipeline/match_index.py``) from there on; the
decision rule is the same for every backend.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from pipeline.gallery import Identity


@dataclass(frozen=True)
class MatchResult:
    """Top-k candidates for one face and the decision taken on them."""

    candidates: list[tuple[str, float]]
    identity: str | None
    score: float
    margin: float


class Matcher(Protocol):
    kind: str

    def topk(self, vecs: np.ndarray, k: int) -> list[list[tuple[str, float]]]: ...


def decide(candidates: list[tuple[str, float]], threshold: float, margin: float,
           own: Mapping[str, float] | None = None) -> MatchResult:
    """Accept top-1 when its score reaches ``threshold`` (or top-1's own threshold in ``own``, when higher:
    faces rejected as not them raised it, ``pipeline/gallery/negatives.py``) and beats top-2 by at least
    ``margin``. A face refused by top-1's own threshold names nobody: it never falls through to top-2."""
    if not candidates:
        return MatchResult([], None, 0.0, 0.0)
    s1 = candidates[0][1]
    s2 = candidates[1][1] if len(candidates) > 1 else -1.0
    gap = s1 - s2
    t = max(threshold, own.get(candidates[0][0], threshold)) if own else threshold
    ok = s1 >= t and gap >= margin
    return MatchResult(candidates, candidates[0][0] if ok else None, s1, gap)


def top_indices(scores: np.ndarray, k: int) -> np.ndarray:
    """Column indices of each row's ``k`` highest scores, best first; equal scores in column order (what a
    stable sort of every score gives), found by ``argpartition`` in O(N) instead of sorting N scores."""
    n = scores.shape[1]
    if k >= n:
        return np.argsort(-scores, axis=1, kind="stable")[:, :k]
    part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    out = np.empty_like(part)
    for r, cols in enumerate(part):
        row = scores[r]
        kth = row[cols].min()
        if np.count_nonzero(row == kth) != np.count_nonzero(row[cols] == kth):  # a tie straddles the cut
            cols = np.concatenate([np.flatnonzero(row > kth), np.flatnonzero(row == kth)])[:k]
        out[r] = cols[np.lexsort((cols, -row[cols]))]
    return out


def _topk_from_scores(scores: np.ndarray, names: list[str], k: int) -> list[list[tuple[str, float]]]:
    k = min(k, len(names))
    if k == 0:
        return [[] for _ in range(len(scores))]
    idx = top_indices(scores, k)
    return [[(names[j], float(row[j])) for j in cols] for row, cols in zip(scores, idx, strict=True)]


class CentroidMatcher:
    """Cosine similarity to each identity's L2-normalised centroid."""

    kind = "centroid"
    backend = "numpy"

    def __init__(self, people: list[Identity]) -> None:
        self.names = [p.name for p in people]
        self.centroids = (np.stack([p.centroid for p in people]).astype(np.float32) if people
                          else np.zeros((0, 1), np.float32))

    @classmethod
    def from_vectors(cls, names: list[str], centroids: np.ndarray) -> CentroidMatcher:
        m = cls([])
        m.names, m.centroids = list(names), np.ascontiguousarray(centroids, dtype=np.float32)
        return m

    def scores(self, vecs: np.ndarray) -> np.ndarray:
        if not self.names:
            return np.zeros((len(vecs), 0), np.float32)
        return vecs @ self.centroids.T

    def topk(self, vecs: np.ndarray, k: int) -> list[list[tuple[str, float]]]:
        return _topk_from_scores(self.scores(vecs), self.names, k)


def interpolate_augment(vecs: np.ndarray, target: int, rng: np.random.Generator) -> np.ndarray:
    """Embedding-level augmentation: new unit vectors on segments between two templates of a class."""
    if len(vecs) >= target:
        return vecs
    extra = []
    for _ in range(target - len(vecs)):
        if len(vecs) == 1:
            v = vecs[0] + rng.normal(0, 0.02, vecs.shape[1])
        else:
            i, j = rng.choice(len(vecs), 2, replace=False)
            t = rng.uniform(0.2, 0.8)
            v = t * vecs[i] + (1 - t) * vecs[j]
        extra.append(v / np.linalg.norm(v))
    return np.vstack([vecs, np.asarray(extra, dtype=np.float32)])


class SvmMatcher:
    """Linear SVM over all kept templates, class_weight balanced, with calibrated probabilities."""

    kind = "svm"

    def __init__(self, people: list[Identity], augment: bool = False, seed: int = 0) -> None:
        from sklearn.calibration import CalibratedClassifierCV
        from sklearn.svm import LinearSVC

        if len(people) < 2:
            raise ValueError("the SVM matcher needs at least 2 identities")
        rng = np.random.default_rng(seed)
        most = max(int((~p.outlier).sum()) for p in people)
        xs, ys = [], []
        for label, p in enumerate(people):
            v = p.templates[~p.outlier] if (~p.outlier).any() else p.templates
            if augment:
                v = interpolate_augment(v, most, rng)
            elif len(v) < 2:
                v = interpolate_augment(v, 2, rng)
            xs.append(v)
            ys += [label] * len(v)
        x, y = np.vstack(xs), np.asarray(ys)
        folds = int(min(3, np.bincount(y).min()))
        base = LinearSVC(C=1.0, class_weight="balanced", max_iter=10000)
        self.model = CalibratedClassifierCV(base, cv=max(2, folds), method="sigmoid")
        self.model.fit(x, y)
        self.names = [p.name for p in people]

    def topk(self, vecs: np.ndarray, k: int) -> list[list[tuple[str, float]]]:
        probs = self.model.predict_proba(vecs)
        full = np.zeros((len(vecs), len(self.names)), np.float64)
        full[:, self.model.classes_] = probs
        return _topk_from_scores(full, self.names, k)


# From this many identities the centroid matcher searches an approximate index (IVF-PQ, re-ranked). Measured with
# `facestream bench match` on synthetic dlib-resnet-v1-shaped galleries (docs/benchmarks.md, "Large galleries"):
# see the figures there; below it NumPy's exact search costs about a millisecond per face or less, and exact
# search keeps every decision identical to a full sort.
APPROX_FROM = 100_000
INDEXES = ("auto", "numpy", "flat", "hnsw", "ivf", "ivfpq")


def pick_index(n: int, approx_from: int = APPROX_FROM) -> str:
    """The centroid search for a gallery of ``n`` identities: exact NumPy below ``approx_from``, IVF-PQ
    re-ranked exactly (``pipeline/match_index.py``) from there on when faiss is installed (the ``[large]``
    extra), exact NumPy otherwise."""
    from pipeline.match_index import faiss_available

    return "ivfpq" if n >= approx_from and faiss_available() else "numpy"


def centroid_matcher(names: list[str], centroids: np.ndarray, index: str = "auto",
                     approx_from: int = APPROX_FROM) -> Matcher:
    """One centroid matcher over ``centroids`` (unit rows): ``index`` is ``auto`` (by gallery size), ``numpy``
    (exact), or a FAISS backend (``flat`` exact, ``hnsw`` / ``ivf`` / ``ivfpq`` approximate)."""
    if index not in INDEXES:
        raise ValueError(f"index must be one of {', '.join(INDEXES)}, got {index!r}")
    if index == "auto":
        index = pick_index(len(names), approx_from)
    if index == "numpy" or not names:
        return CentroidMatcher.from_vectors(names, centroids)
    from pipeline.match_index import FaissMatcher

    return FaissMatcher(names, centroids, index)


def make_matcher(kind: str, people: list[Identity], augment: bool = False, index: str = "auto") -> Matcher:
    """The gallery's matcher; centroid search is chosen by gallery size (``centroid_matcher``)."""
    if kind == "centroid":
        if not people:
            return CentroidMatcher([])
        return centroid_matcher([p.name for p in people], np.stack([p.centroid for p in people]), index)
    if kind == "svm":
        return SvmMatcher(people, augment=augment)
    raise ValueError(f"matcher must be 'centroid' or 'svm', got {kind!r}")
