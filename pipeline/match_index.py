"""FAISS inner-product indexes over identity centroids, for galleries of 10^5-10^6 identities.

Centroids and probes are unit vectors, so inner product is the cosine the centroid matcher scores with.
``flat`` is FAISS's exact ``IndexFlatIP`` (the same scores as NumPy's matrix product, in FAISS's kernels);
``hnsw`` and ``ivf`` answer from a fraction of the gallery. ``ivfpq``, the one the factory in
``pipeline/match.py`` picks for large galleries, scans a quarter of its inverted lists of 4-bit
product-quantised codes (FAISS fast-scan) in the PCA subspace that holds the gallery's variance (dlib's
vectors span ~77 of 128 dimensions), then re-ranks the best ``rerank`` candidates by their exact inner
product, so the scores it returns are exact. Why: at 10^6 dlib-shaped identities it gives recall@1 1.000 at
1.8 ms a face and builds in 18 s, where HNSW needed ef 1024 (5.2 ms) for 0.992 and 200-250 s to build
(``facestream bench match``, docs/benchmarks.md "Galleries of a million"). faiss is an optional extra
(``[large]``), imported only when an index is built.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

import numpy as np

BACKENDS = ("flat", "hnsw", "ivf", "ivfpq")


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
    pq_nprobe: int = 0  # ivfpq: lists scanned per query; 0: a quarter of them
    rerank: int = 512  # ivfpq: candidates re-ranked by their exact inner product
    keep_variance: float = 0.99999  # ivfpq: share of the gallery's variance its PCA subspace keeps


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
        self.vectors = x  # the exact vectors ivfpq re-ranks with (the caller's array, not a copy)
        self.mean: np.ndarray | None = None  # ivfpq's PCA: centre and (d, d') axes
        self.axes: np.ndarray | None = None
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
        elif self.backend == "ivfpq":
            return self._build_ivfpq(faiss, x, p, seed)
        else:
            lists = _lists(len(x), p)
            index = faiss.IndexIVFFlat(faiss.IndexFlatIP(d), d, lists, faiss.METRIC_INNER_PRODUCT)
            index.cp.seed = seed
            index.train(_sample(x, lists * p.train_per_list, seed))
            index.nprobe = min(p.nprobe, lists)
        if len(x):
            index.add(x)
        return index

    def _build_ivfpq(self, faiss: Any, x: np.ndarray, p: IndexParams, seed: int) -> Any:
        """Inverted lists of 4-bit PQ codes (two dimensions a code) over the PCA subspace; L2 there ranks as the
        inner product does, because the vectors are unit length and the subspace keeps their variance."""
        self.mean, self.axes = pca_axes(x, p.keep_variance, seed)
        reduced = self._reduce(x)
        dims, lists = reduced.shape[1], _lists(len(x), p)
        if len(x) < PQ_MIN_ROWS:  # too few to train 16 codes a dimension pair: exact over the subspace
            index = faiss.IndexFlatL2(dims)
            index.add(reduced)
            return index
        index = faiss.IndexIVFPQFastScan(faiss.IndexFlatL2(dims), dims, lists, dims // 2, 4, faiss.METRIC_L2)
        index.cp.seed = seed
        index.train(_sample(reduced, lists * p.train_per_list, seed))
        index.nprobe = min(p.pq_nprobe or max(1, lists // 4), lists)
        if len(reduced):
            index.add(reduced)
        return index

    def _reduce(self, x: np.ndarray) -> np.ndarray:
        assert self.mean is not None and self.axes is not None
        return np.ascontiguousarray((x - self.mean) @ self.axes, dtype=np.float32)

    def tune(self, value: int) -> None:
        """Set the search-time knob without rebuilding: HNSW's ``ef_search`` or IVF's ``nprobe``."""
        if value < 1:
            raise ValueError(f"a search knob must be >= 1, got {value}")
        if self.backend == "hnsw":
            self.index.hnsw.efSearch = value
        elif hasattr(self.index, "nprobe"):  # IVF, or IVF-PQ unless too small to quantise
            self.index.nprobe = min(value, self.index.nlist)

    def index_bytes(self) -> int:
        """Bytes of the index's own arrays (vectors, graph links, list ids), not Python overhead."""
        n, d = self.index.ntotal, self.index.d
        if self.backend == "flat":
            return n * d * 4
        if self.backend == "hnsw":
            h = self.index.hnsw
            return n * d * 4 + 4 * h.neighbors.size() + 8 * h.offsets.size() + 4 * h.levels.size()
        if self.backend == "ivfpq":  # codes, ids, coarse centroids, PCA (the re-rank reads the caller's vectors)
            assert self.axes is not None
            if not hasattr(self.index, "nlist"):
                return n * d * 4 + self.axes.nbytes
            return n * (d // 4 + 8) + self.index.nlist * d * 4 + self.axes.nbytes
        return n * (d * 4 + 8) + self.index.nlist * d * 4

    def topk(self, vecs: np.ndarray, k: int) -> list[list[tuple[str, float]]]:
        q = np.ascontiguousarray(np.atleast_2d(vecs), dtype=np.float32)
        k = min(k, len(self.names))
        if k == 0:
            return [[] for _ in range(len(q))]
        if self.backend == "ivfpq":
            return self._reranked(q, k)
        scores, idx = self.index.search(q, k)
        # an approximate index may find fewer than k (label -1): those slots are left out
        return [[(self.names[j], float(s)) for s, j in zip(srow, irow, strict=True) if j >= 0]
                for srow, irow in zip(scores, idx, strict=True)]

    def _reranked(self, q: np.ndarray, k: int) -> list[list[tuple[str, float]]]:
        """The index's best ``rerank`` candidates, scored again exactly and sorted (ties in index order)."""
        _, cand = self.index.search(self._reduce(q), max(k, min(self.params.rerank, len(self.names))))
        out = []
        for row, vec in zip(cand, q, strict=True):
            row = row[row >= 0]
            scores = self.vectors[row] @ vec
            order = np.argsort(-scores, kind="stable")[:k]
            out.append([(self.names[j], float(s)) for j, s in zip(row[order], scores[order], strict=True)])
        return out


def _lists(n: int, p: IndexParams) -> int:
    """Inverted lists: ``ivf_lists`` or about 4 * sqrt(n), with at least 39 training points each."""
    return p.ivf_lists or max(1, min(n // 39, int(4 * np.sqrt(n))))


def _sample(x: np.ndarray, rows: int, seed: int) -> np.ndarray:
    if len(x) <= rows:
        return x
    return x[np.sort(np.random.default_rng(seed).choice(len(x), rows, replace=False))]


PQ_MIN_ROWS = 39 * 16  # FAISS's floor of 39 training points for each of a code's 16 centroids
PCA_SAMPLE = 200_000  # rows the covariance is estimated from (128 x 128: more rows add nothing measurable)


def pca_axes(x: np.ndarray, keep_variance: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Centre and principal axes keeping ``keep_variance`` of the variance, the count rounded up to a
    multiple of 4 (two dimensions per 4-bit code, codes in pairs) and capped at the full dimension."""
    if not 0 < keep_variance <= 1:
        raise ValueError(f"keep_variance must be in (0, 1], got {keep_variance}")
    sample = _sample(x, PCA_SAMPLE, seed).astype(np.float64)
    mean = sample.mean(0)
    values, vectors = np.linalg.eigh(np.cov((sample - mean).T) if len(sample) > 1 else np.eye(x.shape[1]))
    values, vectors = np.clip(values[::-1], 0, None), vectors[:, ::-1]
    share = np.cumsum(values) / max(values.sum(), 1e-30)
    dims = int(np.searchsorted(share, keep_variance - 1e-12) + 1)
    dims = min(x.shape[1], -(-dims // 4) * 4)
    return mean.astype(np.float32), np.ascontiguousarray(vectors[:, :dims], dtype=np.float32)
