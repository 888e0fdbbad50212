"""``facestream bench embed|pipeline|http|live|soak|match|analyze``: the benchmarks (code in daemon/bench/)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from daemon.cli.common import device_opts, gallery_file, live_args, model_opts, settings_from
from daemon.cli.printing import CliError, print_result
from daemon.engines import configured_embedder
from pipeline.match_index import IndexParams


def cmd_bench_embed(args: argparse.Namespace) -> int:
    from tools.bench import bench_embed

    settings = settings_from(args)
    from daemon.bench.gpu_memory import gpu_memory_mb

    result = bench_embed(configured_embedder(settings), args.batch, args.seconds) | {"gpu_memory_mb": gpu_memory_mb()}
    print_result(result, args.json)
    return 0


def cmd_bench_pipeline(args: argparse.Namespace) -> int:
    from daemon.bench.pipeline import run_bench

    settings = settings_from(args)
    if args.vs_gallery:
        from daemon.bench.pipeline import compare_galleries

        other = gallery_file(argparse.Namespace(gallery=args.vs_gallery), settings)
        print_result(compare_galleries(settings, gallery_file(args, settings), other, Path(args.source),
                                       args.rounds), args.json)
        return 0
    result = run_bench(settings, gallery_file(args, settings), Path(args.source), args.baseline,
                       args.baseline_frames, args.liveness)
    print_result(result, args.json)
    return 0


def cmd_bench_analyze(args: argparse.Namespace) -> int:
    from daemon.bench.analyze import MODES, run_bench_analyze

    settings = settings_from(args)
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    if bad := [m for m in modes if m not in MODES]:
        raise CliError(f"--modes: unknown {bad[0]!r}; choose from {', '.join(MODES)}")
    missing = [v for v in args.videos if not Path(v).is_file()]
    if missing:
        raise CliError(f"video file not found: {missing[0]}")
    print_result(run_bench_analyze(settings, gallery_file(args, settings), [Path(v) for v in args.videos],
                                   args.copies, modes), args.json)
    return 0


def cmd_bench_http(args: argparse.Namespace) -> int:
    from daemon.bench.http_page import run_bench_http

    settings = settings_from(args)
    print_result(run_bench_http(settings, gallery_file(args, settings), Path(args.source), args.segments,
                                args.segment_seconds, args.warmup), args.json)
    return 0


def cmd_bench_live(args: argparse.Namespace) -> int:
    from daemon.bench.live import run_live

    settings = settings_from(args)
    try:
        result = run_live(settings, gallery_file(args, settings), Path(args.source), args.streams, args.fps,
                          args.seconds, args.size, args.warmup)
    except RuntimeError as exc:
        raise CliError(str(exc)) from None
    print_result(result, args.json)
    return 0


def cmd_bench_gpu(args: argparse.Namespace) -> int:
    import json
    import os

    from daemon.bench.gpu import run_bench_gpu

    settings = settings_from(args)
    data = Path(args.data or os.environ.get("FACESTREAM_DATA") or "../shared/data").expanduser()
    device = args.device or ("cpu" if args.dry_run else "cuda")
    try:
        result = run_bench_gpu(settings, data, device, args.dry_run)
    except ValueError as exc:
        raise CliError(str(exc)) from None
    print(json.dumps(result, separators=(",", ":")))  # one line, whatever --json says: the check's record
    return 0 if result["ok"] else 1


def cmd_bench_soak(args: argparse.Namespace) -> int:
    from daemon.bench.soak import run_soak

    settings = settings_from(args)
    result = run_soak(settings, gallery_file(args, settings), Path(args.source), args.streams, args.seconds,
                      args.warmup)
    print_result(result, args.json)
    return 0


def cmd_bench_match(args: argparse.Namespace) -> int:
    from daemon.bench.match import parse_sizes

    sizes = parse_sizes(args.identities)  # a bad size fails before faiss or any vector is touched
    probes, timed = _whole("--probes", args.probes, 2), _whole("--timed", args.timed, 1)
    seed = _whole("--seed", args.seed, 0)
    ef_search = tuple(_whole("--ef-search", v, 1) for v in args.ef_search.split(","))
    nprobe = tuple(_whole("--nprobe", v, 1) for v in args.nprobe.split(","))
    approx = tuple(a for a in args.approx.split(",") if a)
    if bad := [a for a in approx if a not in ("ivfpq", "hnsw", "ivf")]:
        raise CliError(f"--approx: {bad[0]!r} is not an approximate index (ivfpq, hnsw, ivf)")
    pq_nprobe = tuple(_whole("--pq-nprobe", v, 0) for v in args.pq_nprobe.split(","))
    from pipeline.match_index import faiss_available

    if not faiss_available():
        raise CliError("bench match needs faiss-cpu: pip install 'facestream[large]'")
    from daemon.bench.match import run_bench_match, summary_lines

    params = IndexParams(ef_construction=_whole("--ef-construction", args.ef_construction, 1),
                         hnsw_m=_whole("--hnsw-m", args.hnsw_m, 2), rerank=_whole("--rerank", args.rerank, 1))
    result = run_bench_match(sizes, probes, timed, seed, approx, params,
                             Path(args.work_dir) if args.work_dir else None, ef_search, nprobe, pq_nprobe)
    if args.json:
        print_result(result, True)
    else:
        print("\n".join(summary_lines(result)))
    return 0


def _whole(option: str, text: str, minimum: int) -> int:
    """A whole-number option checked here, not by argparse, so a bad value is one line (no usage block)."""
    try:
        value = int(text)
    except ValueError:
        raise CliError(f"{option}: {text!r} is not a whole number") from None
    if value < minimum:
        raise CliError(f"{option} must be >= {minimum}, got {value}")
    return value


def add_commands(sub: Any) -> None:
    bench = sub.add_parser("bench", help="benchmarks").add_subparsers(dest="action", required=True)
    be = bench.add_parser("embed", help="embedding throughput")
    be.add_argument("--batch", type=int, default=32)
    be.add_argument("--seconds", type=float, default=5.0)
    be.add_argument("--json", action="store_true")
    model_opts(be)
    be.set_defaults(func=cmd_bench_embed)
    bp = bench.add_parser("pipeline", help="daemon frames/s on a file vs decoding alone and the seed-style loop")
    bp.add_argument("--source", required=True, help="video file")
    bp.add_argument("--gallery", help="gallery file (or postgresql:// URL) to match against")
    bp.add_argument("--baseline", action="store_true", help="also time facenet-pytorch's MTCNN on every frame "
                    "plus one embedding per face")
    bp.add_argument("--baseline-frames", type=int, help="time the baseline on the first N frames only")
    bp.add_argument("--liveness", choices=("on", "off"), help="run the door profile (audit in a temporary folder, "
                    "no action) with liveness on or off, and report the liveness cost per face")
    bp.add_argument("--vs-gallery", help="instead: the daemon against --gallery and this one (a file and a "
                    "postgresql:// URL), alternating, frames/s of each and their ratio")
    bp.add_argument("--rounds", type=int, default=3, help="with --vs-gallery: runs against each gallery")
    bp.add_argument("--json", action="store_true")
    device_opts(bp)
    bp.set_defaults(func=cmd_bench_pipeline)
    bh = bench.add_parser("http", help="pipeline frames/s on a file with the web page's requests (snapshots, "
                          "status, event stream, metrics) against without them, alternating in one run")
    bh.add_argument("--source", required=True, help="video file")
    bh.add_argument("--gallery", help="gallery file to match against")
    bh.add_argument("--segments", type=int, default=6, help="pairs of segments without and with the page "
                    "(default 6)")
    bh.add_argument("--segment-seconds", type=float, default=10.0, help="length of each segment (default 10)")
    bh.add_argument("--warmup", type=float, default=5.0, help="seconds before the first segment (default 5)")
    bh.add_argument("--json", action="store_true")
    bh.set_defaults(func=cmd_bench_http)
    bl = bench.add_parser("live", help="N real-time RTSP streams of a file (GStreamer's RTSP server on 127.0.0.1) "
                          "through the daemon: frames/s, stale drops, capture-to-event latency, queue growth")
    live_args(bl, "video file to serve", 1, 30.0, 5.0, "seconds after every stream's first frame before measuring")
    bl.add_argument("--fps", type=float, help="serve at this frame rate (default: the file's own)")
    bl.add_argument("--size", help="serve scaled to WxH, e.g. 1280x720 (default: the file's own)")
    device_opts(bl)
    bl.set_defaults(func=cmd_bench_live)
    bg = bench.add_parser("gpu", help="the prepared GPU check (under 8 minutes): embed fp32 vs fp16, the crowd "
                          "clip, 1080p cameras until they no longer keep up, LFW DevTest in fp16; one JSON line")
    bg.add_argument("--device", help="cuda[:N] (default cuda; cpu with --dry-run)")
    bg.add_argument("--dry-run", action="store_true", help="every step, small, on the CPU: checks the check")
    bg.add_argument("--data", help="shared data folder (default $FACESTREAM_DATA or ../shared/data)")
    bg.set_defaults(func=cmd_bench_gpu)
    bs = bench.add_parser("soak", help="looped copies of a file as live cameras at real-time rate: RSS growth, "
                          "queue depths, drops, latency")
    live_args(bs, "video file, read N times over as live cameras", 4, 600.0, 60.0,
               "seconds before RSS growth is measured from")
    bs.set_defaults(func=cmd_bench_soak)
    ba = bench.add_parser("analyze", help="analyze of the same videos in one process, on a pool of 1 and 2 "
                          "workers and on Ray local: wall times and ratios")
    ba.add_argument("videos", nargs="+", help="video files")
    ba.add_argument("--copies", type=int, default=2, help="each video this many times (under other names)")
    ba.add_argument("--modes", default="one-process,workers-1,workers-2,ray-local")
    ba.add_argument("--gallery", help="gallery file to match against")
    ba.add_argument("--json", action="store_true")
    ba.set_defaults(func=cmd_bench_analyze)
    _add_match(bench)


def _add_match(bench: Any) -> None:
    """``bench match``'s options (its own function: the large-gallery knobs are many)."""
    bm = bench.add_parser("match", help="centroid search on synthetic dlib-shaped galleries: per-face latency of "
                          "exact NumPy, FAISS exact and approximate, recall@1, build time, memory, SQLite open time")
    bm.add_argument("--identities", default="1000,100000", help="gallery sizes, comma-separated (default "
                    "1000,100000; the acceptance figure is at 1000000)")
    bm.add_argument("--probes", default="1000", help="probe faces per size, half of them strangers "
                    "(default 1000)")
    bm.add_argument("--timed", default="200", help="probe faces timed one by one (default 200)")
    bm.add_argument("--approx", default="ivfpq,hnsw,ivf", help="approximate indexes to measure (default "
                    "ivfpq,hnsw,ivf; ivfpq is the matcher's choice for large galleries)")
    bm.add_argument("--pq-nprobe", default="0", help="IVF-PQ lists scanned per search, comma-separated "
                    "(default 0: the matcher's, a quarter of the lists)")
    bm.add_argument("--rerank", default=str(IndexParams().rerank),
                    help="IVF-PQ candidates re-ranked exactly (default: the matcher's)")
    bm.add_argument("--ef-search", default=str(IndexParams().ef_search),
                    help="HNSW candidates per search, comma-separated to compare several on one graph (default: "
                    "the matcher's)")
    bm.add_argument("--ef-construction", default=str(IndexParams().ef_construction),
                    help="HNSW candidates kept while inserting (build time vs graph quality; default: the matcher's)")
    bm.add_argument("--hnsw-m", default=str(IndexParams().hnsw_m), help="HNSW graph degree (default: the matcher's)")
    bm.add_argument("--nprobe", default="64,256", help="IVF lists scanned per search, comma-separated "
                    "(default 64,256)")
    bm.add_argument("--seed", default="0")
    bm.add_argument("--work-dir", help="folder for the synthetic gallery files (default: the temp folder)")
    bm.add_argument("--json", action="store_true")
    bm.set_defaults(func=cmd_bench_match)
