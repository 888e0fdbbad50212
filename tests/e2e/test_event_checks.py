"""The streaming event checks at the default (fast) settings: strangers stay strangers, animals are no
faces, a 1080p crowd names nobody. The Hamilton, Obama and slideshow checks live in test_daemon.py,
test_tracking.py and test_slideshow.py."""

from __future__ import annotations

import pytest
from daemon_helpers import run_daemon

TALKING_HEADS = [f"videos/talking_heads/video_retalking_{i}.mp4" for i in range(1, 6)]


def _topics(events: list[dict], topic: str) -> list[dict]:
    return [e for e in events if e["topic"] == topic]


@pytest.mark.parametrize("clip", TALKING_HEADS)
def test_talking_heads_are_unknown_never_named(tmp_path, data_dir, stills_gallery, clip) -> None:
    events = run_daemon(tmp_path, data_dir / clip, stills_gallery, "th")
    assert _topics(events, "face.recognized") == []
    assert len(_topics(events, "face.unknown")) >= 1  # the one person in view is reported, as unknown


@pytest.mark.parametrize("clip", ["videos/no_faces/dog.mp4", "videos/no_faces/kitten.mp4"])
def test_animals_give_no_face_events_and_no_tracks(tmp_path, data_dir, stills_gallery, clip) -> None:
    events = run_daemon(tmp_path, data_dir / clip, stills_gallery, "animal")
    assert [e for e in events if e["topic"].startswith("face.") or e["topic"] == "track.ended"] == []
    stats = _topics(events, "stats")[-1]
    assert stats["frames_read"] > 300
    # A file that ends is processed to its last frame (only a stop that was asked for lets frames go).
    assert stats["frames_skipped_on_stop"] == 0
    assert list(stats["frames_done"].values()) == [stats["frames_read"]]


def test_crowd_1080p_names_nobody_and_reports_the_strangers(tmp_path, data_dir, stills_gallery) -> None:
    events = run_daemon(tmp_path, data_dir / "videos/multi_face/facenet_pytorch_crowd.mp4", stills_gallery, "crowd")
    assert _topics(events, "face.recognized") == []
    # 5-8 people face the camera; each big enough to judge is reported unknown (one track each).
    unknown = _topics(events, "face.unknown")
    assert len(unknown) >= 4, unknown
    assert len({e["track_id"] for e in unknown}) == len(unknown)
