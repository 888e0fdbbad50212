"""Prometheus metrics of a running daemon (prometheus-client), served at ``/metrics``.

The pipeline's counters (frames read, dropped and processed, faces embedded, queue depths, errors)
already exist on the sources and stages; a collector reads them when Prometheus scrapes, so the
hot path pays nothing for them. Only two things are counted as they happen: events by topic (a
sink) and the capture-to-events latency of each frame (an observer), both one locked add.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from daemon.stores.drift import quantile
from pipeline.types import MatchedFrame

if TYPE_CHECKING:
    from daemon.stats import DaemonStats

LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.15, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class _DaemonCollector(Collector):
    def __init__(self, owner: DaemonMetrics) -> None:
        self.owner = owner

    def collect(self) -> Iterator[Metric]:
        snap = self.owner.snapshot()
        read = CounterMetricFamily("facestream_frames_read", "Frames decoded from a source.", labels=["source"])
        dropped = CounterMetricFamily("facestream_frames_dropped", "Frames a live source let go because a newer one "
                                      "arrived before the pipeline took it (stale).", labels=["source"])
        done = CounterMetricFamily("facestream_frames_processed", "Frames that went through every stage.",
                                   labels=["source"])
        up = GaugeMetricFamily("facestream_source_up", "1 while a source delivers frames (state 'opened').",
                               labels=["source"])
        for src in snap.sources:
            read.add_metric([src.id], src.frames_read)
            dropped.add_metric([src.id], src.frames_dropped)
            done.add_metric([src.id], src.frames_processed)
            up.add_metric([src.id], float(self.owner.source_up(src.id)))
        yield from (read, dropped, done, up)
        yield CounterMetricFamily("facestream_faces_embedded", "Faces aligned and embedded.", value=snap.faces_embedded)
        engines = GaugeMetricFamily("facestream_engine_info", "1 per network, labelled with the runtime, execution "
                                    "provider and precision it actually runs on.",
                                    labels=["network", "runtime", "provider", "precision"])
        for net, e in snap.engines.items():
            engines.add_metric([net, e["runtime"], e["provider"], e["precision"]], 1.0)
        yield engines
        scans = CounterMetricFamily("facestream_detections", "Detector runs by kind: full-frame scans and crop "
                                    "refreshes of known faces.", labels=["kind"])
        scans.add_metric(["scan"], snap.frames_detected)
        scans.add_metric(["refresh"], snap.frames_refreshed)
        yield scans
        queues = GaugeMetricFamily("facestream_queue_depth", "Messages waiting between two stages.", labels=["queue"])
        for name, depth in snap.queues.items():
            queues.add_metric([name], depth)
        yield queues
        errors = CounterMetricFamily("facestream_stage_errors", "Messages a stage failed on.", labels=["stage"])
        for name, n in snap.stage_errors.items():
            errors.add_metric([name], n)
        yield errors
        sink_errors = CounterMetricFamily("facestream_sink_errors", "Events a sink failed to take.", labels=["sink"])
        for name, n in snap.sink_errors.items():
            sink_errors.add_metric([name], n)
        yield sink_errors
        yield from _mqtt(snap.sink_counters)
        yield GaugeMetricFamily("facestream_gallery_identities", "People in the gallery in use.",
                                value=snap.gallery.identities)
        yield GaugeMetricFamily("facestream_gallery_version", "Version of the gallery in use.",
                                value=snap.gallery.version)
        state = GaugeMetricFamily("facestream_gallery_state", "1 for the state of the gallery in use: current, or "
                                  "stale (its database is lost; matching goes on with the last gallery read).",
                                  labels=["state"])
        for name in ("current", "stale"):
            state.add_metric([name], float(snap.gallery.state == name))
        yield state
        yield GaugeMetricFamily("facestream_match_threshold", "Score a face must reach to be named.",
                                value=snap.gallery.threshold)
        yield from self._identities(snap.gallery.identities)
        yield from self._guard()
        yield GaugeMetricFamily("facestream_uptime_seconds", "Seconds since the pipeline started.",
                                value=max(0.0, time.monotonic() - self.owner.started()))

    def _identities(self, identities: int) -> Iterator[Metric]:
        """A series per identity, only when opted in (``http.identity_metrics``, or a small gallery): the label's
        cardinality is the gallery's size."""
        drift = self.owner.drift
        if drift is None or not self.owner.identity_labels(identities):
            return
        score = Metric("facestream_identity_score", "Scores of the tracks named this identity: quantiles over its "
                       "last drift.recent tracks, count and sum since the daemon began keeping them.", "summary")
        refused = CounterMetricFamily("facestream_identity_refusals", "Tracks that ended unknown with this "
                                      "identity as their top-1.", labels=["identity"])
        for name, (recent, total, total_sum, refusals) in sorted(drift.scores().items()):
            ordered = sorted(recent)
            for q in (0.1, 0.5, 0.9) if ordered else ():
                score.add_sample("facestream_identity_score", {"identity": name, "quantile": str(q)},
                                 quantile(ordered, q))
            score.add_sample("facestream_identity_score_count", {"identity": name}, total)
            score.add_sample("facestream_identity_score_sum", {"identity": name}, total_sum)
            refused.add_metric([name], refusals)
        yield score
        yield refused

    def _guard(self) -> Iterator[Metric]:
        guard = self.owner.guard
        if guard is None:
            return
        refused = CounterMetricFamily("facestream_http_refused", "HTTP requests refused before any handler ran, "
                                      "by reason: host (DNS rebinding), origin (cross-site), header (no "
                                      "X-Facestream-Request), token (missing or wrong), throttled (an address "
                                      "that sent too many wrong tokens, made to wait).", labels=["reason"])
        for reason in ("host", "origin", "header", "token", "throttled"):
            refused.add_metric([reason], guard.refused[reason])
        yield refused
        if guard.audit is not None:
            yield CounterMetricFamily("facestream_api_audit_lines", "Lines written to the API audit log.",
                                      value=guard.audit.lines)


