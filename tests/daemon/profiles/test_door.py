"""Door access on real clips: one grant for Miranda, the action run once, every decision audited."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from daemon.config import ConfigError, load_settings
from daemon.profiles import build_daemon

HAMILTON = "face_recognition_examples/video/short_hamilton_clip.mp4"
# The action: a command line from the settings, no shell; it gets the grant event as JSON on stdin.
WRITER = "import sys; open(sys.argv[1], 'a').write(sys.stdin.read() + '\\n')"


def _door_run(tmp_path: Path, video: Path, gallery: Path, name: str) -> tuple[list[dict], list[dict], Path]:
    out, audit, opened = tmp_path / f"{name}.jsonl", tmp_path / f"{name}.audit.jsonl", tmp_path / f"{name}.door"
    settings = load_settings(None, sources=[str(video)], embedder={"runtime": "torch"},
                             sinks={"jsonl": str(out), "zmq": None},
                             door={"audit": str(audit), "command": [sys.executable, "-c", WRITER, str(opened)]})
    assert build_daemon(settings, gallery)[0].run(install_signals=False) == 0
    events = [json.loads(line) for line in out.read_text().splitlines()]
    return events, [json.loads(line) for line in audit.read_text().splitlines()], opened


def test_hamilton_grants_miranda_once_runs_the_command_once_and_audits_why(tmp_path, data_dir,
                                                                          stills_gallery) -> None:
    events, audit, opened = _door_run(tmp_path, data_dir / HAMILTON, stills_gallery, "ham")
    grants = [e for e in events if e["topic"] == "access.granted"]
    assert [g["identity"] for g in grants] == ["lin_manuel_miranda"]
    assert len(grants[0]["votes"]) >= 3
    assert grants[0]["live_score"] >= 0.5  # the door judges liveness by default: a live face on camera
    assert all("live_score" in e for e in events if e["topic"] == "face.recognized")
    lines = opened.read_text().splitlines()  # the command ran once, with the grant on its stdin
    assert len(lines) == 1 and json.loads(lines[0])["identity"] == "lin_manuel_miranda"
    granted = [a for a in audit if a["decision"] == "granted"]
    assert len(granted) == 1
    g = granted[0]
    assert g["top1"] == "lin_manuel_miranda" and g["top1_score"] >= g["threshold"]
    assert g["top2"] is not None and g["top2_score"] < g["top1_score"]
    assert abs(g["margin"] - (g["top1_score"] - g["top2_score"])) < 1e-3
    assert g["action"]["ok"] and g["action"]["exit_code"] == 0
    assert (tmp_path / "ham.audit.jsonl").stat().st_mode & 0o777 == 0o600


@pytest.mark.parametrize("i", [1, 2, 3, 4, 5])
def test_talking_heads_are_never_granted(tmp_path, data_dir, stills_gallery, i) -> None:
    events, audit, opened = _door_run(tmp_path, data_dir / f"videos/talking_heads/video_retalking_{i}.mp4",
                                      stills_gallery, "th")
    assert [e for e in events if e["topic"] == "access.granted"] == []
    assert not opened.exists()
    assert all(a["decision"] != "granted" for a in audit)
    assert any(e["topic"] == "access.denied" for e in events)  # the stranger is refused, and audited
    assert any(a["decision"] == "denied" for a in audit)


def test_a_zeromq_door_controller_gets_the_grant_and_its_reply_is_audited(tmp_path, data_dir, stills_gallery) -> None:
    import threading

    import zmq
    from daemon_helpers import free_port

    addr = f"tcp://127.0.0.1:{free_port()}"
    rep = zmq.Context.instance().socket(zmq.REP)
    rep.bind(addr)
    got: list[dict] = []

    def controller() -> None:
        if rep.poll(60_000):
            got.append(json.loads(rep.recv_string()))
            rep.send_string("opened for 3 s")

    t = threading.Thread(target=controller, daemon=True)
    t.start()
    out, audit = tmp_path / "z.jsonl", tmp_path / "z.audit.jsonl"
    settings = load_settings(None, sources=[str(data_dir / HAMILTON)], embedder={"runtime": "torch"},
                             sinks={"jsonl": str(out), "zmq": None}, door={"audit": str(audit), "zmq_req": addr})
    assert build_daemon(settings, stills_gallery)[0].run(install_signals=False) == 0
    t.join(10)
    rep.close()
    assert [g["identity"] for g in got] == ["lin_manuel_miranda"]
    granted = [json.loads(line) for line in audit.read_text().splitlines() if '"granted"' in line]
    assert len(granted) == 1 and granted[0]["action"]["reply"] == "opened for 3 s" and granted[0]["action"]["ok"]


def test_door_settings_are_checked(tmp_path) -> None:
    with pytest.raises(ConfigError, match=r"door\.votes_k"):
        load_settings(None, door={"votes_k": 6, "votes_n": 5})
    with pytest.raises(ConfigError, match="set one action"):
        load_settings(None, door={"command": ["true"], "zmq_req": "tcp://127.0.0.1:5599"})
