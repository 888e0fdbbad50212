"""The ``facestream`` console script: one parser, subcommands, one-line errors."""

from __future__ import annotations

import argparse
import json
import sqlite3
import sys
from pathlib import Path
from typing import Any

from daemon import gallery_cli, run_cli
from daemon.config import Settings, load_settings
from daemon.engines import configured_embedder, still_engine
from daemon.logs import configure_logging
from daemon.printing import CliError, print_result, print_rows


def _settings(args: argparse.Namespace) -> Settings:
    overrides: dict[str, Any] = {}
    emb: dict[str, Any] = {}
    for key in ("model", "runtime", "device"):
        if getattr(args, key, None):
            emb[key] = getattr(args, key)
    if getattr(args, "flip", False):
        emb["flip"] = True
    if emb:
        base = load_settings(args.config)
        overrides["embedder"] = base.embedder.model_copy(update=emb).model_dump()
    settings = load_settings(args.config, **overrides)
    configure_logging(settings.log_level, settings.log_format)
    return settings


def cmd_models_list(args: argparse.Namespace) -> int:
    from models.registry import EMBEDDERS, LIVENESS_MODELS

    _settings(args)
    rows = [{"name": s.name, "family": "embedder", "dim": s.dim, "input": s.input_size, "description": s.description}
            for s in EMBEDDERS.values()]
    rows += [{"name": s.name, "family": "liveness", "dim": s.classes, "input": s.input_size,
              "description": s.description} for s in LIVENESS_MODELS.values()]
    print_rows(rows, args.json, "{name:<18} {dim:>4}-D  {input}x{input}  {description}")
    return 0


def cmd_models_export(args: argparse.Namespace) -> int:
    from models.export import export_onnx, export_torchscript
    from models.registry import get_spec

    settings = _settings(args)
    spec = get_spec(args.model)
    module = spec.loader(settings.embedder.weights_path, settings.embedder.download)
    out = Path(args.out)
    if args.format == "onnx":
        export_onnx(module, spec.input_size, out)
    else:
        export_torchscript(module, spec.input_size, out)
    print(f"wrote {out} ({args.format}, {spec.name}, input 3x{spec.input_size}x{spec.input_size}, "
          f"{spec.dim}-D output)")
    return 0


def cmd_eval_verify(args: argparse.Namespace) -> int:
    from tools.verify import run_verify

    settings = _settings(args)
    engine = still_engine(settings, "center")
    result = run_verify(engine, args.pairs, args.tune_pairs, args.roc_png)
    print_result(result, args.json)
    return 0


def cmd_eval_liveness(args: argparse.Namespace) -> int:
    from models.detector import MTCNNDetector
    from pipeline.liveness import LivenessScorer, LivenessSettings
    from tools.eval_liveness import read_labels, run_eval_liveness, text_summary

    settings = _settings(args)
    items = read_labels(args.labels)  # a bad CSV fails before any network loads
    exports = settings.cache_dir / "exports"
    detector = MTCNNDetector(settings.detector.to_settings(), runtime=settings.detector.runtime, export_dir=exports)
    weights = Path(args.weights_dir) if args.weights_dir else None
    scorer = LivenessScorer(LivenessSettings(runtime=args.runtime, weights_dir=weights, export_dir=exports))
    result = run_eval_liveness(items, detector, scorer, args.video_frames, args.threshold, args.target_apcer,
                               args.roc_png, progress=not args.json)
    print_result(result if args.json else text_summary(result), args.json)
    return 0


def cmd_bench_embed(args: argparse.Namespace) -> int:
    from tools.bench import bench_embed

    settings = _settings(args)
    result = bench_embed(configured_embedder(settings), args.batch, args.seconds)
    print_result(result, args.json)
    return 0


def _gallery_file(args: argparse.Namespace, settings: Settings) -> Path | None:
    """--gallery, else gallery.path from the settings; a path that is not a file is a one-line error."""
    gallery = args.gallery or settings.gallery.path
    if gallery and not Path(gallery).expanduser().is_file():
        raise CliError(f"gallery file {gallery} does not exist")
    return Path(gallery) if gallery else None


def cmd_bench_soak(args: argparse.Namespace) -> int:
    from daemon.soak import run_soak

    settings = _settings(args)
    result = run_soak(settings, _gallery_file(args, settings), Path(args.source), args.streams, args.seconds,
                      args.warmup)
    print_result(result, args.json)
    return 0


