"""Attendance over two cameras of one site: each rostered person marked once, the report right."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from cli_helpers import REPO

from daemon.config import load_settings
from daemon.config.profiles import parse_sessions, read_roster
from daemon.profiles import build_daemon
from daemon.profiles.attendance import period_of

CLIPS = ["face_recognition_examples/video/short_hamilton_clip.mp4", "videos/known_identity/obama_speech.mp4"]


def _run(tmp_path: Path, data_dir: Path, gallery: Path, book: Path, roster: Path, name: str) -> list[dict]:
    out = tmp_path / f"{name}.jsonl"
    settings = load_settings(None, sources=[str(data_dir / c) for c in CLIPS], embedder={"runtime": "torch"},
                             sinks={"jsonl": str(out), "zmq": None},
                             attendance={"db": str(book), "roster": str(roster), "site": "hq"})
    assert build_daemon(settings, gallery)[0].run(install_signals=False) == 0
    return [json.loads(line) for line in out.read_text().splitlines()]


def test_two_cameras_mark_each_person_once_and_the_report_is_right(tmp_path, data_dir, stills_gallery) -> None:
    roster = tmp_path / "roster.csv"
    roster.write_text("identity\nlin_manuel_miranda\nbarack_obama\njoe_biden\n")
    book = tmp_path / "attendance.sqlite"
    events = _run(tmp_path, data_dir, stills_gallery, book, roster, "day")
    recognized = [e["identity"] for e in events if e["topic"] == "face.recognized"]
    assert recognized.count("lin_manuel_miranda") >= 2  # the clip names him in two shots ...
    marked = [e for e in events if e["topic"] == "attendance.marked"]
    assert sorted(e["identity"] for e in marked) == ["barack_obama", "lin_manuel_miranda"]  # ... marked once
    assert all(e["on_roster"] and e["site"] == "hq" for e in marked)
    assert (book.stat().st_mode & 0o777) == 0o600
    again = _run(tmp_path, data_dir, stills_gallery, book, roster, "again")  # a restart the same day
    assert [e for e in again if e["topic"] == "attendance.marked"] == []
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path / "cache")}
    out = subprocess.run([sys.executable, "-c", "import sys; from daemon.cli import main; sys.exit(main(sys.argv[1:]))",
                          "attendance", "report", "--db", str(book), "--roster", str(roster), "--site", "hq",
                          "--csv", str(tmp_path / "day.csv"), "--json"], cwd=REPO, capture_output=True, text=True,
                         env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    rep = json.loads(out.stdout.strip().splitlines()[-1])
    assert rep["date"] == dt.date.today().isoformat()
    assert sorted(m["identity"] for m in rep["present"]) == ["barack_obama", "lin_manuel_miranda"]
    assert rep["absent"] == ["joe_biden"] and rep["unexpected"] == []
    rows = (tmp_path / "day.csv").read_text().splitlines()
    assert rows[0].startswith("date,identity,status") and len(rows) == 4 and "joe_biden,absent" in rows[3]


def test_sessions_split_the_day_and_bad_ones_are_refused() -> None:
    s = parse_sessions(["08:00-12:00", "13:00-17:30"])
    at = dt.datetime(2026, 12, 2, 9, 15).timestamp()
    assert period_of(at, s) == "2026-12-02 08:00-12:00"
    assert period_of(dt.datetime(2026, 12, 2, 12, 30).timestamp(), s) is None  # lunch: no session
    assert period_of(at, []) == "2026-12-02"
    with pytest.raises(ValueError, match="must look like 08:00-12:00"):
        parse_sessions(["8-12"])
    with pytest.raises(ValueError, match="ends before it starts"):
        parse_sessions(["12:00-08:00"])


def test_roster_reads_an_identity_column_or_the_first_one(tmp_path) -> None:
    a = tmp_path / "a.csv"
    a.write_text("name,identity\nAnn,ann\nBob,bob\nBob again,bob\n")
    b = tmp_path / "b.csv"
    b.write_text("ann\nbob\n\n")
    assert read_roster(a) == ["ann", "bob"] and read_roster(b) == ["ann", "bob"]
    with pytest.raises(ValueError, match="does not exist"):
        read_roster(tmp_path / "none.csv")


def test_a_file_that_is_not_a_book_is_refused_and_left_as_it_was(tmp_path) -> None:
    from daemon.stores.attendance import open_book

    bad = tmp_path / "notes.sqlite"
    bad.write_text("my notes\n")
    with pytest.raises(ValueError, match="is not an attendance book"):
        open_book(bad)
    assert bad.read_text() == "my notes\n"
