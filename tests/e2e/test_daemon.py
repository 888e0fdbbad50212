"""The streaming daemon end to end on real videos, real weights and real ZeroMQ sockets."""

from __future__ import annotations

import pytest
from daemon_helpers import ZmqCollector, free_port, run_daemon

WALL_CLOCK = {"event_id", "time", "epoch"}


def stable(events: list[dict]) -> list[dict]:
    """Events without wall-clock fields and without the wall-clock stats topic."""
    return [{k: v for k, v in e.items() if k not in WALL_CLOCK} for e in events if e["topic"] != "stats"]


def test_hamilton_clip_recognizes_miranda_once_and_is_deterministic(tmp_path, data_dir, stills_gallery,
                                                                    hamilton_run) -> None:
    video = data_dir / "face_recognition_examples" / "video" / "short_hamilton_clip.mp4"
    first, timeline_csv = hamilton_run
    recognized = [e for e in first if e["topic"] == "face.recognized"]
    in_shot = [e for e in recognized if 82 <= e["frame"] <= 210]
    # Miranda's close-up (frames 82-210) is one continuous appearance: exactly one event, and it is his.
    assert [e["identity"] for e in in_shot] == ["lin_manuel_miranda"], recognized
    for e in first:
        if e["topic"].startswith("face."):
            for key in ("event_id", "time", "epoch", "source", "frame", "pts", "track_id", "identity", "score",
                        "margin", "bbox", "det_prob", "model", "gallery_version"):
                assert key in e, key
            assert e["schema"] == 1
    statuses = [e["status"] for e in first if e["topic"] == "source.status"]
    assert statuses == ["opened", "eof"]
    ended = [e for e in first if e["topic"] == "track.ended"]
    # a confirmed track was detected at least confirm_hits (3) times, within the frames it spanned
    assert ended and all(3 <= e["frames_seen"] <= e["last_frame"] - e["first_frame"] + 1 for e in ended), ended
    timeline = timeline_csv.read_text().splitlines()
    assert timeline[0].startswith("source,identity,first_seen_s") and any("lin_manuel_miranda" in r for r in timeline)
    second = run_daemon(tmp_path, video, stills_gallery, "b")
    assert stable(first) == stable(second)


def test_zmq_subscriber_gets_the_jsonl_events_obama_speech(tmp_path, data_dir, stills_gallery) -> None:
    video = data_dir / "videos" / "known_identity" / "obama_speech.mp4"
    addr = f"tcp://127.0.0.1:{free_port()}"
    collector = ZmqCollector(addr)
    events = run_daemon(tmp_path, video, stills_gallery, "obama", zmq=addr)
    got = collector.done()
    names = {e["identity"] for e in events if e["topic"] == "face.recognized"}
    assert names == {"barack_obama"}
    assert [e["event_id"] for e in got] == [e["event_id"] for e in events]
    assert got == events


@pytest.mark.parametrize("clip", ["face_recognition_examples/video/short_hamilton_clip.mp4",
                                  "videos/known_identity/obama_speech.mp4"])
def test_every_track_in_view_for_a_second_ends_decided(tmp_path, data_dir, stills_gallery, clip) -> None:
    """A face big enough to embed for >= 1 s is never left silent: its track is named or called unknown."""
    events = run_daemon(tmp_path, data_dir / clip, stills_gallery, "decided")
    faces = {(e["topic"], e["track_id"]) for e in events if e["topic"] in ("face.recognized", "face.unknown")}
    ended = [e for e in events if e["topic"] == "track.ended"]
    long = [e for e in ended if e["sized_s"] >= 1.0]
    assert long, "the clip has no face in view for a second"
    for e in long:
        assert e["decision"] in ("recognized", "unknown"), e
        if e["decision"] == "unknown":
            assert ("face.unknown", e["track_id"]) in faces, e
        else:
            announced = {ev["identity"] for ev in events if ev["topic"] == "face.recognized"}
            assert e["identity"] in announced, e
    stats = [e for e in events if e["topic"] == "stats"][-1]
    undecided = sum(stats["tracks_undecided"].values())
    assert undecided == sum(e["decision"] == "undecided" for e in ended)