def _mqtt(c: dict[str, Any]) -> Iterator[Metric]:
    """The MQTT sink's and the actions' counters, when they run."""
    if "actions" in c:
        runs = CounterMetricFamily("facestream_action_runs", "Action runs by result (ok, failed, timed_out) and "
                                   "events not run (rate_limited, dropped).", labels=["action", "result"])
        for name, counts in c["actions"].items():
            for result in ("ok", "failed", "timed_out", "rate_limited", "dropped"):
                runs.add_metric([name, result], counts.get(result, 0))
        yield runs
    if "mqtt_published" not in c:
        return
    yield CounterMetricFamily("facestream_mqtt_published", "Messages the MQTT broker acknowledged.",
                              value=c["mqtt_published"])
    yield CounterMetricFamily("facestream_mqtt_spooled", "Events kept in the on-disk spool because the broker "
                              "was not connected.", value=c["mqtt_spooled"])
    yield CounterMetricFamily("facestream_mqtt_dropped", "Messages dropped because the spool was full.",
                              value=c["mqtt_dropped"])
    yield GaugeMetricFamily("facestream_mqtt_pending", "Messages in the spool, not yet acknowledged.",
                            value=c["mqtt_pending"])
    yield GaugeMetricFamily("facestream_mqtt_connected", "1 while connected to the MQTT broker.",
                            value=float(c["mqtt_connected"]))


class DaemonMetrics:
    """One registry per daemon (tests run several in a process); a sink and an observer of the events stage."""

    def __init__(self, snapshot: Callable[[], DaemonStats], source_up: Callable[[str], bool],
                 started: Callable[[], float]) -> None:
        self.snapshot, self.source_up, self.started = snapshot, source_up, started
        self.guard: Any = None  # the HTTP request guard, once the app is made (its refusal counters)
        self.drift: Any = None  # the drift watch (per-identity scores), when the daemon keeps one
        self.identity_labels: Callable[[int], bool] = lambda identities: False  # http.identity_metrics
        self.registry = CollectorRegistry()
        self.registry.register(_DaemonCollector(self))
        self.events = Counter("facestream_events", "Events published, by topic.", ["topic"], registry=self.registry)
        self.latency = Histogram("facestream_frame_latency_seconds", "Capture (or read) of a frame to its events "
                                 "published.", buckets=LATENCY_BUCKETS, registry=self.registry)

    def send(self, topic: str, body: dict[str, Any]) -> None:
        self.events.labels(topic).inc()

    def close(self) -> None:
        pass

    def observe(self, msg: MatchedFrame, claims: dict[int, str | None]) -> None:
        self.latency.observe(max(0.0, time.time() - msg.tracked.frame.capture_time))

    def source_ended(self, source_id: str) -> None:
        pass

    def render(self) -> bytes:
        return generate_latest(self.registry)
