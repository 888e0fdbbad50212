"""``facestream models list|export``: the embedders we know, and exporting one to ONNX or TorchScript."""

from __future__ import annotations

import argparse
from typing import Any

from daemon.cli.common import settings_from
from daemon.cli.printing import print_rows


def cmd_models_list(args: argparse.Namespace) -> int:
    from models.registry import EMBEDDERS, LIVENESS_MODELS

    settings_from(args)
    rows = [{"name": s.name, "family": "embedder", "dim": s.dim, "input": s.input_size, "description": s.description}
            for s in EMBEDDERS.values()]
    rows += [{"name": s.name, "family": "liveness", "dim": s.classes, "input": s.input_size,
              "description": s.description} for s in LIVENESS_MODELS.values()]
    print_rows(rows, args.json, "{name:<18} {dim:>4}-D  {input}x{input}  {description}")
    return 0


def cmd_models_export(args: argparse.Namespace) -> int:
    from models.export import export_onnx, export_torchscript
    from models.registry import get_spec
    from pipeline.private_files import check_output

    settings = settings_from(args)
    spec = get_spec(args.model)
    out = check_output(args.out, "models export --out")  # like every output: its folder must exist
    module = spec.loader(settings.embedder.weights_path, settings.embedder.download)
    if args.format == "onnx":
        export_onnx(module, spec.input_size, out)
    else:
        export_torchscript(module, spec.input_size, out)
    print(f"wrote {out} ({args.format}, {spec.name}, input 3x{spec.input_size}x{spec.input_size}, "
          f"{spec.dim}-D output)")
    return 0


def add_commands(sub: Any) -> None:
    models = sub.add_parser("models", help="list and export models").add_subparsers(dest="action", required=True)
    ml = models.add_parser("list", help="known embedding models")
    ml.add_argument("--json", action="store_true")
    ml.set_defaults(func=cmd_models_list)
    me = models.add_parser("export", help="export a model to ONNX or TorchScript")
    me.add_argument("--model", required=True)
    me.add_argument("--format", required=True, choices=["onnx", "torchscript"])
    me.add_argument("--out", required=True)
    me.set_defaults(func=cmd_models_export)
