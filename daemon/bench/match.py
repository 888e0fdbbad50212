"""``bench match``: the centroid search at 10^3-10^6 identities on synthetic dlib-resnet-v1-shaped vectors
(``tools/synth_faces.py``): per-face latency of exact NumPy, FAISS exact and the approximate indexes (IVF-PQ
re-ranked, the matcher's choice for large galleries; HNSW; IVF-flat), their
recall@1 against exact, build time and memory, and the time to open a gallery of that size from SQLite.

Each size gets a real SQLite gallery written through the gallery store (one photo per identity, as a watch
list), opened and read back; the matchers are built from what was read. Probes are new synthetic photos of
enrolled identities and of strangers (identities beyond the gallery), one face per call as the match stage
asks. The exact answer for recall is FAISS's flat index searched in batches (it is checked against NumPy on
the timed probes).
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from pipeline.gallery import Gallery, Identity
from pipeline.match import CentroidMatcher, Matcher, pick_index
from pipeline.match_index import FaissMatcher, IndexParams
from tools.synth_faces import DIM, SynthFaces

MODEL_ID = "dlib-resnet-v1@2"  # what the synthetic vectors imitate (the gallery file says so)
K = 5  # candidates per face, as the match stage asks for a track decision
WRITE_BATCH = 50_000
MAX_IDENTITIES = 10_000_000


def parse_sizes(text: str) -> list[int]:
    """``1000,100000,1e6`` -> [1000, 100000, 1000000], or a one-line ValueError."""
    sizes = []
    for part in (p.strip() for p in str(text).split(",")):
        try:
            value = float(part.replace("_", ""))
        except ValueError:
            raise ValueError(f"--identities: {part!r} is not a number (give sizes like 1000,100000)") from None
        if not value.is_integer() or not 1 <= value <= MAX_IDENTITIES:
            raise ValueError(f"--identities: each size must be a whole number from 1 to {MAX_IDENTITIES:,}, "
                             f"got {part!r}")
        sizes.append(int(value))
    return sizes


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _name(i: int) -> str:
    return f"person_{i:07d}"


def write_gallery(path: Path, centroids: np.ndarray) -> None:
    """A gallery of ``len(centroids)`` identities (one template each) through the real store, with a stored
    operating point so opening it does not derive one."""
    g = Gallery.create(path, MODEL_ID, DIM)
    try:
        for start in range(0, len(centroids), WRITE_BATCH):
            people = [Identity(_name(i), c, c[None, :], np.zeros(1, bool), [f"synthetic/{i}.jpg"],
                               [f"{i:064x}"], None)
                      for i, c in enumerate(centroids[start : start + WRITE_BATCH], start)]
            g.replace_identities(people, keep_others=True)
        g.set_calibration(0.96, 0.015, {"method": "synthetic gallery (bench match)"}, bump=False)
    finally:
        g.close()


def open_gallery(path: Path) -> tuple[list[str], np.ndarray]:
    """What a command does to get a matcher's input: open the file, read every identity."""
    g = Gallery.open(path, MODEL_ID)
    try:
        people = g.identities()
    finally:
        g.close()
    return [p.name for p in people], np.stack([p.centroid for p in people])


def _latency(matcher: Matcher, probes: np.ndarray) -> dict[str, float]:
    matcher.topk(probes[:1], K)  # first call pays lazy set-up
    times = []
    for q in probes:
        t = time.perf_counter()
        matcher.topk(q[None, :], K)
        times.append(time.perf_counter() - t)
    ms = 1000 * np.asarray(times)
    return {"ms_per_face_p50": round(float(np.median(ms)), 4), "ms_per_face_mean": round(float(ms.mean()), 4),
            "ms_per_face_p99": round(float(np.percentile(ms, 99)), 4), "faces_timed": len(ms)}


def _built(make: Callable[[], Matcher]) -> tuple[Matcher, dict[str, float]]:
    rss, t = _rss_mb(), time.perf_counter()
    m = make()
    figures = {"build_s": round(time.perf_counter() - t, 3), "rss_added_mb": round(_rss_mb() - rss, 1)}
    if isinstance(m, FaissMatcher):
        figures["index_mb"] = round(m.index_bytes() / 2**20, 1)
    else:
        figures["index_mb"] = round(m.centroids.nbytes / 2**20, 1)  # type: ignore[attr-defined]
    return m, figures


def _top(matcher: Matcher, probes: np.ndarray) -> list[tuple[str, str]]:
    """(top-1, top-2) names of each probe, searched in batches (64 x 10^6 float32 scores are 256 MB)."""
    out = []
    for start in range(0, len(probes), 64):
        out += [(c[0][0], c[1][0] if len(c) > 1 else "") for c in matcher.topk(probes[start : start + 64], 2)]
    return out


def _agreement(approx: list[tuple[str, str]], exact: list[tuple[str, str]], enrolled: int) -> dict[str, float]:
    def share(pairs: list[tuple[tuple[str, str], tuple[str, str]]], both: bool) -> float:
        hits = [a == e if both else a[0] == e[0] for a, e in pairs]
        return round(float(np.mean(hits)), 4) if hits else float("nan")

    pairs = list(zip(approx, exact, strict=True))
    return {"recall_at_1": share(pairs[:enrolled], False), "recall_at_1_strangers": share(pairs[enrolled:], False),
            "top2_equal": share(pairs, True)}


