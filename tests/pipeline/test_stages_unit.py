"""The stages on synthetic messages (no face data): the base stage's dispatch and failure handling, the match
stage's aggregate decisions, gate and hot swap, and the events stage's rules (once per identity per cooldown,
track.ended for every track, statuses and stats)."""

from __future__ import annotations

import queue
from typing import Any

import numpy as np
import pytest

from pipeline.events import EventsStage
from pipeline.gallery import Identity
from pipeline.match import CentroidMatcher
from pipeline.match_stage import FaceGate, MatchStage
from pipeline.stage import Stage
from pipeline.track_decision import TrackJudge
from pipeline.types import (
    Detection,
    EmbeddedFrame,
    EndedTrack,
    FaceEmbedding,
    Frame,
    MatchedFrame,
    Shutdown,
    SourceStatus,
    TrackedFrame,
    TrackView,
)

DIM = 16
RNG = np.random.default_rng(7)


def unit(v: np.ndarray) -> np.ndarray:
    return (v / np.linalg.norm(v)).astype(np.float32)


CENTRES = {name: unit(RNG.normal(size=DIM)) for name in ("ada", "bob")}


def det(size: float = 100.0, prob: float = 0.999) -> Detection:
    lm = np.array([[30, 40], [70, 40], [50, 60], [35, 80], [65, 80]], np.float32) * size / 100.0
    return Detection((0.0, 0.0, size, size), prob, lm)


def frame(i: int, source: str = "cam") -> Frame:
    return Frame(source, i, i / 25.0, 1000.0 + i / 25.0, np.zeros((4, 4, 3), np.uint8), False)


def drain(q: queue.Queue[Any]) -> list[Any]:
    out = []
    while not q.empty():
        out.append(q.get_nowait())
    return out


class Doubler(Stage):
    name = "doubler"
    accepts = (int,)

    def process(self, msg: int) -> None:
        if msg < 0:
            raise RuntimeError("negative")
        self.emit(msg * 2)


def test_the_base_stage_dispatches_passes_statuses_and_survives_a_bad_message() -> None:
    inq: queue.Queue[Any] = queue.Queue()
    outq: queue.Queue[Any] = queue.Queue()
    st = Doubler(inq, outq)
    status = SourceStatus("cam", "eof", "end", 0.0, 3, 0)
    for m in (1, status, -1, "text", 4, Shutdown()):
        inq.put(m)
    st.start()
    assert st.join(5)
    out = drain(outq)
    assert out[:3] == [2, status, 8] and isinstance(out[3], Shutdown)
    assert st.errors == 2 and st.processed == 5  # the negative int and the str, each counted, none fatal
    assert "unexpected message str" in str(st.error)


def _embedded(i: int, faces: list[tuple[int, np.ndarray, Detection]], ended: tuple[EndedTrack, ...] = ()
              ) -> EmbeddedFrame:
    f = frame(i)
    views = tuple(TrackView(tid, d.box, d, 0, i + 1) for tid, _, d in faces)
    tracked = TrackedFrame(f, views, tuple(t for t, _, _ in faces), ended)
    return EmbeddedFrame(tracked, tuple(FaceEmbedding(tid, v, d, 1.0, 50.0) for tid, v, d in faces))


def _near(name: str, noise: float = 0.05) -> np.ndarray:
    return unit(CENTRES[name] + noise * RNG.normal(size=DIM))


def _matcher(names: list[str]) -> CentroidMatcher:
    return CentroidMatcher([Identity(n, CENTRES[n], CENTRES[n][None, :], np.zeros(1, bool), [], []) for n in names])


