"""What the command modules share: settings from the command line, the options several commands take, and
the gallery-file check."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import Any

from daemon.cli.printing import CliError, print_result
from daemon.config import Settings, load_settings
from daemon.logs import configure_logging


def settings_from(args: argparse.Namespace) -> Settings:
    overrides: dict[str, Any] = {}
    emb: dict[str, Any] = {}
    for key in ("model", "runtime", "device", "precision"):
        if getattr(args, key, None):
            emb[key] = getattr(args, key)
    if getattr(args, "flip", False):
        emb["flip"] = True
    if emb:
        base = load_settings(args.config)
        overrides["embedder"] = base.embedder.model_copy(update=emb).model_dump()
        if "device" in emb:  # one --device moves both networks
            overrides["detector"] = base.detector.model_copy(update={"device": emb["device"]}).model_dump()
    settings = load_settings(args.config, **overrides)
    configure_logging(settings.log_level, settings.log_format)
    return settings


def with_settings(func: Callable[[argparse.Namespace, Settings, Callable[[dict, bool], None]], int]
                  ) -> Callable[[argparse.Namespace], int]:
    """A command that takes (args, settings, print_result)."""
    return lambda args: func(args, settings_from(args), print_result)


def gallery_location(args: argparse.Namespace, settings: Settings) -> Path | str | None:
    """--gallery, else gallery.path from the settings: a file's path, or a database URL as given (a password in
    it is refused when it is opened)."""
    from pipeline.gallery.store import is_url

    gallery = getattr(args, "gallery", None) or settings.gallery.path
    if not gallery:
        return None
    return str(gallery) if is_url(gallery) else Path(gallery).expanduser()


def gallery_file(args: argparse.Namespace, settings: Settings) -> Path | str | None:
    """:func:`gallery_location`; a path that is not a file is a one-line error."""
    gallery = gallery_location(args, settings)
    if isinstance(gallery, Path) and not gallery.is_file():
        raise CliError(f"gallery file {gallery} does not exist")
    return gallery


def model_opts(sp: argparse.ArgumentParser, flip: bool = True) -> None:
    sp.add_argument("--model", help="embedding model (see 'facestream models list')")
    sp.add_argument("--runtime", choices=["torch", "torchscript", "onnx"], help="inference runtime")
    sp.add_argument("--device", help="cpu or cuda[:N], for the embedder and the detector")
    sp.add_argument("--precision", choices=["fp32", "fp16"], help="the embedder's weights and activations")
    if flip:
        sp.add_argument("--flip", action="store_true", help="average embeddings with the mirrored face")


def device_opts(sp: argparse.ArgumentParser) -> None:
    """Where the networks run, for benchmarks that take the model from the gallery."""
    sp.add_argument("--device", help="cpu or cuda[:N], for the embedder and the detector")
    sp.add_argument("--precision", choices=["fp32", "fp16"], help="the embedder's weights and activations")


def live_args(p: argparse.ArgumentParser, source_help: str, streams: int, seconds: float, warmup: float,
               warmup_help: str) -> None:
    """The options ``bench live`` and ``bench soak`` share: N live copies of one file for a while."""
    p.add_argument("--source", required=True, help=source_help)
    p.add_argument("--streams", type=int, default=streams)
    p.add_argument("--seconds", type=float, default=seconds, help="measured seconds")
    p.add_argument("--warmup", type=float, default=warmup, help=warmup_help)
    p.add_argument("--gallery", help="gallery file to match against")
    p.add_argument("--json", action="store_true")