def bench_size(n: int, work: Path, probes: int, timed: int, seed: int, approx: tuple[str, ...],
               params: IndexParams, ef_search: tuple[int, ...], nprobe: tuple[int, ...],
               pq_nprobe: tuple[int, ...] = (0,)) -> dict:
    """Every figure for a gallery of ``n`` synthetic identities."""
    faces = SynthFaces(seed)
    t = time.perf_counter()
    centroids = faces.gallery(n)
    row: dict = {"identities": n, "synth_s": round(time.perf_counter() - t, 2)}
    path = work / f"synthetic_{n}.db"
    t = time.perf_counter()
    write_gallery(path, centroids)
    row["gallery_write_s"] = round(time.perf_counter() - t, 2)
    row["gallery_file_mb"] = round(path.stat().st_size / 2**20, 1)
    del centroids
    t = time.perf_counter()
    names, centroids = open_gallery(path)
    row["gallery_open_s"] = round(time.perf_counter() - t, 3)
    path.unlink()
    rng = np.random.default_rng([seed, 9])
    enrolled = probes - probes // 2
    ids = np.concatenate([rng.choice(n, enrolled, replace=enrolled > n), n + np.arange(probes // 2)])
    q = faces.probes(ids)
    half = min(timed // 2, probes // 2)
    t_q = q[np.r_[0:timed - half, enrolled:enrolled + half]]  # timed faces: enrolled and strangers
    row["auto_index"] = pick_index(n)
    numpy_m, figures = _built(lambda: CentroidMatcher.from_vectors(names, centroids))
    row["numpy"] = {**figures, **_latency(numpy_m, t_q)}
    flat, figures = _built(lambda: FaissMatcher(names, centroids, "flat", params))
    row["faiss_flat"] = {**figures, **_latency(flat, t_q)}
    exact = _top(flat, q)
    row["faiss_flat"]["top2_equal_numpy"] = _agreement(_top(numpy_m, t_q), _top(flat, t_q), len(t_q))["top2_equal"]
    row["top1_correct_exact"] = round(float(np.mean([e[0] == _name(i) for e, i in zip(exact, ids[:enrolled],
                                                                                      strict=False)])), 4)
    del numpy_m
    for backend, knob, values in (("ivfpq", "nprobe", pq_nprobe), ("hnsw", "ef", ef_search),
                                  ("ivf", "nprobe", nprobe)):
        if backend not in approx:
            continue
        m, figures = _built(lambda b=backend: FaissMatcher(names, centroids, b, params, seed))
        if backend == "ivfpq":
            figures |= {"lists": getattr(m.index, "nlist", 0), "dims": m.index.d, "rerank": params.rerank}
        for v in values:
            if v:  # 0: the matcher's own setting
                m.tune(v)
            v = v or getattr(m.index, "nprobe", 0)
            row[f"faiss_{backend}_{knob}{v}"] = {**figures, **_latency(m, t_q), **_agreement(_top(m, q), exact,
                                                                                             enrolled)}
        del m
    return row


def run_bench_match(sizes: list[int], probes: int = 1000, timed: int = 200, seed: int = 0,
                    approx: tuple[str, ...] = ("ivfpq", "hnsw", "ivf"), params: IndexParams | None = None,
                    work_dir: Path | None = None, ef_search: tuple[int, ...] = (),
                    nprobe: tuple[int, ...] = (), pq_nprobe: tuple[int, ...] = (0,)) -> dict:
    """The figures for each size; synthetic gallery files are written under ``work_dir`` (a temporary folder
    by default) and removed once read."""
    if probes < 2 or timed < 1:
        raise ValueError(f"--probes must be >= 2 and --timed >= 1, got {probes} and {timed}")
    import faiss

    params = params or IndexParams()
    ef_search, nprobe = ef_search or (params.ef_search,), nprobe or (params.nprobe,)
    work = Path(tempfile.mkdtemp(prefix="bench_match_", dir=work_dir))
    try:
        rows = [bench_size(n, work, probes, min(timed, probes), seed, approx, params, ef_search, nprobe,
                           pq_nprobe) for n in sizes]
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return {"model": MODEL_ID, "dim": DIM, "probes": probes, "probes_timed": min(timed, probes), "k": K,
            "faiss": faiss.__version__, "faiss_threads": faiss.omp_get_max_threads(), "cpus": os.cpu_count(),
            "index_params": {"hnsw_m": params.hnsw_m, "ef_construction": params.ef_construction,
                             "ef_search_default": params.ef_search, "ivf_train_per_list": params.train_per_list,
                             "ivfpq_rerank": params.rerank, "ivfpq_keep_variance": params.keep_variance},
            "sizes": rows}


def summary_lines(result: dict) -> list[str]:
    """One line per size and search: latency, recall, build time and memory."""
    lines = []
    for row in result["sizes"]:
        lines.append(f"{row['identities']:>9,} identities: gallery write {row['gallery_write_s']} s, open "
                     f"{row['gallery_open_s']} s ({row['gallery_file_mb']} MB); auto index {row['auto_index']}")
        for key in (k for k in row if k == "numpy" or k.startswith("faiss_")):
            f = row[key]
            recall = (f" recall@1 {f['recall_at_1']} (strangers {f['recall_at_1_strangers']})"
                      if "recall_at_1" in f else "")
            lines.append(f"    {key:<20} {f['ms_per_face_p50']:>9.3f} ms/face p50 ({f['ms_per_face_p99']:.3f} p99)"
                         f"{recall}, build {f['build_s']} s, index {f['index_mb']} MB, RSS +{f['rss_added_mb']} MB")
    return lines
