"""What the MQTT sink publishes where: event topics, retained per-source state, and Home Assistant discovery.

Home Assistant's MQTT discovery (https://www.home-assistant.io/integrations/mqtt/#mqtt-discovery): a retained
JSON config at ``<discovery_prefix>/<component>/<node_id>/<object_id>/config`` creates the entity; an empty
retained message at the same topic removes it. Every entity names the shared availability topic (the
connection's last will) and one device per source, so a camera's entities group together.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit

_UNSAFE_LEVEL = re.compile(r"[/+#\x00]")
_UNSAFE_ID = re.compile(r"[^a-zA-Z0-9_-]")

UNKNOWN_ON, UNKNOWN_OFF = "ON", "OFF"


def parse_mqtt_url(url: str) -> tuple[str, str, int, str | None, str | None]:
    """(scheme, host, port, user, password) of ``mqtt://[USER[:PASS]@]HOST[:PORT]`` or ``mqtts://...``; a
    ValueError that says what is wrong otherwise."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise ValueError(f"mqtt.url {url!r} is not a valid URL ({exc})") from None
    if parts.scheme not in ("mqtt", "mqtts") or not parts.hostname:
        raise ValueError(f"mqtt.url must look like mqtt://HOST:PORT or mqtts://HOST:PORT, got {url!r}")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ValueError(f"mqtt.url must be only mqtt[s]://HOST:PORT, got {url!r} (topics go in mqtt.prefix)")
    default = 8883 if parts.scheme == "mqtts" else 1883
    user = unquote(parts.username) if parts.username else None
    password = unquote(parts.password) if parts.password is not None else None
    return parts.scheme, parts.hostname, port or default, user, password


def level(text: str) -> str:
    """``text`` as one topic level: '/', '+', '#' would split it or make it a wildcard."""
    return _UNSAFE_LEVEL.sub("_", text) or "_"


def object_id(text: str) -> str:
    return _UNSAFE_ID.sub("_", text) or "_"


@dataclass(frozen=True)
class Topics:
    """Topic names under one prefix."""

    prefix: str
    discovery_prefix: str = "homeassistant"

    @property
    def availability(self) -> str:
        return f"{self.prefix}/availability"

    def event(self, topic: str, body: dict[str, Any]) -> str:
        """PREFIX/<source>/<topic> for a source's events, PREFIX/<topic> for the daemon's own (stats)."""
        src = body.get("source")
        return f"{self.prefix}/{level(str(src))}/{topic}" if isinstance(src, str) and src else f"{self.prefix}/{topic}"

    def state(self, source: str) -> str:
        return f"{self.prefix}/{level(source)}/state"

    def person(self, source: str) -> str:
        return f"{self.prefix}/{level(source)}/person"

    def unknown(self, source: str) -> str:
        return f"{self.prefix}/{level(source)}/unknown"

    def node(self) -> str:
        return object_id(self.prefix.replace("/", "_"))

    def discovery(self, component: str, source: str, what: str) -> str:
        return f"{self.discovery_prefix}/{component}/{self.node()}/{object_id(source)}_{what}/config"


def _device(t: Topics, source: str) -> dict[str, Any]:
    return {"identifiers": [f"{t.node()}_{object_id(source)}"], "name": f"facestream {source}",
            "manufacturer": "facestream", "model": "face recognition camera"}


def discovery_configs(t: Topics, source: str) -> dict[str, bytes]:
    """Config topic -> retained JSON payload of the two entities of one source."""
    dev = _device(t, source)
    oid = f"{t.node()}_{object_id(source)}"
    sensor = {
        "name": "Recognised person", "unique_id": f"{oid}_person", "object_id": f"{oid}_person",
        "state_topic": t.person(source), "value_template": "{{ value_json.identity or 'none' }}",
        "json_attributes_topic": t.person(source), "availability_topic": t.availability,
        "payload_available": "online", "payload_not_available": "offline", "icon": "mdi:face-recognition",
        "device": dev,
    }
    unknown = {
        "name": "Unknown face in view", "unique_id": f"{oid}_unknown", "object_id": f"{oid}_unknown",
        "state_topic": t.unknown(source), "payload_on": UNKNOWN_ON, "payload_off": UNKNOWN_OFF,
        "availability_topic": t.availability, "payload_available": "online",
        "payload_not_available": "offline", "device_class": "occupancy", "icon": "mdi:account-question",
        "device": dev,
    }
    return {t.discovery("sensor", source, "person"): json.dumps(sensor).encode(),
            t.discovery("binary_sensor", source, "unknown"): json.dumps(unknown).encode()}


def person_payload(identity: str | None, score: float | None, time: str | None) -> bytes:
    return json.dumps({"identity": identity, "score": score, "time": time}).encode()
