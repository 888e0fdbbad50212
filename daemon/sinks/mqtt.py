"""The MQTT sink (paho-mqtt 2.x): events to PREFIX/<source>/<topic>, retained per-source state, Home Assistant
discovery, and nothing lost while the broker is away.

``send`` only puts the event on an in-memory queue: the pipeline never waits for the broker. A worker thread
writes each message to the on-disk spool (``spool.py``) and, while connected, hands the spool's messages to
paho in order; a message leaves the spool when the broker acknowledges it (QoS 1). paho reconnects by itself
with a doubling delay, and resends what was in flight. A refused login is one ``error`` line, then retries.
"""

from __future__ import annotations

import queue
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import structlog

from daemon.sinks import check_event, encode
from daemon.sinks.mqtt_topics import (
    UNKNOWN_OFF,
    UNKNOWN_ON,
    Topics,
    discovery_configs,
    parse_mqtt_url,
    person_payload,
)
from daemon.sinks.spool import Spool

log = structlog.get_logger(__name__)

WINDOW = 100  # messages handed to paho and not yet acknowledged, at most


def _drained(q: Any) -> Iterator[Any]:
    """What a queue holds now, without waiting."""
    while True:
        try:
            yield q.get_nowait()
        except queue.Empty:
            return


class MqttSink:
    """One broker connection for the daemon's life. ``sources``: the configured source ids (their retained
    state and, with Home Assistant, their discovery configs; configs of sources no longer listed are removed)."""

    def __init__(self, cfg: Any, spool_path: Path, sources: list[str]) -> None:
        import paho.mqtt.client as mqtt

        scheme, self.host, self.port, _, _ = parse_mqtt_url(cfg.url)
        user, password = cfg.credentials()
        self.cfg = cfg
        self.topics = Topics(cfg.prefix, cfg.discovery_prefix)
        self.sources = list(dict.fromkeys(sources))
        self.spool = Spool(spool_path, cfg.spool_max)
        self.published = 0
        self.spooled = len(self.spool)  # left by an earlier run: sent first
        self.dropped = 0
        self.connected = False
        self.state = "connecting"
        self._queue: queue.Queue[tuple[str, bytes, bool] | None] = queue.Queue(maxsize=cfg.spool_max)
        # Acks arrive on paho's thread and are settled on the worker's, after the mapping was noted.
        self._acked: queue.SimpleQueue[int] = queue.SimpleQueue()
        self._mids: dict[int, int] = {}  # paho message id -> spool seq
        self._handed = 0  # highest spool seq handed to paho
        self._wake = threading.Event()
        self._closing = threading.Event()
        self._connected_once = threading.Event()
        self._auth_error_logged = False
        self._clear_at: dict[str, float] = {}  # person/<source> or unknown/<source> -> monotonic deadline
        client_id = cfg.client_id or f"facestream-{self.topics.node()}-{socket.gethostname()}"
        self._client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=True)
        if user is not None:
            self._client.username_pw_set(user, password)
        if scheme == "mqtts":
            self._client.tls_set(ca_certs=str(cfg.ca_file) if cfg.ca_file else None)
        self._client.will_set(self.topics.availability, "offline", qos=1, retain=True)
        self._client.reconnect_delay_set(1, max(1, int(cfg.reconnect_max_s)))
        self._client.max_queued_messages_set(0)
        self._client.on_connect = self._on_connect
        self._client.on_disconnect = self._on_disconnect
        self._client.on_publish = self._on_publish
        try:
            self._client.connect_async(self.host, self.port, keepalive=cfg.keepalive_s)
        except (OSError, ValueError) as exc:  # paho checks the host and port eagerly
            self.spool.close()
            raise ValueError(f"mqtt.url {cfg.url}: {exc}") from None
        self._client.loop_start()
        self._worker = threading.Thread(target=self._run, name="mqtt-sink", daemon=True)
        self._worker.start()

    # ---- the sink ---------------------------------------------------------------------------
    def send(self, topic: str, body: dict[str, Any]) -> None:
        check_event(topic, body)
        if topic == "stats" and not self.cfg.stats:
            return
        self._put(self.topics.event(topic, body), encode(body), False)
        src = body.get("source")
        if not isinstance(src, str):
            return
        if topic == "face.recognized":
            self._put(self.topics.person(src), person_payload(body.get("identity"), body.get("score"),
                                                              body.get("time")), True)
            self._clear_at[f"person/{src}"] = time.monotonic() + self.cfg.clear_after_s
        elif topic == "face.unknown":
            self._put(self.topics.unknown(src), UNKNOWN_ON.encode(), True)
            self._clear_at[f"unknown/{src}"] = time.monotonic() + self.cfg.clear_after_s
        elif topic == "source.status":
            self._put(self.topics.state(src), encode({"status": body.get("status"), "detail": body.get("detail"),
                                                      "time": body.get("time")}), True)

    def _put(self, topic: str, payload: bytes, retain: bool) -> None:
        try:
            self._queue.put_nowait((topic, payload, retain))
        except queue.Full:  # the worker is far behind (disk stalled): the newest is dropped, counted
            self.dropped += 1
        self._wake.set()

    def counters(self) -> dict[str, Any]:
        return {"mqtt_published": self.published, "mqtt_spooled": self.spooled, "mqtt_dropped": self.dropped,
                "mqtt_pending": len(self.spool), "mqtt_connected": self.connected, "mqtt_state": self.state}

    # ---- paho's callbacks (its network thread) -----------------------------------------------
    def _on_connect(self, client: Any, userdata: Any, flags: Any, reason: Any, properties: Any) -> None:
        if reason.is_failure:
            self.state = "refused"
            if not self._auth_error_logged:  # once: paho keeps retrying with its doubling delay
                log.error("mqtt_connection_refused", broker=f"{self.host}:{self.port}", reason=str(reason),
                          detail="check mqtt.username and the password; retrying with backoff")
                self._auth_error_logged = True
            return
        # What paho had in flight it resends itself (same order, DUP set); the worker goes on after it.
        self.connected, self.state, self._auth_error_logged = True, "connected", False
        log.info("mqtt_connected", broker=f"{self.host}:{self.port}")
        client.publish(self.topics.availability, "online", qos=1, retain=True)
        self._connected_once.set()
        self._wake.set()

    def _on_disconnect(self, client: Any, userdata: Any, flags: Any, reason: Any, properties: Any) -> None:
        was = self.connected
        self.connected = False
        if not self._closing.is_set() and self.state != "refused":  # a refused login stays 'refused' until let in
            self.state = "reconnecting"
            if was:
                log.warning("mqtt_disconnected", broker=f"{self.host}:{self.port}", reason=str(reason),
                            detail="events are spooled on disk until the broker is back")

    def _on_publish(self, client: Any, userdata: Any, mid: int, reason: Any, properties: Any) -> None:
        self._acked.put(mid)
        self._wake.set()

    # ---- the worker ---------------------------------------------------------------------------
    def _run(self) -> None:
        announced = False
        while True:
            self._wake.wait(0.2)
            self._wake.clear()
            self._spool_new()
            self._settle_acks()
            self._clear_expired()
            if self.connected:
                if not announced:
                    self._announce()
                    announced = True
                self._hand_over()
            elif announced and not self.connected:
                announced = False  # announce again after a reconnect: the broker may have lost retained configs
            if self._closing.is_set() and self._queue.empty():
                return

    def _spool_new(self) -> None:
        for item in _drained(self._queue):
            if item is None:
                continue
            if not self.connected:
                self.spooled += 1
            self.dropped += self.spool.add(*item)

    def _settle_acks(self) -> None:
        for mid in _drained(self._acked):
            seq = self._mids.pop(mid, None)
            if seq is not None:  # availability and discovery messages are not spooled
                self.spool.delete(seq)
                self.published += 1

    def _hand_over(self) -> None:
        room = WINDOW - len(self._mids)
        if room <= 0:
            return
        for msg in self.spool.after(self._handed, room):
            info = self._client.publish(msg.topic, msg.payload, qos=self.cfg.qos if not msg.retain else 1,
                                        retain=msg.retain)
            self._handed = msg.seq
            if self.cfg.qos == 0 and not msg.retain:
                self.spool.delete(msg.seq)
                self.published += 1
            else:
                self._mids[info.mid] = msg.seq

    def _announce(self) -> None:
        """Retained discovery configs for the configured sources; empty retained messages clear the configs
        of sources announced before and no longer configured."""
        if not self.cfg.homeassistant:
            return
        configs: dict[str, bytes] = {}
        for src in self.sources:
            configs.update(discovery_configs(self.topics, src))
        for stale in sorted(self.spool.announced() - set(configs)):
            self._client.publish(stale, b"", qos=1, retain=True)
            log.info("mqtt_discovery_removed", topic=stale)
        for topic, payload in configs.items():
            self._client.publish(topic, payload, qos=1, retain=True)
        self.spool.set_announced(set(configs))

    def _clear_expired(self) -> None:
        now = time.monotonic()
        for key, at in list(self._clear_at.items()):
            if now < at:
                continue
            del self._clear_at[key]
            what, src = key.split("/", 1)
            if what == "person":
                self.dropped += self.spool.add(self.topics.person(src), person_payload(None, None, None), True)
            else:
                self.dropped += self.spool.add(self.topics.unknown(src), UNKNOWN_OFF.encode(), True)

    def wait_connected(self, timeout_s: float) -> bool:
        return self._connected_once.wait(timeout_s)

    def close(self, flush_s: float = 5.0) -> None:
        """Send what is spooled while the broker is there (bounded), say offline, disconnect. What is left stays
        in the spool for the next start."""
        self._closing.set()
        self._wake.set()
        self._worker.join(5.0)
        deadline = time.monotonic() + flush_s
        while self.connected and len(self.spool) and time.monotonic() < deadline:
            self._settle_acks()
            self._hand_over()
            time.sleep(0.02)
        self._settle_acks()
        if self.connected:
            self._client.publish(self.topics.availability, "offline", qos=1, retain=True).wait_for_publish(2.0)
        self._client.disconnect()
        self._client.loop_stop()
        self.connected, self.state = False, "closed"
        left = len(self.spool)
        if left:
            log.warning("mqtt_events_left_in_spool", events=left, spool=str(self.spool.path),
                        detail="sent at the next start")
        self.spool.close()
