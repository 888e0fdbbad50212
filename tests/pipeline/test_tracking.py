"""Tracker, track-decision and scene-cut logic on synthetic detections (the video tests cover them end to end)."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.face_measures import iou
from pipeline.match import CentroidMatcher, MatchResult, decide
from pipeline.track import IoUTracker, SceneCutDetector
from pipeline.track_decision import UNDECIDED_NO_EMBEDDING, TrackJudge
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
    tr = IoUTracker(max_age_s=0.15, embed_interval_s=0.09, confirm_hits=3, confirm_prob=0.98)
    outs = [tr.update(frame(i), (face(100 + 2 * i, 100), face(300, 100, prob=0.93))) for i in range(3)]
    # Neither face counts before 3 detections; then only the real one (median prob 0.999) does.
    assert [len(o.tracks) for o in outs] == [0, 0, 1]
    assert outs[2].embed == (1,)
    assert outs[2].tracks[0].track_id == 1
    carried = tr.update(frame(3), None)  # a frame the detector skipped
    assert [v.track_id for v in carried.tracks] == [1] and carried.tracks[0].detection is None
    again = tr.update(frame(4), (face(110, 100),))
    assert [v.track_id for v in again.tracks] == [1]  # same id after the gap
    assert again.embed == ()  # 0.067 s since the first embedding: too soon
    assert tr.update(frame(5), (face(112, 100),)).embed == (1,)  # 0.1 s: embedded again
    for i in range(6, 10):
        assert tr.update(frame(i), ()).ended == ()  # at most 0.133 s unseen
    out = tr.update(frame(10), ())
    assert [e.track_id for e in out.ended] == [1]  # unseen for 0.167 s > max_age_s
    assert out.ended[0].first_frame == 0 and out.ended[0].last_frame == 5


def test_live_tracks_age_in_seconds_not_frame_counts() -> None:
    """A live source under load drops frames, so its frame index leaps: a face seen 0.1 s ago keeps its
    track however many frames were dropped, and a face gone for longer than max_age_s ends it."""
    def live(i: int, t: float) -> Frame:
        return Frame("door", i, None, 1000.0 + t, np.zeros((4, 4, 3), np.uint8), True)

    tr = IoUTracker(max_age_s=0.5, embed_interval_s=0.2, confirm_hits=1)
    assert tr.update(live(0, 0.0), (face(100, 100),)).embed == (1,)
    out = tr.update(live(400, 0.1), (face(102, 100),))  # 400 frames dropped in 0.1 s
    assert [v.track_id for v in out.tracks] == [1] and out.ended == ()
    assert out.embed == ()  # embedding follows the clock too
    assert tr.update(live(900, 0.35), (face(104, 100),)).embed == (1,)
    assert tr.update(live(901, 0.8), ()).ended == ()
    assert [e.track_id for e in tr.update(live(902, 0.9), ()).ended] == [1]


def _unit(v: list[float]) -> np.ndarray:
    a = np.asarray(v, np.float32)
    return a / np.linalg.norm(a)


def test_judge_names_on_the_aggregate_after_min_faces_and_reports_unknown_once() -> None:
    j = TrackJudge(min_faces=2, unknown_after=2)
    yes, no = MatchResult([("ann", 0.95)], "ann", 0.95, 0.1), MatchResult([("ann", 0.5)], None, 0.5, 0.1)
    k1, k2 = ("cam", 1), ("cam", 2)
    assert j.add(k1, _unit([1, 0]), 1.0, None)
    assert j.judge(k1, yes).claimed is None  # one face is not enough to name a track
    assert j.add(k1, _unit([1, 0]), 1.0, None)
    v = j.judge(k1, yes)
    assert (v.claimed, v.newly_claimed, v.faces) == ("ann", True, 2)
    assert j.finish(k1, None).decision == "recognized"
    j.add(k2, _unit([0, 1]), 1.0, None)
    assert not j.judge(k2, no).unknown
    j.add(k2, _unit([0, 1]), 1.0, None)
    assert j.judge(k2, no).unknown
    j.add(k2, _unit([0, 1]), 1.0, None)
    assert not j.judge(k2, no).unknown  # once per track
    assert j.finish(k2, None).decision == "unknown"
    with pytest.raises(ValueError, match="min_faces"):
        TrackJudge(min_faces=0)


def test_judge_aggregate_is_the_quality_weighted_mean() -> None:
    j = TrackJudge()
    j.add(("c", 1), _unit([1, 0]), 3.0, None)
    j.add(("c", 1), _unit([0, 1]), 1.0, None)
    assert not j.add(("c", 1), _unit([-1, 0]), 5.0, "face blurred")  # rejected faces never count
    np.testing.assert_allclose(j.aggregate(("c", 1)), _unit([3, 1]), atol=1e-6)


def test_a_track_that_ends_early_is_decided_on_what_it_has() -> None:
    """One judgeable face and the track is gone: the decision is taken on it, named or unknown."""
    m = CentroidMatcher.__new__(CentroidMatcher)
    m.names, m.centroids = ["ann", "bob"], np.stack([_unit([1, 0, 0]), _unit([0, 1, 0])])
    j = TrackJudge(min_faces=2, unknown_after=3)
    for key, vec, want in ((("c", 1), _unit([1, 0.05, 0]), "recognized"), (("c", 2), _unit([0, 0, 1]), "unknown")):
        j.add(key, vec, 1.0, None)
        assert j.pending(key)
        final = j.finish(key, decide(m.topk(j.aggregate(key)[None], 5)[0], 0.9, 0.05))
        assert final.decision == want and (final.newly_claimed or final.newly_unknown)
    j.add(("c", 3), _unit([1, 0, 0]), 1.0, "face too small (< 32 px)")
    final = j.finish(("c", 3), None)
    assert (final.decision, final.reason) == ("undecided", "face too small (< 32 px)")
    assert j.finish(("c", 4), None).reason == UNDECIDED_NO_EMBEDDING


def test_scene_cuts_of_the_hamilton_clip_are_found_on_the_subsampled_thumbnail(data_dir) -> None:
    """The thumbnail comes from every 4th pixel: the clip's three shot changes are still found, and
    nothing else (frames 20, 82 and 211, checked against full-resolution thumbnails)."""
    import cv2

    cap = cv2.VideoCapture(str(data_dir / "face_recognition_examples" / "video" / "short_hamilton_clip.mp4"))
    det, cuts, i = SceneCutDetector(20.0), [], 0
    while True:
        ok, bgr = cap.read()
        if not ok:
            break
        if det.update(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)):
            cuts.append(i)
        i += 1
    assert i == 275 and cuts == [20, 82, 211]


def test_scene_cut_detector() -> None:
    det = SceneCutDetector(20.0)
    dark = np.full((90, 160, 3), 30, np.uint8)
    assert det.update(dark) is False
    assert det.update(dark + 5) is False  # small change: same shot
    assert det.update(np.full((90, 160, 3), 200, np.uint8)) is True
