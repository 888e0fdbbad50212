"""The attendance book and the audit in PostgreSQL: a mark is unique per (site, period, identity) by the table's
key, so 20 concurrent attempts from 4 processes store one row and only one of them is told it was first; a
database of another application is refused without a write; the audit spools while the database is down and
lands once."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest
from cli_helpers import REPO

WORKER = """
import sys, threading, time
from pathlib import Path
from daemon.stores.attendance import open_book
url, spool = sys.argv[1], Path(sys.argv[2])
book = open_book(url, "hq", spool_dir=spool)
book.marks("2026-12-02")  # connected before the start line
print("ready", flush=True)
start = float(sys.stdin.readline())
firsts = []
def mark(i):
    time.sleep(max(0.0, start - time.time()))
    firsts.append(book.mark("lin_manuel_miranda", start + i / 1000, "2026-12-02", sys.argv[3], 0.97))
threads = [threading.Thread(target=mark, args=(i,)) for i in range(5)]
[t.start() for t in threads]
[t.join() for t in threads]
book.close()
print(sum(firsts), len(firsts), book.spool.spooled)
"""


def test_twenty_concurrent_marks_from_four_processes_store_one_row(pg, tmp_path) -> None:
    url = pg.new_db("marks_race")
    from daemon.stores.attendance import open_book

    open_book(url, "hq", spool_dir=tmp_path).close()  # the table exists before the race
    procs = [subprocess.Popen([sys.executable, "-c", WORKER, url, str(tmp_path / f"s{i}"), f"host{i}"], cwd=REPO,
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True) for i in range(4)]
    assert [p.stdout.readline().strip() for p in procs] == ["ready"] * 4
    start = time.time() + 0.1  # the same moment in every process's five threads
    outs = [p.communicate(f"{start}\n", timeout=60)[0].split() for p in procs]
    assert all(p.returncode == 0 for p in procs)
    firsts, attempts, spooled = (sum(int(o[k]) for o in outs) for k in range(3))
    assert (attempts, spooled) == (20, 0)
    assert firsts == 1
    rows = pg.sql("SELECT identity, period, first_seen, source FROM facestream.attendance_marks", "marks_race")
    assert len(rows) == 1 and rows[0][2] == pytest.approx(start)  # the earliest sighting is the one kept


def test_a_database_of_another_application_is_refused_for_the_book_and_the_audit(pg, tmp_path) -> None:
    from daemon.config import load_settings
    from daemon.config.outputs import check_outputs

    url = pg.new_db("records_foreign")
    pg.sql("CREATE TABLE orders (id SERIAL PRIMARY KEY)", "records_foreign")
    for section in ({"attendance": {"db": url}}, {"door": {"audit": url}}):
        settings = load_settings(None, paths={"state_dir": str(tmp_path / "state")}, **section)
        with pytest.raises(ValueError, match="a database of another application") as err:
            check_outputs(settings)
        assert "\n" not in str(err.value)
    assert pg.sql("SELECT count(*) FROM pg_catalog.pg_tables WHERE schemaname = 'facestream'",
                  "records_foreign") == [(0,)]


def test_audit_records_spool_while_the_database_is_down_and_land_once(pg, tmp_path) -> None:
    from daemon.stores.audit import open_audit

    url = pg.new_db("audit_spool")
    audit = open_audit(url, "door.audit", tmp_path / "spool")
    audit.write({"decision": "granted", "n": 0})
    pg.stop()
    try:
        for n in range(1, 4):
            audit.write({"decision": "denied", "n": n})
        spooled = [json.loads(line) for p in (tmp_path / "spool").glob("*") for line in p.read_text().splitlines()]
        assert len(spooled) == 3 and (tmp_path / "spool").stat().st_mode & 0o777 == 0o700
        assert all(p.stat().st_mode & 0o777 == 0o600 for p in (tmp_path / "spool").glob("*"))
    finally:
        pg.start()
    deadline = time.monotonic() + 10
    while (audit.down or audit.spool.waiting()) and time.monotonic() < deadline:
        time.sleep(0.05)  # the store's own thread drains it once the database is back
    assert not audit.down and pg.sql("SELECT count(*) FROM facestream.audit_records", "audit_spool") == [(4,)]
    assert audit.drain() == 0  # nothing twice
    audit.write({"decision": "granted", "n": 4})
    audit.close()
    rows = pg.sql("SELECT (record->>'n')::int FROM facestream.audit_records ORDER BY time", "audit_spool")
    assert [r[0] for r in rows] == [0, 1, 2, 3, 4] and audit.lines == 5


def test_retention_deletes_old_marks_and_audit_records_in_the_database(pg, tmp_path) -> None:
    """`[retention]` on a site's PostgreSQL stores: old marks (every site) and old records of the named log go,
    the recent ones and the other log's stay; a dry run deletes nothing; a database without the stores is left
    untouched."""
    from daemon.config import load_settings
    from daemon.stores.attendance import open_book
    from daemon.stores.audit import open_audit
    from daemon.stores.retention import enforce

    url = pg.new_db("retention")
    now, day = time.time(), 86400.0
    book = open_book(url, "hq", spool_dir=tmp_path)
    book.mark("old_one", now - 40 * day, "2026-10-24", "cam", 0.9)
    book.mark("new_one", now - 1 * day, "2026-12-02", "cam", 0.9)
    book.close()
    door, api = open_audit(url, "door.audit", spool_dir=tmp_path), open_audit(url, "http.audit_log", spool_dir=tmp_path)
    door.write({"decision": "granted"})
    api.write({"route": "/v1/identities"})
    door.close(), api.close()
    pg.sql("UPDATE facestream.audit_records SET time = time - 40 * 86400", "retention")  # both written long ago
    settings = load_settings(None, paths={"state_dir": str(tmp_path / "state")}, attendance={"db": url},
                             door={"audit": url}, retention={"attendance_days": 30, "audit_days": 30})
    planned = enforce(settings, now=now, dry_run=True)
    assert sorted(r.what for r in planned) == ["attendance", "audit"]
    assert pg.sql("SELECT count(*) FROM facestream.attendance_marks", "retention") == [(2,)]
    done = enforce(settings, now=now)
    assert [(r.what, r.detail) for r in done] == [(r.what, r.detail) for r in planned]
    assert pg.sql("SELECT identity FROM facestream.attendance_marks", "retention") == [("new_one",)]
    assert pg.sql("SELECT log FROM facestream.audit_records", "retention") == [("http.audit_log",)]
    assert enforce(settings, now=now) == []
    empty = pg.new_db("retention_empty")
    bare = load_settings(None, paths={"state_dir": str(tmp_path / "state")}, attendance={"db": empty},
                         door={"audit": empty}, retention={"attendance_days": 30, "audit_days": 30})
    assert enforce(bare, now=now) == []
    assert pg.sql("SELECT count(*) FROM pg_catalog.pg_tables WHERE schemaname = 'facestream'",
                  "retention_empty") == [(0,)]
