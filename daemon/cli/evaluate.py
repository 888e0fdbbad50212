"""``facestream eval verify|identify``: accuracy of the model on pairs, and of a gallery on probe photos."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from daemon.cli.common import model_opts, settings_from, with_settings
from daemon.cli.gallery import _gallery_path
from daemon.cli.printing import print_result
from daemon.config import Settings
from daemon.engines import check_gallery_model, engine_for_gallery, still_engine


def cmd_eval_verify(args: argparse.Namespace) -> int:
    from tools.verify import run_verify

    settings = settings_from(args)
    engine = still_engine(settings, "center")
    result = run_verify(engine, args.pairs, args.tune_pairs, args.roc_png)
    print_result(result, args.json)
    return 0


def cmd_identify(args: argparse.Namespace, settings: Settings, out: Callable[[dict, bool], None]) -> int:
    from pipeline.gallery import Gallery

    gallery = Gallery.open(_gallery_path(args, settings))  # a bad file or model fails before torch is imported
    if gallery.model_id:
        check_gallery_model(gallery.model_id, f"gallery {gallery.path}")
    from pipeline.gallery.cache import EmbeddingCache
    from pipeline.gallery.operating_point import gallery_point
    from pipeline.gallery.photo_list import collect_sources
    from pipeline.match import make_matcher
    from tools.identify import run_identify

    people = gallery.identities()
    if not people:
        raise ValueError(f"gallery {gallery.path} has no identities")
    kind = args.matcher or settings.gallery.matcher
    matcher = make_matcher(kind, people, augment=settings.gallery.augment)
    point = gallery_point(gallery, people, kind, settings.gallery.target_far, args.threshold, args.margin)
    print(f"facestream: matching at {point.describe()}", file=sys.stderr)
    probes = collect_sources(args.probes, args.role, strict=False)
    if args.unknown_probes:
        strangers = collect_sources(args.unknown_probes, strict=False)
        if clash := sorted({s.identity for s in strangers} & set(gallery.names())):
            raise ValueError(f"{args.unknown_probes}: {', '.join(clash[:5])} enrolled; unknown probes must show "
                             "people who are not in the gallery")
        probes = probes + strangers
    engine = engine_for_gallery(settings, gallery.model_id, EmbeddingCache(settings.cache_dir / "embeddings.sqlite"),
                                "center", f"gallery {gallery.path}")
    result = run_identify(engine, matcher, set(gallery.names()), probes, point.threshold, point.margin,
                          Path(args.report) if args.report else None, point.own)
    result["operating_point"] = point.source
    out(result, args.json)
    return 0


def cmd_eval_liveness(args: argparse.Namespace) -> int:
    from models.detector import MTCNNDetector
    from pipeline.liveness import LivenessScorer, LivenessSettings
    from tools.eval_liveness import read_labels, run_eval_liveness, text_summary

    settings = settings_from(args)
    items = read_labels(args.labels)  # a bad CSV fails before any network loads
    exports = settings.cache_dir / "exports"
    detector = MTCNNDetector(settings.detector.to_settings(), runtime=settings.detector.runtime, export_dir=exports)
    weights = Path(args.weights_dir) if args.weights_dir else None
    scorer = LivenessScorer(LivenessSettings(runtime=args.runtime, weights_dir=weights, export_dir=exports))
    result = run_eval_liveness(items, detector, scorer, args.video_frames, args.threshold, args.target_apcer,
                               args.roc_png, progress=not args.json)
    print_result(result if args.json else text_summary(result), args.json)
    return 0


def _add_liveness(ev: Any) -> None:
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


def add_commands(sub: Any) -> None:
    ev = sub.add_parser("eval", help="evaluate accuracy").add_subparsers(dest="action", required=True)
    vf = ev.add_parser("verify", help="pair verification accuracy on an img_a,img_b,same CSV")
    vf.add_argument("--pairs", required=True)
    vf.add_argument("--tune-pairs", help="pairs CSV to tune the threshold on (default: 10-fold in --pairs)")
    vf.add_argument("--roc-png", help="write the ROC curve here")
    vf.add_argument("--json", action="store_true")
    model_opts(vf)
    vf.set_defaults(func=cmd_eval_verify)
    i = ev.add_parser("identify", help="top-1/top-5 and open-set TAR/FAR of a gallery on probe photos")
    i.add_argument("--gallery", help="gallery file")
    i.add_argument("--probes", required=True, help="folder per identity, or CSV filename,identity[,role]")
    i.add_argument("--unknown-probes", help="folder or CSV of photos of people NOT in the gallery (open-set FAR)")
    i.add_argument("--role", help="with a CSV: only rows whose role column equals this")
    i.add_argument("--report", help="folder for predictions.csv, per_identity.csv, failed.csv and plots")
    i.add_argument("--matcher", choices=["centroid", "svm"])
    i.add_argument("--threshold", type=float, help="override the gallery's calibrated threshold")
    i.add_argument("--margin", type=float, help="override the gallery's calibrated margin")
    i.add_argument("--json", action="store_true")
    i.set_defaults(func=with_settings(cmd_identify))
    _add_liveness(ev)
