"""The door's decisions on synthetic track decisions (no face data): k of n face votes plus the track's own
name for a grant, the action run once with the grant on its stdin, a cooldown per person, a denial for a
confirmed unknown, and an audit line for each, with why."""

from __future__ import annotations

import json
import sys

import numpy as np

from daemon.profiles.door import DoorController
from pipeline.types import Detection, EndedTrack, EndedTrackSummary, Frame, MatchedFrame, TrackDecision, TrackedFrame

WRITER = "import sys, pathlib; pathlib.Path(sys.argv[1]).open('a').write(sys.stdin.read() + '\\n')"


def _decision(tid: int, face: str | None, claimed: str | None = None, unknown: bool = False) -> TrackDecision:
    d = Detection((0.0, 0.0, 100.0, 100.0), 0.99, np.zeros((5, 2), np.float32))
    return TrackDecision(tid, d, claimed, 0.95, 0.1, claimed, claimed is not None, unknown, 3, face,
                         (("ada", 0.95), ("bob", 0.6)))


def _frame(i: int, decisions: tuple = (), ended: tuple = ()) -> MatchedFrame:
    f = Frame("door", i, i * 1.0, 0.0, np.zeros((2, 2, 3), np.uint8), False)
    return MatchedFrame(TrackedFrame(f, (), (), tuple(e.ended for e in ended)), decisions, ended)


def test_votes_grant_once_cooldown_and_deny_unknowns(tmp_path) -> None:
    audit, opened, published = tmp_path / "audit.jsonl", tmp_path / "opened", []
    door = DoorController(audit, lambda: (0.9, 0.05), votes_k=3, votes_n=5, cooldown_s=10.0,
                          command=[sys.executable, "-c", WRITER, str(opened)], action_timeout_s=10.0,
                          publish=lambda t, b: published.append((t, b)))
    # Track 1: two votes for ada are not enough, the third one (and the track's own name) is.
    for i, face in enumerate(["ada", None, "ada"]):
        door.observe(_frame(i, (_decision(1, face),)), {})
    assert published == []
    door.observe(_frame(3, (_decision(1, "ada", claimed="ada"),)), {})
    # Track 2, the same person 2 s later: the door is open already.
    for i in range(4, 8):
        door.observe(_frame(i, (_decision(2, "ada", claimed="ada"),)), {})
    # Track 3: a confirmed unknown.
    door.observe(_frame(8, (_decision(3, None, unknown=True),)), {})
    end = EndedTrackSummary(EndedTrack(1, 0, 3, 0.0, 3.0, 4), "ada", 0.95, "recognized")
    door.observe(_frame(9, ended=(end,)), {})
    door.close()  # waits for the action
    assert [t for t, _ in published] == ["access.granted", "access.denied"]
    assert published[0][1]["identity"] == "ada" and published[0][1]["votes"] == ["ada", None, "ada", "ada"]
    lines = [json.loads(x) for x in audit.read_text().splitlines()]
    assert sorted(x["decision"] for x in lines) == ["cooldown", "denied", "granted"]
    granted = next(x for x in lines if x["decision"] == "granted")
    assert granted["action"]["ok"] is True and granted["threshold"] == 0.9 and granted["votes_needed"] == "3 of 5"
    assert granted["top1"] == "ada" and granted["top2"] == "bob"
    assert [json.loads(x)["identity"] for x in opened.read_text().splitlines()] == ["ada"]  # the action ran once
    assert audit.stat().st_mode & 0o777 == 0o600


def test_an_action_that_hangs_is_cut_at_its_timeout_and_audited(tmp_path) -> None:
    audit = tmp_path / "audit.jsonl"
    door = DoorController(audit, lambda: (0.9, 0.05), votes_k=1, votes_n=1, command=[sys.executable, "-c",
                          "import time; time.sleep(30)"], action_timeout_s=0.5)
    door.observe(_frame(0, (_decision(1, "ada", claimed="ada"),)), {})
    door.close()
    line = json.loads(audit.read_text())
    assert line["decision"] == "granted" and line["action"]["timed_out"] is True and line["action"]["ok"] is False
