"""FAISS inner-product indexes over identity centroids, for galleries of 10^5-10^6 identities.

Centroids and probes are unit vectors, so inner product is the cosine the centroid matcher scores with.
``flat`` is FAISS's exact ``IndexFlatIP`` (the same scores as NumPy's matrix product, in FAISS's kernels);
``hnsw`` (the approximate index the factory in ``pipeline/match.py`` picks for large galleries) and ``ivf``
answer from a fraction of the gallery. Why HNSW and these parameters: measured recall@1 against exact and
latency per face at 10^6 synthetic identities (``facestream bench match``, docs/benchmarks.md "Large
galleries"). faiss is an optional extra (``[large]``), imported only when an index is built.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

import numpy as np

BACKENDS = ("flat", "hnsw", "ivf")


@dataclass(frozen=True)
class IndexParams:
    """Knobs of the approximate indexes (defaults: the measured choice, see the module docstring)."""

    hnsw_m: int = 32  # graph degree: recall and memory grow with it
    ef_construction: int = 80  # candidates kept while inserting: build time vs graph quality
    ef_search: int = 128  # candidates kept while searching: latency vs recall
    ivf_lists: int = 0  # 0: about 4 * sqrt(N) inverted lists
    nprobe: int = 32  # lists scanned per query
    train_per_list: int = 64  # k-means training sample per list (FAISS warns below 39)
    threads: int = 0  # FAISS (OpenMP) threads while building; 0 keeps FAISS's default


def faiss_available() -> bool:
    try:
        import faiss  # noqa: F401
    except ImportError:
        return False
    return True


def _faiss() -> Any:
    try:
        import faiss
    except ImportError:
        raise RuntimeError("a FAISS index needs faiss-cpu: pip install 'facestream[large]'") from None
    return faiss


_build_lock = threading.Lock()  # omp_set_num_threads is process-wide


class FaissMatcher:
    """Top-k identities by inner product from a FAISS index; the decision rule stays ``match.decide``."""

    kind = "centroid"

    def __init__(self, names: list[str], centroids: np.ndarray, backend: str = "flat",
                 params: IndexParams | None = None, seed: int = 0) -> None:
        if backend not in BACKENDS:
            raise ValueError(f"index must be one of {', '.join(BACKENDS)}, got {backend!r}")
        faiss = _faiss()
        x = np.ascontiguousarray(centroids, dtype=np.float32)
        if x.ndim != 2 or len(x) != len(names):
            raise ValueError(f"need one centroid row per name, got {x.shape} for {len(names)} names")
        self.names = list(names)
        self.backend = backend
        self.params = params or IndexParams()
        p, d = self.params, x.shape[1]
        with _build_lock:
            before = faiss.omp_get_max_threads()
            if p.threads:
                faiss.omp_set_num_threads(p.threads)
            try:
                self.index = self._build(faiss, x, d, p, seed)
            finally:
                faiss.omp_set_num_threads(before)

    def _build(self, faiss: Any, x: np.ndarray, d: int, p: IndexParams, seed: int) -> Any:
        if self.backend == "flat":
            index = faiss.IndexFlatIP(d)
        elif self.backend == "hnsw":
            index = faiss.IndexHNSWFlat(d, p.hnsw_m, faiss.METRIC_INNER_PRODUCT)
            index.hnsw.efConstruction = p.ef_construction
            index.hnsw.efSearch = p.ef_search
        else:
            lists = p.ivf_lists or max(1, min(len(x) // 39, int(4 * np.sqrt(len(x)))))
            index = faiss.IndexIVFFlat(faiss.IndexFlatIP(d), d, lists, faiss.METRIC_INNER_PRODUCT)
            index.cp.seed = seed
            sample = x
            if len(x) > lists * p.train_per_list:
                rows = np.random.default_rng(seed).choice(len(x), lists * p.train_per_list, replace=False)
                sample = x[np.sort(rows)]
            index.train(sample)
            index.nprobe = min(p.nprobe, lists)
        if len(x):
            index.add(x)
        return index

    def tune(self, value: int) -> None:
        """Set the search-time knob without rebuilding: HNSW's ``ef_search`` or IVF's ``nprobe``."""
        if value < 1:
            raise ValueError(f"a search knob must be >= 1, got {value}")
        if self.backend == "hnsw":
            self.index.hnsw.efSearch = value
        elif self.backend == "ivf":
            self.index.nprobe = min(value, self.index.nlist)

    def index_bytes(self) -> int:
        """Bytes of the index's own arrays (vectors, graph links, list ids), not Python overhead."""
        n, d = self.index.ntotal, self.index.d
        if self.backend == "flat":
            return n * d * 4
        if self.backend == "hnsw":
            h = self.index.hnsw
            return n * d * 4 + 4 * h.neighbors.size() + 8 * h.offsets.size() + 4 * h.levels.size()
        return n * (d * 4 + 8) + self.index.nlist * d * 4

    def topk(self, vecs: np.ndarray, k: int) -> list[list[tuple[str, float]]]:
        q = np.ascontiguousarray(np.atleast_2d(vecs), dtype=np.float32)
        k = min(k, len(self.names))
        if k == 0:
            return [[] for _ in range(len(q))]
        scores, idx = self.index.search(q, k)
        # an approximate index may find fewer than k (label -1): those slots are left out
        return [[(self.names[j], float(s)) for s, j in zip(srow, irow, strict=True) if j >= 0]
                for srow, irow in zip(scores, idx, strict=True)]
