"""``facestream compare A B`` and ``facestream detect IMG...``: one-off questions about photos."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from daemon.cli.common import model_opts, settings_from
from daemon.cli.printing import CliError, print_result
from daemon.engines import still_engine


def cmd_compare(args: argparse.Namespace) -> int:
    settings = settings_from(args)
    given = args.threshold is not None
    args.threshold = 0.91 if args.threshold is None else args.threshold
    source = "set by --threshold" if given else "1:1 verification point tuned on LFW DevTrain pairs"
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

    settings = settings_from(args)
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


def add_commands(sub: Any) -> None:
    cp = sub.add_parser("compare", help="are two photos the same person?")
    cp.add_argument("image_a")
    cp.add_argument("image_b")
    cp.add_argument("--threshold", type=float, help="cosine similarity threshold (default 0.91, LFW-tuned)")
    cp.add_argument("--json", action="store_true")
    model_opts(cp)
    cp.set_defaults(func=cmd_compare)

    dt = sub.add_parser("detect", help="count faces in images")
    dt.add_argument("images", nargs="+")
    dt.add_argument("--json", action="store_true")
    dt.set_defaults(func=cmd_detect)
