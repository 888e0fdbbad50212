"""``facestream run`` and ``facestream events``: argument wiring for the daemon and a subscriber."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from daemon.cli.common import gallery_location, with_settings
from daemon.config import Settings, with_overrides


def cmd_run(args: argparse.Namespace, settings: Settings, out: Any) -> int:
    from daemon.profiles import build_daemon

    sinks: dict[str, Any] = {}
    if args.events_jsonl:
        sinks["jsonl"] = Path(args.events_jsonl)
    if args.zmq is not None:
        sinks["zmq"] = args.zmq or None
    if args.stdout:
        sinks["stdout"] = True
    if args.timeline_csv:
        sinks["timeline_csv"] = Path(args.timeline_csv)
    if args.annotate_dir:
        sinks["annotate_dir"] = Path(args.annotate_dir)
    if sinks:  # validated like the file: --zmq tcp://0.0.0.0:P meets the same key check
        settings = with_overrides(settings, sinks=sinks)
    if args.mqtt is not None:  # a password in it is refused: it would show in every process list
        settings = with_overrides(settings, mqtt={"url": args.mqtt or None})
    if args.http:  # and --http 0.0.0.0:P meets the token check
        settings = with_overrides(settings, http={"listen": args.http})
    if args.source:
        settings = settings.model_copy(update={"sources": list(args.source)})
    gallery = gallery_location(args, settings)
    if isinstance(gallery, Path) and gallery.is_dir():
        raise ValueError(f"gallery {gallery} is a directory, not a gallery file")
    if isinstance(gallery, Path) and not gallery.is_file():
        raise ValueError(f"gallery file {gallery} does not exist")
    options = {"live": True, "realtime": True, "loop": True} if args.loop else (
        {"realtime": True} if args.realtime else None)
    from daemon.profiles.drift import attach_drift
    from daemon.profiles.unknowns import attach_unknowns, unknowns_location
    from daemon.stores.drift import drift_location
    from pipeline.private_files import check_output

    unknowns_location(settings, gallery)  # a bad [unknowns] stops here, before any file is opened
    if (drift_file := drift_location(settings, gallery)) is not None:
        state = settings.paths.state_dir.expanduser()
        if state in drift_file.parents and not state.is_dir():  # a database gallery's drift file: the one
            state.mkdir(mode=0o700, parents=True)  # folder made for the user, as for the other outputs
        check_output(drift_file, "drift.path")
    daemon, parts = build_daemon(settings, gallery, options)
    unknowns = attach_unknowns(daemon)
    drift = attach_drift(daemon)
    if settings.http.listen:
        from daemon.http.wiring import attach_http

        attach_http(daemon, unknowns, drift, parts.attendance)
    return daemon.run()


def cmd_serve(args: argparse.Namespace, settings: Settings, out: Any) -> int:
    """The HTTP API and page with no source: recognise photos and manage the gallery (created when missing)."""
    from daemon.profiles import build_daemon

    settings = with_overrides(settings, http={"listen": args.http or settings.http.listen or "127.0.0.1:8080"},
                              sinks={"zmq": None} if args.zmq is None else {"zmq": args.zmq or None})
    gallery = gallery_location(args, settings)
    if gallery is None:
        raise ValueError("no gallery given: pass --gallery FILE (created when it does not exist)")
    if isinstance(gallery, Path) and gallery.is_dir():
        raise ValueError(f"gallery {gallery} is a directory, not a gallery file")
    if not isinstance(gallery, Path) or not gallery.exists():  # a database gets one when it holds none
        from models.registry import get_spec, model_id_for
        from pipeline.gallery import Gallery

        e = settings.embedder
        Gallery.create(gallery, model_id_for(e.model, e.flip), get_spec(e.model).dim).close()
    from daemon.http.wiring import attach_http
    from daemon.profiles.drift import attach_drift
    from daemon.profiles.unknowns import attach_unknowns

    daemon, parts = build_daemon(settings.model_copy(update={"sources": []}), gallery)
    return attach_http(daemon, attach_unknowns(daemon, create=False), attach_drift(daemon), parts.attendance).run()


def cmd_events(args: argparse.Namespace, settings: Settings, out: Any) -> int:
    from daemon.sinks.jsonl import read_log
    from daemon.sinks.stdout import format_event
    from daemon.sinks.zeromq import subscribe

    if args.from_log:  # a torn last line (the daemon was killed mid-write) is skipped with a warning
        for topic, body in read_log(args.from_log, args.topic or ()):
            print(json.dumps(body) if args.json else format_event(topic, body), flush=True)
        return 0
    addr = args.connect or settings.sinks.zmq or "tcp://127.0.0.1:5556"
    with subscribe(addr, args.topic or (), timeout_s=args.timeout, server_key=args.server_key) as sub:
        for topic, body in sub:
            print(json.dumps(body) if args.json else format_event(topic, body), flush=True)
    return 0


def add_commands(sub: Any) -> None:
    run = with_settings
    r = sub.add_parser("run", help="run the streaming daemon")
    r.add_argument("--source", action="append", help="file, camera index, rtsp:// or http(s):// URL (repeatable)")
    r.add_argument("--gallery", help="gallery file, or postgresql://USER@HOST:PORT/DB (followed live), to match "
                   "against")
    r.add_argument("--events-jsonl", help="append events to this JSON-lines file")
    r.add_argument("--zmq", help="ZeroMQ PUB bind address ('' for none; default tcp://127.0.0.1:5556)")
    r.add_argument("--stdout", action="store_true", help="print a readable line per event")
    r.add_argument("--mqtt", help="publish events to this MQTT broker, mqtt://HOST:PORT or mqtts://HOST:PORT "
                   "(the password goes in mqtt.password_file or FACESTREAM_MQTT_PASSWORD, never here)")
    r.add_argument("--timeline-csv", help="file sources: write a per-identity timeline CSV at the end")
    r.add_argument("--annotate-dir", help="file sources: write <source>.annotated.mp4 in this folder")
    r.add_argument("--http", help="serve the HTTP API, web page and /metrics on HOST:PORT (127.0.0.1:8080); "
                   "another address than loopback needs http.token_file")
    r.add_argument("--realtime", action="store_true", help="read files at their frame rate, as a camera would "
                   "deliver them")
    r.add_argument("--loop", action="store_true", help="play files over and over at their frame rate, as live "
                   "cameras (stale frames dropped); stop with SIGINT/SIGTERM")
    r.set_defaults(func=run(cmd_run))
    sv = sub.add_parser("serve", help="the HTTP API and web page without sources: recognise photos, manage the "
                        "gallery")
    sv.add_argument("--gallery", help="gallery file or postgresql:// URL (created when it does not exist)")
    sv.add_argument("--http", help="HOST:PORT (default: http.listen from the config, else 127.0.0.1:8080)")
    sv.add_argument("--zmq", help="also publish events on this ZeroMQ address (default: none)")
    sv.set_defaults(func=run(cmd_serve))
    e = sub.add_parser("events", help="subscribe to a daemon's events and print them")
    e.add_argument("--connect", help="ZeroMQ address (default: sinks.zmq from the config)")
    e.add_argument("--topic", action="append", help="topic prefix to keep (repeatable)")
    e.add_argument("--timeout", type=float, help="exit after this many seconds without an event")
    e.add_argument("--server-key", help="the daemon's public CURVE key file (server.key) when it publishes "
                   "encrypted")
    e.add_argument("--from-log", help="read a JSON-lines event log instead of subscribing")
    e.add_argument("--json", action="store_true", help="print raw JSON bodies")
    e.set_defaults(func=run(cmd_events))
