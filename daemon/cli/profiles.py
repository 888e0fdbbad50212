"""``facestream analyze`` and ``facestream attendance report``: the video-analysis and attendance profiles."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from daemon.cli.common import gallery_file, settings_from
from daemon.cli.printing import CliError, print_result, print_rows


def cmd_analyze(args: argparse.Namespace) -> int:
    settings = settings_from(args)
    if args.workers < 1:
        raise CliError(f"--workers must be 1 or more, got {args.workers}")
    if args.ray is not None and args.workers != 1:
        raise CliError("--workers is for the local pool: with --ray the cluster's CPUs decide (local:N for N)")
    from daemon.profiles.analyze_chunks import check_chunking

    try:
        check_chunking(args.chunk_s, args.chunk_overlap_s)
    except ValueError as exc:
        raise CliError(str(exc)) from None
    gallery, videos, out = gallery_file(args, settings), [Path(v) for v in args.videos], Path(args.out)
    if args.ray is None and args.workers == 1:
        from daemon.profiles.analyze import run_analyze

        result = run_analyze(settings, gallery, videos, out)
    else:
        from daemon.profiles.analyze_driver import run_jobs

        result = run_jobs(settings, gallery, videos, out, args.workers, args.ray, args.chunk_s, args.chunk_overlap_s)
    print_result(result, args.json)
    return 0 if result["exit_code"] == 0 else 1


def cmd_attendance_report(args: argparse.Namespace) -> int:
    import datetime as dt

    from daemon.config.profiles import read_roster
    from daemon.profiles.attendance import report, write_report_csv
    from daemon.stores.attendance import open_book

    settings = settings_from(args)
    a = settings.attendance
    from pipeline.pg import is_pg_url

    db = args.db or a.db
    roster_path = Path(args.roster) if args.roster else a.roster
    if db is not None and not is_pg_url(db):
        db = Path(db)
    if db is None or (isinstance(db, Path) and not db.is_file()):
        raise CliError(f"attendance book {db} does not exist" if db else "no attendance book: pass --db FILE or set "
                       "attendance.db in the config")
    day = args.date or dt.date.today().isoformat()
    try:
        dt.date.fromisoformat(day)
    except ValueError:
        raise CliError(f"--date must look like 2026-12-02, got {day!r}") from None
    book = open_book(db, args.site or a.site, readonly=True)  # a report never writes
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


def add_commands(sub: Any) -> None:
    an = sub.add_parser("analyze", help="who appears where in videos: events, timeline, best frames, annotated "
                        "MP4s and an HTML report in one folder")
    an.add_argument("videos", nargs="+", help="video files")
    an.add_argument("--gallery", help="gallery file to match against")
    an.add_argument("--out", required=True, help="folder for the report (created)")
    an.add_argument("--workers", type=int, default=1, help="videos analysed at once by a local pool of processes "
                    "(one CPU thread each; default 1: all videos in this process)")
    an.add_argument("--ray", metavar="ADDRESS", help="run one task per video on Ray (extra [cluster]): auto, "
                    "local[:N] (this machine, N CPUs) or HOST:PORT of a running cluster; the videos must be "
                    "readable at the same path on every node")
    an.add_argument("--chunk-s", type=float, default=300.0, metavar="S", help="with --workers or --ray: a video "
                    "longer than 1.5 S is split at keyframes into chunks of about S media seconds, analysed apart "
                    "and stitched back (tracks crossing a boundary joined; default 300, 0 = never split)")
    an.add_argument("--chunk-overlap-s", type=float, default=2.0, metavar="S", help="seconds each chunk reads "
                    "into the next, where its tracks are matched to the next chunk's (default 2: four scans; at "
                    "most half of --chunk-s)")
    an.add_argument("--json", action="store_true")
    an.set_defaults(func=cmd_analyze)

    att = sub.add_parser("attendance", help="attendance books").add_subparsers(dest="action", required=True)
    ar = att.add_parser("report", help="who was present, absent and unexpected on a day")
    ar.add_argument("--db", help="attendance book: a file, or postgresql://USER@HOST:PORT/DB for the whole site "
                    "(default: attendance.db from the config)")
    ar.add_argument("--roster", help="roster CSV (default: attendance.roster from the config)")
    ar.add_argument("--site", help="site name (default: attendance.site from the config)")
    ar.add_argument("--date", help="day, YYYY-MM-DD (default: today)")
    ar.add_argument("--csv", help="also write the report as CSV here (0600)")
    ar.add_argument("--json", action="store_true")
    ar.set_defaults(func=cmd_attendance_report)