def cmd_analyze(args: argparse.Namespace) -> int:
    from daemon.analyze import run_analyze

    settings = _settings(args)
    result = run_analyze(settings, _gallery_file(args, settings), [Path(v) for v in args.videos], Path(args.out))
    print_result(result, args.json)
    return 0 if result["exit_code"] == 0 else 1


def cmd_attendance_report(args: argparse.Namespace) -> int:
    import datetime as dt

    from daemon.attendance import AttendanceBook, read_roster, report, write_report_csv

    settings = _settings(args)
    a = settings.attendance
    db = Path(args.db) if args.db else a.db
    roster_path = Path(args.roster) if args.roster else a.roster
    if db is None or not Path(db).is_file():
        raise CliError(f"attendance book {db} does not exist" if db else "no attendance book: pass --db FILE or set "
                       "attendance.db in the config")
    day = args.date or dt.date.today().isoformat()
    try:
        dt.date.fromisoformat(day)
    except ValueError:
        raise CliError(f"--date must look like 2026-12-02, got {day!r}") from None
    book = AttendanceBook(Path(db), args.site or a.site)
    try:
        rep = report(book, read_roster(roster_path) if roster_path else [], day)
    finally:
        book.close()
    if args.csv:
        write_report_csv(rep, Path(args.csv))
    if args.json:
        print_result(rep, True)
        return 0
    print(f"{rep['site']} {rep['date']}: {len(rep['present'])} present, {len(rep['absent'])} absent, "
          f"{len(rep['unexpected'])} unexpected")
    for status in ("present", "unexpected"):
        print_rows(rep[status], False, status + "  {identity}  {period}  first seen {first_seen} on {source} "
                   "(score {score})")
    print_rows([{"identity": n} for n in rep["absent"]], False, "absent  {identity}")
    return 0


def cmd_bench_live(args: argparse.Namespace) -> int:
    from daemon.bench_live import run_live

    settings = _settings(args)
    try:
        result = run_live(settings, _gallery_file(args, settings), Path(args.source), args.streams, args.fps,
                          args.seconds, args.size, args.warmup)
    except RuntimeError as exc:
        raise CliError(str(exc)) from None
    print_result(result, args.json)
    return 0


def cmd_bench_pipeline(args: argparse.Namespace) -> int:
    from daemon.bench_pipeline import run_bench

    settings = _settings(args)
    result = run_bench(settings, _gallery_file(args, settings), Path(args.source), args.baseline,
                       args.baseline_frames)
    print_result(result, args.json)
    return 0


def cmd_bench_http(args: argparse.Namespace) -> int:
    from daemon.bench_http import run_bench_http

    settings = _settings(args)
    print_result(run_bench_http(settings, _gallery_file(args, settings), Path(args.source), args.segments,
                                args.segment_seconds, args.warmup), args.json)
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    settings = _settings(args)
    source = "set by --threshold" if args.threshold_given else "1:1 verification point tuned on LFW DevTrain pairs"
    print(f"facestream: same person at similarity >= {args.threshold:g} ({source})", file=sys.stderr)
    engine = still_engine(settings, "largest")
    a, b = engine.embed_files([Path(args.image_a), Path(args.image_b)])
    for r in (a, b):
        if not r.ok:
            raise CliError(f"{r.path}: {r.reason}")
    similarity = float(a.vec @ b.vec)
    distance = float(((a.vec - b.vec) ** 2).sum() ** 0.5)
    result = {"similarity": round(similarity, 4), "distance": round(distance, 4),
              "same_person": similarity >= args.threshold, "threshold": args.threshold,
              "model": engine.embedder.model_id}
    print_result(result, args.json)
    return 0


def cmd_detect(args: argparse.Namespace) -> int:
    from models.detector import MTCNNDetector
    from pipeline.images import ImageError, load_rgb

    settings = _settings(args)
    detector = MTCNNDetector(settings.detector.to_settings())
    rows = []
    for path in args.images:
        try:
            dets = detector.detect([load_rgb(path)])[0]
            rows.append({"path": path, "faces": len(dets),
                         "boxes": [[round(v, 1) for v in d.box] + [round(d.prob, 4)] for d in dets]})
        except ImageError as exc:
            rows.append({"path": path, "faces": None, "error": str(exc)})
    for r in rows:
        print(json.dumps(r) if args.json else f"{r['path']}: {r.get('error') or str(r['faces']) + ' face(s)'}")
    return 0


