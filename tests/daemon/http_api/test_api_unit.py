"""The HTTP app on its own (no daemon, no face data): a real uvicorn server on 127.0.0.1 around the live
routes, fed a synthetic frame and events; JSON errors, 405 with the allowed methods, the event stream's
resume, snapshots, metrics from a typed snapshot, and the gallery routes of a daemon without a gallery."""

from __future__ import annotations

import contextlib
import json
import time

import numpy as np
import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from daemon.config import load_settings
from daemon.http.app import make_app
from daemon.http.context import HttpContext
from daemon.http.event_hub import EventHub
from daemon.http.faces import DaemonLink, FaceService
from daemon.http.live_view import LiveView
from daemon.http.metrics import DaemonMetrics
from daemon.http.server import HttpServer
from daemon.stats import DaemonStats, GalleryState, SourceStats
from pipeline.match import CentroidMatcher
from pipeline.types import Detection, Frame, MatchedFrame, TrackedFrame, TrackView

HEADERS = {"X-Facestream-Request": "1"}


def _snapshot() -> DaemonStats:
    return DaemonStats(
        uptime_s=12.5, model_id="m@1",
        sources=(SourceStats("cam", "/videos/cam.mp4", "file", False, 30, 2, 28, False),),
        stage_fps={"detect": 2.0}, stage_busy={"detect": 0.5}, stage_errors={"detect": 1, "embed": 0},
        queues={"frames": 3}, frames_detected=9, frames_refreshed=19, frames_skipped_on_stop=0, faces_embedded=5,
        events_sent=4, events_dropped_zmq=0, sink_errors={"JsonlSink": 2}, frames_done={"cam": 28},
        latency={"p50_ms": 10.0, "p99_ms": 50.0}, gallery=GalleryState(CentroidMatcher([]), 0.93, 0.02, 6))


@pytest.fixture(scope="module")
def server():
    settings = load_settings(None, http={"listen": "127.0.0.1:0"})
    view, hub = LiveView(["cam"]), EventHub(10)
    metrics = DaemonMetrics(_snapshot, lambda sid: True, time.monotonic)
    faces = FaceService(DaemonLink(settings, None, None, lambda: _snapshot().gallery, lambda: None,  # type: ignore[arg-type]
                                   lambda: None, hub.send))
    status = {"calls": 0}

    def status_fn(paths: bool) -> dict:
        status["calls"] += 1
        return {"paths": paths, "sources": [view.status("cam")]}

    app = make_app(HttpContext(settings.http, faces, hub, view, metrics, status_fn))
    metrics.guard = app
    srv = HttpServer(app, "127.0.0.1:0")
    srv.start()
    image = np.full((120, 160, 3), 90, np.uint8)
    d = Detection((20.0, 20.0, 80.0, 90.0), 0.99, np.zeros((5, 2), np.float32))
    tracked = TrackedFrame(Frame("cam", 7, 0.28, 0.0, image, False), (TrackView(3, d.box, d, 0, 5),), (), ())
    view.observe(MatchedFrame(tracked, (), ()), {3: "ada"})
    for i in range(3):
        hub.send("face.recognized", {"identity": f"p{i}", "source": "cam"})
    yield srv, hub
    srv.stop()


def test_status_snapshot_and_recent_events(server) -> None:
    srv, _ = server
    s = requests.get(srv.url + "/v1/status", timeout=10).json()
    assert s["paths"] is False and s["sources"][0]["faces"][0]["identity"] == "ada"
    shot = requests.get(srv.url + "/v1/sources/cam/snapshot.jpg", timeout=10)
    assert shot.status_code == 200 and shot.content[:2] == b"\xff\xd8"
    assert json.loads(shot.headers["X-Facestream-Faces"]) == ["ada"]
    recent = requests.get(srv.url + "/v1/events/recent?limit=2", timeout=10).json()["events"]
    assert [e["identity"] for e in recent] == ["p1", "p2"] and [e["seq"] for e in recent] == [2, 3]


def test_json_errors_and_allowed_methods(server) -> None:
    srv, _ = server
    r = requests.get(srv.url + "/v1/recognize", timeout=10)
    assert r.status_code == 405 and "use POST" in r.json()["error"]["message"]
    r = requests.get(srv.url + "/v1/sources/nope/snapshot.jpg", timeout=10)
    assert r.status_code == 404 and r.json()["error"]["message"] == "no source named 'nope'"
    r = requests.get(srv.url + "/v1/events/recent?limit=0", timeout=10)
    assert r.status_code == 422 and r.json()["error"]["message"].startswith("query.limit")
    assert requests.get(srv.url + "/v1/identities", timeout=10).json()["identities"] == []
    r = requests.post(srv.url + "/v1/identities/ada/photos", data=b"x", headers={**HEADERS, "Content-Type":
                                                                                 "image/jpeg"}, timeout=10)
    assert r.status_code == 409 and "without a gallery" in r.json()["error"]["message"]


def test_the_event_stream_resumes_after_its_last_event_id(server) -> None:
    srv, hub = server
    with contextlib.closing(requests.get(srv.url + "/v1/events", headers={"Last-Event-ID": "1"}, stream=True,
                                         timeout=(5, 10))) as r:
        lines = r.iter_lines(decode_unicode=True)
        ids = []
        for line in lines:
            if line.startswith("id: "):
                ids.append(int(line[4:]))
            if line.startswith(": connected"):
                break
        assert ids == [2, 3]  # what it missed after event 1, then live
        hub.send("face.unknown", {"source": "cam"})
        for line in lines:
            if line.startswith("event: "):
                assert line == "event: face.unknown"
                break


def test_metrics_come_from_the_typed_snapshot(server) -> None:
    srv, _ = server
    families = {f.name: f for f in text_string_to_metric_families(requests.get(srv.url + "/metrics", timeout=10).text)}
    value = {f: {tuple(s.labels.values()): s.value for s in families[f].samples} for f in families}
    assert value["facestream_frames_processed"][("cam",)] == 28
    assert value["facestream_stage_errors"][("detect",)] == 1 and value["facestream_stage_errors"][("embed",)] == 0
    assert value["facestream_gallery_version"][()] == 6 and value["facestream_match_threshold"][()] == 0.93
    assert value["facestream_sink_errors"][("JsonlSink",)] == 2
