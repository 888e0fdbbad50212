"""Retention on real files: day files and old lines of the logs, attendance rows (gone from the file's bytes),
analysis folders; nothing younger touched; --dry-run changes nothing; logs rotate daily."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import time
from pathlib import Path

from daemon.sinks.jsonl import JsonlSink
from daemon.stores.attendance import SqliteBook

DAY = 86400


def _digest(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def _site(tmp: Path) -> Path:
    """A state folder 40 days deep: logs, a day file of each age, a book and two analyses."""
    now = time.time()
    old, young = now - 40 * DAY, now - 3600
    st = tmp / "state"
    st.mkdir()
    lines = [{"topic": "face.unknown", "event_id": "OLD-EVENT-1", "epoch": old},
             {"topic": "face.unknown", "event_id": "YOUNG-EVENT-1", "epoch": young}]
    (st / "events.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    old_day = dt.date.fromtimestamp(old).isoformat()
    (st / f"events.{old_day}.jsonl").write_text(json.dumps({"event_id": "OLD-EVENT-2", "epoch": old}) + "\n")
    recent = dt.date.fromtimestamp(now - DAY).isoformat()
    (st / f"events.{recent}.jsonl").write_text(json.dumps({"event_id": "YOUNG-EVENT-2", "epoch": now - DAY}) + "\n")
    (st / "door.jsonl").write_text(json.dumps({"time": old, "identity": "old_door_person"}) + "\n"
                                   + json.dumps({"time": young, "identity": "young_door_person"}) + "\n")
    book = SqliteBook(st / "book.db")
    book.mark("old_person_zz", old, "2026-10-01", "cam", 0.95)
    book.mark("young_person_yy", young, "2026-12-03", "cam", 0.95)
    book.close()
    for name, t in (("old_analysis", old), ("young_analysis", young)):
        d = st / "analyses" / name
        d.mkdir(parents=True)
        (d / "events.jsonl").write_text("{}\n")
        (d / "report.html").write_text("<html></html>")
        for p in (d / "events.jsonl", d / "report.html", d):
            os.utime(p, (t, t))
    (tmp / "c.toml").write_text(
        f'[sinks]\njsonl = "{st / "events.jsonl"}"\nzmq = ""\n[door]\naudit = "{st / "door.jsonl"}"\n'
        f'[attendance]\ndb = "{st / "book.db"}"\n'
        f'[retention]\nevents_days = 30\naudit_days = 30\nattendance_days = 30\nanalyses_days = 30\n'
        f'analyses_dir = "{st / "analyses"}"\n')
    return st


def test_dry_run_lists_and_changes_nothing_then_run_removes_only_the_old(tmp_path, cli):
    st = _site(tmp_path)
    before = _digest(st)
    code, out, err = cli("retention", "run", "--config", tmp_path / "c.toml", "--dry-run", "--json")
    assert code == 0, err
    listed = json.loads(out)["removed"]
    assert {r["what"] for r in listed} == {"events", "audit", "attendance", "analyses"}
    assert _digest(st) == before

    code, out, err = cli("retention", "run", "--config", tmp_path / "c.toml", "--json")
    assert code == 0, err
    assert json.loads(out)["removed"] == listed  # the dry run said exactly this
    events = (st / "events.jsonl").read_bytes()
    assert b"OLD-EVENT-1" not in events and b"YOUNG-EVENT-1" in events
    days = sorted(p.name for p in st.glob("events.*.jsonl"))
    assert days == [f"events.{dt.date.fromtimestamp(time.time() - DAY).isoformat()}.jsonl"]
    door = (st / "door.jsonl").read_bytes()
    assert b"old_door_person" not in door and b"young_door_person" in door
    raw = (st / "book.db").read_bytes()
    assert b"old_person_zz" not in raw and b"young_person_yy" in raw  # overwritten and vacuumed, not just unlinked
    assert sorted(p.name for p in (st / "analyses").iterdir()) == ["young_analysis"]
    assert (st / "events.jsonl").stat().st_mode & 0o777 == 0o600
    # Run again: nothing left to remove.
    code, out, _ = cli("retention", "run", "--config", tmp_path / "c.toml", "--json")
    assert json.loads(out)["removed"] == []


def test_without_limits_it_is_one_line(tmp_path, cli):
    (tmp_path / "c.toml").write_text("[retention]\n")
    code, _, err = cli("retention", "run", "--config", tmp_path / "c.toml")
    assert code == 2 and "no retention limit is set" in err and len(err.strip().splitlines()) == 1


def test_a_held_log_is_never_rewritten_and_logs_rotate_daily(tmp_path, cli):
    st = _site(tmp_path)
    yesterday = time.time() - DAY
    os.utime(st / "events.jsonl", (yesterday, yesterday))
    sink = JsonlSink(st / "events.jsonl", rotate_daily=True)  # a running daemon holds it
    try:
        code, out, _ = cli("retention", "run", "--config", tmp_path / "c.toml", "--json")
        assert code == 0
        assert not [r for r in json.loads(out)["removed"] if r["path"] == str(st / "events.jsonl")]
        sink.send("face.unknown", {"topic": "face.unknown", "event_id": "TODAY"})
    finally:
        sink.close()
    # That day already had a day file: the second one is numbered, never overwrites it.
    rotated = st / f"events.{dt.date.fromtimestamp(yesterday).isoformat()}.1.jsonl"
    assert b"YOUNG-EVENT-1" in rotated.read_bytes() and b"TODAY" not in rotated.read_bytes()
    assert [json.loads(x)["event_id"] for x in (st / "events.jsonl").read_text().splitlines()] == ["TODAY"]
