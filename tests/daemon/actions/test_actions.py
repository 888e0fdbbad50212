"""[[actions]] on a real clip: a command rate-limited to one run, a webhook receiving the event JSON from a real
HTTP server, a hanging command killed at its timeout, and the filters (sources, identities, score, time)."""

from __future__ import annotations

import datetime as dt
import json
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from daemon.actions.dispatch import ActionSink
from daemon.config import ConfigError, load_settings
from daemon.config.actions import ActionConfig
from daemon.profiles import build_daemon


@pytest.fixture
def receiver():
    """A webhook receiver on 127.0.0.1: the JSON bodies it was POSTed, and a first answer of 503 (retried)."""
    got: list[dict] = []
    answers = [503]

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            body = self.rfile.read(int(self.headers["Content-Length"]))
            status = answers.pop(0) if answers else 200
            if status == 200:
                got.append(json.loads(body))
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *a):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/hook", got
    server.shutdown()
    server.server_close()


def test_actions_on_unknown_faces_of_a_talking_head(tmp_path, data_dir, stills_gallery, receiver):
    url, got = receiver
    video = data_dir / "videos" / "talking_heads" / "video_retalking_1.mp4"
    runs = tmp_path / "runs.jsonl"
    record = [sys.executable, "-c", f"import sys; open({str(runs)!r}, 'a').write(sys.stdin.read() + '\\n')"]
    actions = [
        {"name": "ring", "on": ["face.unknown"], "command": record, "min_interval_s": 3600},
        {"name": "hook", "on": ["face.unknown"], "webhook": url, "backoff_s": 0.05, "min_interval_s": 3600},
        {"name": "hang", "on": ["face.unknown"], "command": ["sleep", "30"], "timeout_s": 0.5},
        {"name": "watch-list", "on": ["face.recognized"], "identities": ["joe_biden"], "command": record},
    ]
    # The clip as two cameras: two unknown tracks, the second within the rate limit.
    settings = load_settings(None, sources=[str(video), str(video)], embedder={"runtime": "torch"},
                             sinks={"jsonl": str(tmp_path / "e.jsonl"), "zmq": None}, actions=actions)
    daemon, parts = build_daemon(settings, stills_gallery)
    assert daemon.run(install_signals=False) == 0
    events = [json.loads(line) for line in (tmp_path / "e.jsonl").read_text().splitlines()]
    unknown = [e for e in events if e["topic"] == "face.unknown"]
    assert len({e["source"] for e in unknown}) == 2, "each copy of the clip should give an unknown face"
    ran = [json.loads(line) for line in runs.read_text().splitlines()]
    assert [r["event_id"] for r in ran] == [unknown[0]["event_id"]]  # once, the first, as JSON on stdin
    assert [g["event_id"] for g in got] == [unknown[0]["event_id"]]  # after one 503, retried
    counts = parts.actions.counters()["actions"]
    assert counts["ring"] == {"ok": 1, "rate_limited": len(unknown) - 1}
    assert counts["hook"]["ok"] == 1
    assert counts["hang"]["timed_out"] >= 1 and counts["hang"].get("ok", 0) == 0
    assert "watch-list" not in {k for k, v in counts.items() if v}  # nobody on the watch list was seen


def test_filters_and_time_windows():
    sink = ActionSink([ActionConfig(on=["face.recognized"], sources=["back_door"], min_score=0.95,
                                    times=["22:00-06:00"], command=["true"])],
                      clock=lambda: dt.datetime(2026, 12, 3, 23, 30))
    a = sink.actions[0]
    night, noon = dt.datetime(2026, 12, 3, 23, 30), dt.datetime(2026, 12, 3, 12, 0)
    body = {"source": "back_door", "identity": "x", "score": 0.97}
    assert a.wants("face.recognized", body, night)
    assert not a.wants("face.recognized", body, noon)
    assert not a.wants("face.unknown", body, night)
    assert not a.wants("face.recognized", {**body, "source": "front"}, night)
    assert not a.wants("face.recognized", {**body, "score": 0.9}, night)
    assert a.wants("face.recognized", body, dt.datetime(2026, 12, 4, 5, 59))
    sink.close()


def test_visitor_filters_pick_a_stranger_who_came_back():
    sink = ActionSink([ActionConfig(on=["face.unknown"], min_appearances=2, command=["true"]),
                       ActionConfig(on=["face.unknown"], visitors=["0a1b2c3d"], command=["true"])])
    returning, watched = sink.actions
    now = dt.datetime(2026, 12, 3, 12, 0)
    first, back = {"visitor": "0a1b2c3d", "visitor_appearances": 1}, {"visitor": "ffff0000", "visitor_appearances": 3}
    assert not returning.wants("face.unknown", first, now) and returning.wants("face.unknown", back, now)
    assert not returning.wants("face.unknown", {"identity": None}, now)  # kept nowhere: no visitor
    assert watched.wants("face.unknown", first, now) and not watched.wants("face.unknown", back, now)
    sink.close()


@pytest.mark.parametrize("action, message", [
    ({"on": ["face.unknown"]}, "exactly one of command, webhook or zmq_req"),
    ({"on": ["face.unknown"], "command": ["true"], "webhook": "http://x/"}, "exactly one of"),
    ({"on": ["face.unknown"], "webhook": "ftp://x/"}, "http:// or https:// URL"),
    ({"on": ["face.unknown"], "command": ["true"], "times": ["25:00-06:00"]}, "must look like 22:00-06:00"),
    ({"on": [], "command": ["true"]}, "actions.0.on"),
])
def test_bad_actions_are_one_line(action, message):
    with pytest.raises(ConfigError) as e:
        load_settings(None, actions=[action])
    assert message in str(e.value) and "\n" not in str(e.value)


def test_actions_from_a_toml_file(tmp_path: Path):
    cfg = tmp_path / "c.toml"
    cfg.write_text('[[actions]]\non = ["face.unknown"]\ntimes = ["22:00-06:00"]\ncommand = ["notify-send", "x"]\n')
    assert load_settings(cfg).actions[0].times == ["22:00-06:00"]
