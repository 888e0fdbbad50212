"""Tracker, vote and scene-cut logic on synthetic detections (the video tests cover them end to end)."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.match import MatchResult, TrackVoter
from pipeline.track import IoUTracker, SceneCutDetector, iou
from pipeline.types import Detection, Frame


def face(x: float, y: float, size: float = 80.0, prob: float = 0.999) -> Detection:
    lm = np.array([[x + 0.3 * size, y + 0.4 * size], [x + 0.7 * size, y + 0.4 * size], [x + 0.5 * size, y + 0.6 * size],
                   [x + 0.35 * size, y + 0.8 * size], [x + 0.65 * size, y + 0.8 * size]], dtype=np.float32)
    return Detection((x, y, x + size, y + size), prob, lm)


def frame(i: int) -> Frame:
    return Frame("cam", i, i / 30.0, 0.0, np.zeros((4, 4, 3), np.uint8), False)


def test_iou() -> None:
    assert iou((0, 0, 10, 10), (0, 0, 10, 10)) == 1.0
    assert iou((0, 0, 10, 10), (20, 20, 30, 30)) == 0.0
    assert iou((0, 0, 10, 10), (5, 0, 15, 10)) == pytest.approx(50 / 150)


def test_tracks_are_confirmed_stable_carried_and_ended() -> None:
    tr = IoUTracker(max_age=4, refresh_every=2, confirm_hits=3, confirm_prob=0.98)
    outs = [tr.update(frame(i), (face(100 + 2 * i, 100), face(300, 100, prob=0.93))) for i in range(3)]
    # Neither face counts before 3 detections; then only the real one (median prob 0.999) does.
    assert [len(o.tracks) for o in outs] == [0, 0, 1]
    assert outs[2].embed == (1,)
    assert outs[2].tracks[0].track_id == 1
    carried = tr.update(frame(3), None)  # a frame the detector skipped
    assert [v.track_id for v in carried.tracks] == [1] and carried.tracks[0].detection is None
    again = tr.update(frame(4), (face(110, 100),))
    assert [v.track_id for v in again.tracks] == [1]  # same id after the gap
    assert again.embed == ()  # one detection since the first embedding
    assert tr.update(frame(5), (face(112, 100),)).embed == (1,)  # refresh after 2 detections
    for i in range(6, 10):
        assert tr.update(frame(i), ()).ended == ()
    out = tr.update(frame(10), ())
    assert [e.track_id for e in out.ended] == [1]  # unseen for more than max_age frames
    assert out.ended[0].first_frame == 0 and out.ended[0].last_frame == 5


def test_vote_claims_after_k_of_n_and_reports_unknown_once() -> None:
    v = TrackVoter(k=2, n=3, unknown_after=2)
    yes, no = MatchResult([("ann", 0.95)], "ann", 0.95, 0.1), MatchResult([("ann", 0.5)], None, 0.5, 0.1)
    assert v.add(("cam", 1), yes) == (None, False, False)
    assert v.add(("cam", 1), yes) == ("ann", True, False)
    assert v.add(("cam", 1), no) == ("ann", False, False)
    assert v.finish(("cam", 1)) == ("ann", 0.95)
    assert v.add(("cam", 2), no) == (None, False, False)
    assert v.add(("cam", 2), no) == (None, False, True)
    assert v.add(("cam", 2), no) == (None, False, False)  # once per track
    with pytest.raises(ValueError, match="1 <= k <= n"):
        TrackVoter(k=4, n=3)


def test_scene_cut_detector() -> None:
    det = SceneCutDetector(20.0)
    dark = np.full((90, 160, 3), 30, np.uint8)
    assert det.update(dark) is False
    assert det.update(dark + 5) is False  # small change: same shot
    assert det.update(np.full((90, 160, 3), 200, np.uint8)) is True
