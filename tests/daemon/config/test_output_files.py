"""Hardening of what the daemon and the tools write: symlinks never followed, devices never chmodded, every
setting checked before any file is touched, a report that never writes, one daemon per event log, a stop
during start-up, and an analysis whose identity names cannot steer files out of ``--out``."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import sqlite3
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
from http_helpers import CLI, REPO

from daemon.cli import main as cli
from daemon.config import load_settings
from daemon.runner import Daemon
from daemon.sinks.jsonl import JsonlSink

SECRET = b"precious bytes that must not change\n"
HAMILTON = "face_recognition_examples/video/short_hamilton_clip.mp4"


def _victim(tmp_path: Path, name: str = "victim.txt") -> Path:
    """A file a symlink points at: its bytes and mode must come out as they went in."""
    target = tmp_path / name
    target.write_bytes(SECRET)
    target.chmod(0o644)
    return target


def _same(target: Path) -> bool:
    return target.read_bytes() == SECRET and stat.S_IMODE(target.stat().st_mode) == 0o644


def _link(tmp_path: Path, name: str, target: Path) -> Path:
    link = tmp_path / name
    link.symlink_to(target)
    return link


@pytest.mark.parametrize("key", ["jsonl", "timeline_csv", "door_audit", "attendance_db", "http_audit"])
def test_a_symlinked_output_setting_is_refused_before_anything_is_written(tmp_path, stills_gallery, key) -> None:
    victim = _victim(tmp_path)
    link = _link(tmp_path, "out.file", victim)
    fresh = tmp_path / "events.jsonl"
    sinks = {"zmq": None, "jsonl": str(fresh)}
    extra: dict = {}
    if key in ("jsonl", "timeline_csv"):
        sinks[key] = str(link)
    elif key == "door_audit":
        extra["door"] = {"audit": str(link)}
    elif key == "attendance_db":
        extra["attendance"] = {"db": str(link)}
    else:
        extra["http"] = {"audit_log": str(link), "listen": "127.0.0.1:0"}
    settings = load_settings(None, sources=[str(tmp_path / "none.mp4")], sinks=sinks, **extra)
    with pytest.raises(ValueError, match="is a symlink; refusing to write through it"):
        Daemon(settings, stills_gallery)
    assert _same(victim)
    assert key == "jsonl" or not fresh.exists()  # the good output was not created either


def test_a_bad_attendance_book_fails_in_one_line_before_the_event_log_is_touched(tmp_path, stills_gallery,
                                                                                data_dir) -> None:
    events = _victim(tmp_path, "events.jsonl")
    gallery_copy = tmp_path / "gallery.db"
    shutil.copy(stills_gallery, gallery_copy)
    before = hashlib.sha256(gallery_copy.read_bytes()).hexdigest()
    r = subprocess.run([*CLI, "run", "--source", str(data_dir / HAMILTON), "--gallery", str(stills_gallery),
                        "--zmq", "", "--events-jsonl", str(events)], cwd=REPO, capture_output=True, text=True,
                       timeout=120, env={**os.environ, "FACESTREAM_ATTENDANCE__DB": str(gallery_copy)})
    assert r.returncode == 2, r.stderr[-2000:]
    lines = r.stderr.strip().splitlines()
    assert lines == [lines[-1]] and "is a facestream gallery, not an attendance book" in lines[0], r.stderr
    assert _same(events)
    assert hashlib.sha256(gallery_copy.read_bytes()).hexdigest() == before


def test_attendance_report_on_a_gallery_exits_2_and_writes_nothing(tmp_path, stills_gallery, capsys) -> None:
    g = tmp_path / "gallery.db"
    shutil.copy(stills_gallery, g)
    before = (g.read_bytes(), stat.S_IMODE(g.stat().st_mode))
    assert cli(["attendance", "report", "--db", str(g)]) == 2
    assert "is a facestream gallery, not an attendance book" in capsys.readouterr().err
    assert (g.read_bytes(), stat.S_IMODE(g.stat().st_mode)) == before
    with sqlite3.connect(f"file:{g}?mode=ro", uri=True) as conn:
        assert "marks" not in {r[0] for r in conn.execute("SELECT name FROM sqlite_master")}


def test_keys_and_exports_refuse_symlinks_and_missing_folders(tmp_path, stills_gallery, capsys) -> None:
    keys = tmp_path / "keys"
    keys.mkdir()
    assert cli(["keys", "generate", "--out", str(keys)]) == 0
    victim = _victim(tmp_path)
    (keys / "server.key_secret").unlink()
    _link(keys, "server.key_secret", victim)
    assert cli(["keys", "generate", "--out", str(keys), "--force"]) == 2
    assert "symlink" in capsys.readouterr().err and _same(victim)
    # gallery export: the second file is a symlink, so the first is not written either
    _link(tmp_path, "exp.json", victim)
    assert cli(["gallery", "export", "--gallery", str(stills_gallery), "--out", str(tmp_path / "exp")]) == 2
    assert "symlink" in capsys.readouterr().err and _same(victim) and not (tmp_path / "exp.npz").exists()
    # one rule for missing folders: refused in one line, never created
    for args in (["gallery", "export", "--gallery", str(stills_gallery), "--out", str(tmp_path / "no/such/exp")],
                 ["keys", "generate", "--out", str(tmp_path / "no/such")],
                 ["models", "export", "--model", "dlib-resnet-v1", "--format", "onnx",
                  "--out", str(tmp_path / "no/such/m.onnx")]):
        assert cli(args) == 2, args
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "does not exist" in err[0], err
    assert not (tmp_path / "no").exists()


def test_keys_generate_force_replaces_the_pair_privately(tmp_path) -> None:
    assert cli(["keys", "generate", "--out", str(tmp_path)]) == 0
    first = (tmp_path / "server.key").read_bytes()
    assert cli(["keys", "generate", "--out", str(tmp_path), "--force"]) == 0
    assert (tmp_path / "server.key").read_bytes() != first
    for f in ("server.key", "server.key_secret"):
        assert stat.S_IMODE((tmp_path / f).stat().st_mode) == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["server.key", "server.key_secret"]


@pytest.mark.skipif(os.geteuid() != 0, reason="mknod needs root (CI runs as root)")
def test_an_event_log_on_a_character_device_is_written_but_never_chmodded(tmp_path, stills_gallery,
                                                                          data_dir) -> None:
    dev = tmp_path / "null"
    os.mknod(dev, 0o666 | stat.S_IFCHR, os.makedev(1, 3))
    dev.chmod(0o666)  # mknod's mode is cut by the umask
    settings = load_settings(None, sources=[str(data_dir / "videos/known_identity/obama_speech.mp4")],
                             embedder={"runtime": "torch"}, sinks={"zmq": None, "jsonl": str(dev)})
    from structlog.testing import capture_logs

    with capture_logs() as logs:
        assert Daemon(settings, stills_gallery).run(install_signals=False) == 0
    assert not [e for e in logs if e["log_level"] == "error"], logs
    assert stat.S_IMODE(dev.stat().st_mode) == 0o666 and stat.S_ISCHR(dev.stat().st_mode)


def test_one_event_log_takes_one_daemon(tmp_path) -> None:
    first = JsonlSink(tmp_path / "events.jsonl")
    try:
        with pytest.raises(ValueError, match="in use by another facestream daemon"):
            JsonlSink(tmp_path / "events.jsonl")
    finally:
        first.close()
    JsonlSink(tmp_path / "events.jsonl").close()  # free again once the first has closed


def test_a_second_daemon_on_one_gallery_is_warned(stills_gallery) -> None:
    from structlog.testing import capture_logs

    from daemon.runner import hold_gallery

    fd = hold_gallery(stills_gallery)
    try:
        with capture_logs() as logs:
            other = hold_gallery(stills_gallery)
        os.close(other)
    finally:
        os.close(fd)
    assert [e["event"] for e in logs] == ["gallery_shared_with_another_daemon"]


@pytest.mark.parametrize("after_s", [0.4, 1.5])
def test_a_stop_during_start_up_exits_0_with_daemon_stopped(tmp_path, stills_gallery, data_dir, after_s) -> None:
    env = {**os.environ, "FACESTREAM_EMBEDDER__RUNTIME": "torch"}
    proc = subprocess.Popen([sys.executable, "-m", "daemon", "run", "--source", str(data_dir / HAMILTON), "--loop",
                             "--gallery", str(stills_gallery), "--zmq", ""], cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)
    time.sleep(after_s)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err[-2000:]
    events = [json.loads(line)["event"] for line in err.splitlines() if line.startswith("{")]
    assert events[-1] == "daemon_stopped", events


def test_analyze_keeps_every_file_inside_out_whatever_the_names(tmp_path, stills_gallery, data_dir) -> None:
    """A gallery from before the name rule names Miranda ``=../../escaped_lin``: her best frame stays in
    ``best/``, the report is written, and her timeline cell is not a formula."""
    gallery = tmp_path / "old.db"
    shutil.copy(stills_gallery, gallery)
    with sqlite3.connect(gallery) as conn:
        conn.execute("UPDATE identities SET name = '=../../escaped_lin' WHERE name = 'lin_manuel_miranda'")
    out = tmp_path / "x" / "a" / "b" / "out"
    before = {p for p in tmp_path.rglob("*")}
    r = subprocess.run([*CLI, "analyze", str(data_dir / HAMILTON), "--gallery", str(gallery), "--out", str(out),
                        "--json"], cwd=REPO, capture_output=True, text=True, timeout=600,
                       env={**os.environ, "FACESTREAM_EMBEDDER__RUNTIME": "torch"})
    assert r.returncode == 0, r.stderr[-2000:]
    result = json.loads(r.stdout.strip().splitlines()[-1])
    assert result["identities"] == ["=../../escaped_lin"]
    new = {p for p in tmp_path.rglob("*")} - before
    outside = sorted(str(p) for p in new if p != out and out not in p.parents and p not in out.parents)
    assert outside == [], outside
    best = [p.name for p in (out / "best").iterdir()]
    assert len(best) == 1 and best[0].startswith("escaped_lin-") and best[0].endswith(".jpg"), best
    assert (out / "report.html").is_file()
    cells = [line.split(",")[1] for line in (out / "timeline.csv").read_text().splitlines()[1:]]
    assert cells == ["'=../../escaped_lin"]
    assert "identity_names_not_allowed" in r.stderr


def test_gallery_add_warns_when_a_photo_is_already_someone_elses(tmp_path, stills_gallery, data_dir, capsys) -> None:
    g = tmp_path / "gallery.db"
    shutil.copy(stills_gallery, g)
    biden = data_dir / "face_recognition_examples/stills/biden.jpg"
    env = {"FACESTREAM_EMBEDDER__RUNTIME": "torch", "FACESTREAM_CACHE_DIR": str(tmp_path / "cache")}
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        assert cli(["gallery", "add", "--gallery", str(g), "--name", "not_biden", str(biden)]) == 0
    finally:
        for k, v in old.items():
            os.environ.pop(k) if v is None else os.environ.__setitem__(k, v)
    err = capsys.readouterr().err
    assert f"{biden} is also enrolled for joe_biden" in err