def cmd_keys_generate(args: argparse.Namespace) -> int:
    from daemon.keys import generate

    _settings(args)
    public, secret = generate(Path(args.out), args.force)
    print_result({"public_key": str(public), "secret_key": str(secret)}, args.json)
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="facestream", description="Real-time face recognition daemon and tools.")
    p.add_argument("--config", help="TOML settings file (FACESTREAM_* environment variables also apply)")
    sub = p.add_subparsers(dest="command", required=True)

    def model_opts(sp: argparse.ArgumentParser, flip: bool = True) -> None:
        sp.add_argument("--model", help="embedding model (see 'facestream models list')")
        sp.add_argument("--runtime", choices=["torch", "torchscript", "onnx"], help="inference runtime")
        sp.add_argument("--device", help="cpu or cuda[:N]")
        if flip:
            sp.add_argument("--flip", action="store_true", help="average embeddings with the mirrored face")

    models = sub.add_parser("models", help="list and export models").add_subparsers(dest="action", required=True)
    ml = models.add_parser("list", help="known embedding models")
    ml.add_argument("--json", action="store_true")
    ml.set_defaults(func=cmd_models_list)
    me = models.add_parser("export", help="export a model to ONNX or TorchScript")
    me.add_argument("--model", required=True)
    me.add_argument("--format", required=True, choices=["onnx", "torchscript"])
    me.add_argument("--out", required=True)
    me.set_defaults(func=cmd_models_export)

    ev = sub.add_parser("eval", help="evaluate accuracy").add_subparsers(dest="action", required=True)
    vf = ev.add_parser("verify", help="pair verification accuracy on an img_a,img_b,same CSV")
    vf.add_argument("--pairs", required=True)
    vf.add_argument("--tune-pairs", help="pairs CSV to tune the threshold on (default: 10-fold in --pairs)")
    vf.add_argument("--roc-png", help="write the ROC curve here")
    vf.add_argument("--json", action="store_true")
    model_opts(vf)
    vf.set_defaults(func=cmd_eval_verify)
    lv = ev.add_parser("liveness", help="APCER/BPCER of passive liveness on a filename,label[,kind] CSV of images "
                       "and videos (label live or attack)")
    lv.add_argument("--labels", required=True)
    lv.add_argument("--video-frames", type=int, default=10, help="frames sampled evenly per video (default 10)")
    lv.add_argument("--threshold", type=float, help="live when the score reaches this (default 0.5, published)")
    lv.add_argument("--target-apcer", type=float, default=0.10, help="report the threshold for this APCER")
    lv.add_argument("--weights-dir", help="folder with the published .pth files (default: cache, then download)")
    lv.add_argument("--runtime", choices=["onnx", "torch"], default="onnx")
    lv.add_argument("--roc-png", help="write the ROC curve here")
    lv.add_argument("--json", action="store_true")
    lv.set_defaults(func=cmd_eval_liveness)

    bench = sub.add_parser("bench", help="benchmarks").add_subparsers(dest="action", required=True)
    be = bench.add_parser("embed", help="embedding throughput")
    be.add_argument("--batch", type=int, default=32)
    be.add_argument("--seconds", type=float, default=5.0)
    be.add_argument("--json", action="store_true")
    model_opts(be)
    be.set_defaults(func=cmd_bench_embed)
    bp = bench.add_parser("pipeline", help="daemon frames/s on a file vs decoding alone and the seed-style loop")
    bp.add_argument("--source", required=True, help="video file")
    bp.add_argument("--gallery", help="gallery file to match against")
    bp.add_argument("--baseline", action="store_true", help="also time facenet-pytorch's MTCNN on every frame "
                    "plus one embedding per face")
    bp.add_argument("--baseline-frames", type=int, help="time the baseline on the first N frames only")
    bp.add_argument("--json", action="store_true")
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
    _live_args(bl, "video file to serve", 1, 30.0, 5.0, "seconds after every stream's first frame before measuring")
    bl.add_argument("--fps", type=float, help="serve at this frame rate (default: the file's own)")
    bl.add_argument("--size", help="serve scaled to WxH, e.g. 1280x720 (default: the file's own)")
    bl.set_defaults(func=cmd_bench_live)
    bs = bench.add_parser("soak", help="looped copies of a file as live cameras at real-time rate: RSS growth, "
                          "queue depths, drops, latency")
    _live_args(bs, "video file, read N times over as live cameras", 4, 600.0, 60.0,
               "seconds before RSS growth is measured from")
    bs.set_defaults(func=cmd_bench_soak)

    an = sub.add_parser("analyze", help="who appears where in videos: events, timeline, best frames, annotated "
                        "MP4s and an HTML report in one folder")
    an.add_argument("videos", nargs="+", help="video files")
    an.add_argument("--gallery", help="gallery file to match against")
    an.add_argument("--out", required=True, help="folder for the report (created)")
    an.add_argument("--json", action="store_true")
    an.set_defaults(func=cmd_analyze)

    att = sub.add_parser("attendance", help="attendance books").add_subparsers(dest="action", required=True)
    ar = att.add_parser("report", help="who was present, absent and unexpected on a day")
    ar.add_argument("--db", help="attendance book (default: attendance.db from the config)")
    ar.add_argument("--roster", help="roster CSV (default: attendance.roster from the config)")
    ar.add_argument("--site", help="site name (default: attendance.site from the config)")
    ar.add_argument("--date", help="day, YYYY-MM-DD (default: today)")
    ar.add_argument("--csv", help="also write the report as CSV here (0600)")
    ar.add_argument("--json", action="store_true")
    ar.set_defaults(func=cmd_attendance_report)

    cp = sub.add_parser("compare", help="are two photos the same person?")
    cp.add_argument("image_a")
    cp.add_argument("image_b")
    cp.add_argument("--threshold", type=float, help="cosine similarity threshold (default 0.91, LFW-tuned)")
    cp.add_argument("--json", action="store_true")
    model_opts(cp)
    cp.set_defaults(func=cmd_compare)

    def run(func):
        return lambda args: func(args, _settings(args), print_result)

    gallery_cli.add_commands(sub, model_opts, run)
    gallery_cli.add_identify(ev, run)
    run_cli.add_commands(sub, run)

    dt = sub.add_parser("detect", help="count faces in images")
    dt.add_argument("images", nargs="+")
    dt.add_argument("--json", action="store_true")
    dt.set_defaults(func=cmd_detect)

    keys = sub.add_parser("keys", help="CURVE keys for the ZeroMQ publisher").add_subparsers(dest="action",
                                                                                            required=True)
    kg = keys.add_parser("generate", help="write server.key (public, for subscribers) and server.key_secret "
                         "(for sinks.zmq_secret_key), both mode 0600")
    kg.add_argument("--out", required=True, help="folder to write the key pair in")
    kg.add_argument("--force", action="store_true", help="replace an existing key pair")
    kg.add_argument("--json", action="store_true")
    kg.set_defaults(func=cmd_keys_generate)
    _config_everywhere(p)
    return p


