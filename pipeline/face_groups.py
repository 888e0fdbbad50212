"""Unknown people grouped: tracks that ended unknown are clustered on their embeddings, at the same-person
threshold the analysis matched at (cosine similarity ``t`` is cosine distance ``1 - t``).

The method is scikit-learn's agglomerative clustering with complete linkage and ``distance_threshold`` 1 - t:
every two appearances in a group are then at least as similar as the gallery needs to name someone, so a
group is never a chain of look-alikes. It was picked over average linkage, DBSCAN and HDBSCAN on measured
purity and completeness (``compare_methods``; figures in docs/profiles.md, "Unknown people grouped").
Agglomerative clustering holds an N x N distance matrix: above ``MAX_EXACT`` unknown tracks the groups are
built on DBSCAN instead (same threshold, neighbourhoods from a ball tree), which needs no such matrix
(and chains look-alikes: lower purity, see the figures).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import numpy as np

METHODS = ("complete", "average", "dbscan", "hdbscan")
MAX_EXACT = 20_000  # unknown tracks up to which the N x N agglomerative clustering runs (~1.6 GB float32 at most)


def cluster(vectors: np.ndarray, threshold: float, method: str = "complete") -> np.ndarray:
    """A group label per row (0..K-1; -1 never: a lone appearance is its own group). Groups are numbered by
    size, largest first, then by first row."""
    n = len(vectors)
    if n == 0:
        return np.zeros(0, np.int64)
    if n == 1:
        return np.zeros(1, np.int64)
    x = np.asarray(vectors, dtype=np.float64)
    dist = max(1e-6, 1.0 - float(threshold))
    if method == "complete" and n > MAX_EXACT:
        method = "dbscan"
    if method in ("complete", "average"):
        from sklearn.cluster import AgglomerativeClustering

        labels = AgglomerativeClustering(n_clusters=None, distance_threshold=dist, metric="cosine",
                                         linkage=method).fit_predict(x)
    elif method == "dbscan":
        from sklearn.cluster import DBSCAN

        # On unit vectors cosine distance d is Euclidean sqrt(2 d): the same groups, from a ball tree.
        x = x / np.linalg.norm(x, axis=1, keepdims=True)
        labels = DBSCAN(eps=float(np.sqrt(2.0 * dist)), min_samples=1, algorithm="ball_tree").fit_predict(x)
    elif method == "hdbscan":
        from sklearn.cluster import HDBSCAN

        # HDBSCAN finds its own density levels and takes no threshold (scikit-learn 1.9's
        # cluster_selection_epsilon fails on cosine inputs like these). Noise (-1): one group each.
        labels = HDBSCAN(min_cluster_size=2, metric="cosine", copy=True).fit_predict(x)
        nxt = labels.max() + 1
        for i in np.flatnonzero(labels < 0):
            labels[i], nxt = nxt, nxt + 1
    else:
        raise ValueError(f"method must be one of {', '.join(METHODS)}, got {method!r}")
    return _renumber(np.asarray(labels))


def _renumber(labels: np.ndarray) -> np.ndarray:
    sizes = Counter(labels.tolist())
    first = {lab: int(np.flatnonzero(labels == lab)[0]) for lab in sizes}
    order = sorted(sizes, key=lambda lab: (-sizes[lab], first[lab]))
    remap = {lab: i for i, lab in enumerate(order)}
    return np.array([remap[lab] for lab in labels.tolist()], np.int64)


def purity_completeness(labels: Sequence[int], truth: Sequence[str]) -> tuple[float, float]:
    """Purity: the share of appearances whose group's majority person is theirs. Completeness: the share of
    appearances in their person's largest group (a person split over two groups loses the smaller part)."""
    n = len(labels)
    if n == 0:
        return 1.0, 1.0
    pairs = Counter(zip(labels, truth, strict=True))
    by_group: dict[int, int] = {}
    by_person: dict[str, int] = {}
    for (g, p), c in pairs.items():
        by_group[g] = max(by_group.get(g, 0), c)
        by_person[p] = max(by_person.get(p, 0), c)
    return sum(by_group.values()) / n, sum(by_person.values()) / n


def compare_methods(vectors: np.ndarray, truth: Sequence[str], threshold: float) -> list[dict[str, float | str]]:
    """Purity, completeness and group count of every method on labelled embeddings."""
    rows: list[dict[str, float | str]] = []
    for m in METHODS:
        labels = cluster(vectors, threshold, m)
        p, c = purity_completeness(labels.tolist(), truth)
        rows.append({"method": m, "purity": round(p, 4), "completeness": round(c, 4),
                     "groups": int(labels.max() + 1) if len(labels) else 0, "people": len(set(truth))})
    return rows
