"""``facestream gallery reject|merge|split``: corrections of who is who (argument wiring only).

``reject`` takes the event from an event log (its ``event_id``, or its line number in the file) and the
face from ``--photo``: the log never holds embeddings (events go to other hosts and brokers), and the
daemon's memory of the faces it named lives only while it runs (``POST /v1/events/{seq}/reject``).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import Any

from daemon.cli.common import gallery_location
from daemon.config import Settings


def _gallery(args: argparse.Namespace, settings: Settings) -> Any:
    from pipeline.gallery import Gallery

    path = gallery_location(args, settings)
    if path is None:
        raise ValueError("no gallery given: pass --gallery FILE (or a postgresql:// URL) or set gallery.path in "
                         "the config")
    return Gallery.open(path)


def find_event(path: str, wanted: str) -> tuple[int, dict]:
    """(line number, body) of the event ``wanted`` (an ``event_id``, or a line number) in the log at ``path``."""
    from daemon.sinks.jsonl import read_log

    by_line = int(wanted) if wanted.isascii() and wanted.isdigit() else None
    for number, (_, body) in enumerate(read_log(path), start=1):
        if body.get("event_id") == wanted or number == by_line:
            return number, body
    raise ValueError(f"no event {wanted[:60]!r} in {path} (give an event_id, or a line number of the file)")


def cmd_reject(args: argparse.Namespace, settings: Settings, out: Callable[[dict, bool], None]) -> int:
    number, body = find_event(args.events_jsonl, args.event)
    if body.get("topic") != "face.recognized" or not body.get("identity"):
        raise ValueError(f"event {args.event} ({args.events_jsonl}:{number}) is a {body.get('topic')} that named "
                         "nobody: only a face.recognized can be rejected")
    gallery = _gallery(args, settings)  # a bad gallery fails before torch is imported
    if body["identity"] not in gallery.names():
        raise ValueError(f"event {args.event} named {body['identity']!r}, who is not in {gallery.path} (erased or "
                         "renamed since)")
    from daemon.engines import engine_for_gallery
    from pipeline.gallery.cache import EmbeddingCache
    from pipeline.gallery.enrol import QualityGates
    from pipeline.gallery.negatives import reject

    engine = engine_for_gallery(settings, gallery.model_id, EmbeddingCache(None), "dominant",
                                f"gallery {gallery.path}")
    face = engine.embed_files([Path(args.photo)])[0]
    g = settings.gallery
    why = face.reason if face.vec is None else QualityGates(g.min_face_px, g.min_blur, g.min_prob).check(face.info)
    if face.vec is None or why:
        raise ValueError(f"{args.photo}: {why}")
    where = f"{Path(args.events_jsonl).name}:{number} event {body.get('event_id')}"
    result = reject(gallery, body["identity"], face.vec, f"{where} photo {Path(args.photo).name}")
    out({"event": body.get("event_id"), "line": number, **result}, args.json)
    return 0


def cmd_merge(args: argparse.Namespace, settings: Settings, out: Callable[[dict, bool], None]) -> int:
    from pipeline.gallery.regroup import merge

    if args.into == args.other:  # before any file is opened
        raise ValueError(f"cannot merge {args.into!r} into itself: give two different identities")
    out(merge(_gallery(args, settings), args.into, args.other, settings.gallery.target_far),
        args.json)
    return 0


def cmd_split(args: argparse.Namespace, settings: Settings, out: Callable[[dict, bool], None]) -> int:
    from pipeline.gallery.regroup import parse_positions, split

    positions = parse_positions(args.templates)
    out(split(_gallery(args, settings), args.name, positions, args.new_name,
              settings.gallery.target_far), args.json)
    return 0


def add_commands(gal: Any, common: Callable[[argparse.ArgumentParser], None], run: Callable) -> None:
    """Register ``gallery reject|merge|split`` on the ``gallery`` subcommands."""
    rj = gal.add_parser("reject", help="not this person: a face.recognized event's face becomes a negative of the "
                        "identity it named, whose own threshold rises above it")
    rj.add_argument("--event", required=True, help="the event: its event_id, or its line number in the log")
    rj.add_argument("--events-jsonl", required=True, help="the daemon's event log (sinks.jsonl)")
    rj.add_argument("--photo", required=True, help="a photo of the rejected face (the log holds no faces)")
    common(rj)
    rj.set_defaults(func=run(cmd_reject))
    mg = gal.add_parser("merge", help="merge identity B into A (one person under two names): B's templates go to "
                        "A, B is removed; one transaction, recalibrated")
    mg.add_argument("into", metavar="A")
    mg.add_argument("other", metavar="B")
    common(mg)
    mg.set_defaults(func=run(cmd_merge))
    sp = gal.add_parser("split", help="split templates of A off into a new identity (two people under one name)")
    sp.add_argument("name", metavar="A")
    sp.add_argument("--templates", required=True, help="positions to move, e.g. 3,4 (gallery list --templates)")
    sp.add_argument("--name", dest="new_name", required=True, help="the new identity's name")
    common(sp)
    sp.set_defaults(func=run(cmd_split))