def _live_args(p: argparse.ArgumentParser, source_help: str, streams: int, seconds: float, warmup: float,
               warmup_help: str) -> None:
    """The options ``bench live`` and ``bench soak`` share: N live copies of one file for a while."""
    p.add_argument("--source", required=True, help=source_help)
    p.add_argument("--streams", type=int, default=streams)
    p.add_argument("--seconds", type=float, default=seconds, help="measured seconds")
    p.add_argument("--warmup", type=float, default=warmup, help=warmup_help)
    p.add_argument("--gallery", help="gallery file to match against")
    p.add_argument("--json", action="store_true")


def _config_everywhere(parser: argparse.ArgumentParser, top: bool = True) -> None:
    """Accept ``--config`` after the subcommand too (``facestream run --config F``). SUPPRESS keeps a value
    given before the subcommand when it is not repeated after it."""
    if not top:
        parser.add_argument("--config", default=argparse.SUPPRESS, help="TOML settings file")
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in dict.fromkeys(action.choices.values()):  # aliases share a parser
                _config_everywhere(child, top=False)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "compare":
        args.threshold_given = args.threshold is not None
        args.threshold = 0.91 if args.threshold is None else args.threshold
    try:
        return int(args.func(args))
    except KeyboardInterrupt:
        print("facestream: interrupted", file=sys.stderr)
        return 130
    except (CliError, ValueError, FileNotFoundError, RuntimeError, OSError, sqlite3.Error) as exc:
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        print(f"facestream: error: {msg}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