def test_the_match_stage_names_a_track_on_its_aggregate_and_refuses_gated_faces() -> None:
    inq: queue.Queue[Any] = queue.Queue()
    outq: queue.Queue[Any] = queue.Queue()
    st = MatchStage(inq, outq, _matcher(["ada", "bob"]), 0.8, 0.05, TrackJudge(min_faces=2, unknown_after=3),
                    gallery_version=3, gate=FaceGate(min_px=32.0), face_votes=True)
    st.process(_embedded(0, [(1, _near("ada"), det())]))
    st.process(_embedded(1, [(1, _near("ada"), det()), (2, _near("bob"), det(size=10.0))]))  # track 2: too small
    first, second = drain(outq)
    assert [d.claimed for d in first.decisions] == [None]  # one face: not enough to name
    assert [(d.track_id, d.claimed, d.newly_claimed) for d in second.decisions] == [(1, "ada", True)]
    assert second.decisions[0].face_identity == "ada" and second.decisions[0].candidates[0][0] == "ada"
    # A stranger far from both: unknown after three judgeable faces, reported once.
    stranger = unit(RNG.normal(size=DIM))
    for i in range(3):
        st.process(_embedded(2 + i, [(5, unit(stranger + 0.01 * RNG.normal(size=DIM)), det())]))
    unknown = [d.unknown for m in drain(outq) for d in m.decisions]
    assert unknown == [False, False, True]
    # The gallery swapped whole: bob's faces are judged against the new state only.
    st.swap(_matcher(["bob"]), 0.8, 0.0, 4)
    assert st.state()[3] == 4
    ended = EndedTrack(9, 0, 1, 0.0, 0.1, 2)
    st.process(_embedded(9, [(9, _near("bob"), det())]))
    st.process(_embedded(10, [], ended=(ended,)))
    last = drain(outq)[-1]
    assert [(e.ended.track_id, e.decision, e.identity) for e in last.ended] == [(9, "recognized", "bob")]


class ListSink:
    def __init__(self) -> None:
        self.events: list[tuple[str, dict]] = []

    def send(self, topic: str, body: dict) -> None:
        self.events.append((topic, body))

    def close(self) -> None:
        pass


def _matched(i: int, decisions: tuple = (), ended: tuple = (), source: str = "cam") -> MatchedFrame:
    return MatchedFrame(TrackedFrame(frame(i, source), (), (), tuple(e.ended for e in ended)), decisions, ended)


def test_the_events_stage_announces_once_per_cooldown_and_ends_every_track() -> None:
    from pipeline.types import EndedTrackSummary, TrackDecision

    sink = ListSink()
    st = EventsStage(queue.Queue(), [sink], "model@1", lambda: 7, cooldown_s=10.0,
                     stats=lambda: {"custom": 1}, stats_interval_s=3600.0)
    st.handle(SourceStatus("cam", "opened", "w=4", 0.0, 0, 0))

    def named(tid: int) -> TrackDecision:
        return TrackDecision(tid, det(), "ada", 0.9, 0.2, "ada", True, False, 2)

    st.handle(_matched(0, (named(1),)))
    st.handle(_matched(25, (named(2),)))  # 1 s later, another track: inside the cooldown
    st.handle(_matched(300, (named(3),)))  # 12 s later: announced again
    end = EndedTrackSummary(EndedTrack(1, 0, 25, 0.0, 1.0, 20), "ada", 0.9, "recognized")
    st.handle(_matched(301, ended=(end,)))
    st.flush()  # the final stats
    topics = [t for t, _ in sink.events]
    assert topics == ["source.status", "face.recognized", "face.recognized", "track.ended", "stats"]
    rec = [b for t, b in sink.events if t == "face.recognized"]
    assert [b["track_id"] for b in rec] == [1, 3] and all(b["gallery_version"] == 7 for b in rec)
    ended = next(b for t, b in sink.events if t == "track.ended")
    assert ended["decision"] == "recognized" and ended["identity"] == "ada"
    stats = sink.events[-1][1]
    assert stats["custom"] == 1 and stats["tracks_decided"] == {"recognized": 1}
    assert all(b["schema"] == 1 and b["model"] == "model@1" for t, b in sink.events if t.startswith("face."))


def test_a_failing_sink_is_counted_and_never_stops_the_others() -> None:
    class Broken:
        def send(self, topic: str, body: dict) -> None:
            raise OSError("disk full")

    good = ListSink()
    st = EventsStage(queue.Queue(), [Broken(), good], "m@1", lambda: 0)
    st.handle(SourceStatus("cam", "opened", "", 0.0, 0, 0))
    st.handle(SourceStatus("cam", "eof", "", 0.0, 5, 0))
    assert [t for t, _ in good.events] == ["source.status", "source.status"]
    assert st.sink_errors == {"Broken": 2} and st.events_sent == 2


@pytest.mark.parametrize("bad", [{"min_faces": 0}, {"unknown_after": 0}])
def test_a_judge_that_could_never_decide_is_refused(bad: dict) -> None:
    with pytest.raises(ValueError, match="must be >= 1"):
        TrackJudge(**{"min_faces": 2, "unknown_after": 3, **bad})
