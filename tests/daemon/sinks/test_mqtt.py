"""The MQTT sink against a real mosquitto broker: the events of the JSONL in order, Home Assistant discovery,
a broker outage (killed mid-run, down for a whole run) losing nothing, and bad settings refused in one line."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest
from mqtt_helpers import Broker, Subscriber

from daemon.config import load_settings
from daemon.profiles import build_daemon

pytestmark = pytest.mark.skipif(not Path("/usr/sbin/mosquitto").exists(), reason="mosquitto is not installed")


@pytest.fixture(scope="module")
def broker(tmp_path_factory):
    b = Broker(tmp_path_factory.mktemp("mosquitto")).start()
    yield b
    b.stop()


def _settings(tmp: Path, sources: list[str], url: str, **mqtt):
    return load_settings(None, sources=sources, embedder={"runtime": "torch"},
                         sinks={"jsonl": str(tmp / "events.jsonl"), "zmq": None},
                         mqtt={"url": url, "spool": str(tmp / "spool.sqlite"), "reconnect_max_s": 1.0, **mqtt})


def _bodies(messages: list[tuple[str, bytes, bool]]) -> list[dict]:
    """Bodies of the event messages (not the retained state, availability or discovery topics)."""
    return [json.loads(p) for t, p, _ in messages if t.rsplit("/", 1)[-1].count(".") or t.endswith("/stats")]


def _events(sub: Subscriber) -> list[dict]:
    with sub.lock:
        return _bodies(sub.messages)


def _jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_hamilton_events_and_home_assistant_discovery(tmp_path, broker, data_dir, stills_gallery):
    video = data_dir / "face_recognition_examples" / "video" / "short_hamilton_clip.mp4"
    sub = Subscriber(broker, "facestream/#")
    ha = Subscriber(broker, "homeassistant/#")
    try:
        settings = _settings(tmp_path, [str(video)], broker.url, homeassistant=True)
        daemon, _ = build_daemon(settings, stills_gallery)
        assert daemon.run(install_signals=False) == 0
        logged = _jsonl(tmp_path / "events.jsonl")
        assert sub.wait_for(lambda m: len([1 for t, _, _ in m if t == "facestream/availability"]) >= 2)
        got = _events(sub)
        assert [e["event_id"] for e in got] == [e["event_id"] for e in logged]  # all, once, in order
        assert got == logged  # the same bodies as the log
        print(f"MQTT: {len(got)} events received, the {len(logged)} of the JSONL in order")
        recognized = [t for t, p, _ in sub.messages if t.endswith("/face.recognized")
                      and json.loads(p)["identity"] == "lin_manuel_miranda"]
        named = [e for e in logged if e["topic"] == "face.recognized" and e["identity"] == "lin_manuel_miranda"]
        assert named and recognized == ["facestream/short_hamilton_clip/face.recognized"] * len(named)
        assert daemon.snapshot().sink_counters["mqtt_published"] >= len(logged)
        assert ha.wait_for(lambda m: len(m) >= 2)
        configs = {t: json.loads(p) for t, p, _ in ha.messages}
        assert set(configs) == {"homeassistant/sensor/facestream/short_hamilton_clip_person/config",
                                "homeassistant/binary_sensor/facestream/short_hamilton_clip_unknown/config"}
        for cfg in configs.values():
            assert {"unique_id", "state_topic", "availability_topic", "device"} <= set(cfg)
            assert cfg["availability_topic"] == "facestream/availability"
            assert cfg["device"]["identifiers"]
        sensor = configs["homeassistant/sensor/facestream/short_hamilton_clip_person/config"]
        states = [json.loads(p) for t, p, _ in sub.messages if t == sensor["state_topic"]]
        assert "lin_manuel_miranda" in [s["identity"] for s in states]
    finally:
        sub.close()
        ha.close()
    # A later start without that source removes its entities (empty retained configs).
    from daemon.sinks.mqtt import MqttSink

    late = Subscriber(broker, "homeassistant/#")  # gets the retained configs, then their removal
    try:
        sink = MqttSink(settings.mqtt, settings.mqtt.spool, ["front_door"])
        assert sink.wait_connected(10)
        assert late.wait_for(lambda m: sum(1 for t, p, _ in m if "short_hamilton_clip" in t and p == b"") == 2)
        assert late.wait_for(lambda m: any("front_door_person" in t and p for t, p, _ in m))
        sink.close()
    finally:
        late.close()


def test_broker_killed_mid_run_and_down_for_a_whole_run(tmp_path, data_dir, stills_gallery):
    """Killed for 10 s on a looped live source: every event of the JSONL reaches the (persistent-session)
    subscriber once; a run with the broker down throughout exits 0 and its events wait in the spool."""
    broker = Broker(tmp_path / "broker").start()
    try:
        _outage(tmp_path, broker, data_dir, stills_gallery)
    finally:
        broker.stop()


def _outage(tmp_path, broker, data_dir, stills_gallery):
    video = data_dir / "face_recognition_examples" / "video" / "short_hamilton_clip.mp4"
    sub = Subscriber(broker, "facestream/#", session="fs-test-outage")
    try:
        settings = _settings(tmp_path, [str(video)], broker.url)
        daemon, _ = build_daemon(settings, stills_gallery, {"live": True, "realtime": True, "loop": True})
        rc: list[int] = []
        runner = threading.Thread(target=lambda: rc.append(daemon.run(install_signals=False)))
        runner.start()
        assert sub.wait_for(lambda m: any(t.endswith("/face.unknown") for t, _, _ in m), 30)
        time.sleep(1.5)  # mosquitto saves the subscriber's session every second
        broker.stop(kill=True)
        time.sleep(10)
        broker.start()
        deadline = time.monotonic() + 20
        while daemon.snapshot().sink_counters["mqtt_pending"] and time.monotonic() < deadline:
            time.sleep(0.2)
        daemon.request_stop()
        runner.join(30)
        assert rc == [0]
        counters = daemon.snapshot().sink_counters
        assert counters["mqtt_spooled"] > 0 and counters["mqtt_dropped"] == 0
        logged = [e["event_id"] for e in _jsonl(tmp_path / "events.jsonl")]
        assert sub.wait_for(lambda m: len(_bodies(m)) >= len(logged), 20)
        got = [e["event_id"] for e in _events(sub)]
        assert sorted(got) == sorted(logged) and len(set(got)) == len(got)  # every one, none twice
        assert got == logged  # and in order
        print(f"MQTT outage: {len(got)} of {len(logged)} events received once, in order; counters {counters}")
    finally:
        sub.close()

    # The broker down for a whole run: exit 0, the events wait on disk; the next start sends them.
    broker.stop()
    run2 = tmp_path / "run2"
    run2.mkdir()
    settings = _settings(run2, [str(video)], broker.url)
    daemon, _ = build_daemon(settings, stills_gallery)
    assert daemon.run(install_signals=False) == 0
    logged = [e["event_id"] for e in _jsonl(run2 / "events.jsonl")]
    assert daemon.snapshot().sink_counters["mqtt_pending"] >= len(logged) > 0
    broker.start()
    sub = Subscriber(broker, "facestream/#")
    try:
        from daemon.sinks.mqtt import MqttSink

        sink = MqttSink(settings.mqtt, settings.mqtt.spool, [])
        assert sub.wait_for(lambda m: len(_bodies(m)) >= len(logged), 20)
        sink.close()
        assert [e["event_id"] for e in _events(sub)] == logged
        print(f"MQTT broker down for a run: {len(logged)} events spooled, all sent at the next start")
    finally:
        sub.close()
        broker.stop()


def test_unreachable_broker_is_not_fatal_and_a_wrong_password_is_one_error(tmp_path):
    from structlog.testing import capture_logs

    from daemon.sinks.mqtt import MqttSink

    dead = load_settings(None, mqtt={"url": "mqtt://127.0.0.1:9", "spool": str(tmp_path / "a.sqlite")}).mqtt
    sink = MqttSink(dead, dead.spool, ["cam"])
    sink.send("face.unknown", {"topic": "face.unknown", "source": "cam", "identity": None})
    time.sleep(0.5)
    assert sink.counters()["mqtt_spooled"] >= 1 and not sink.connected
    sink.close(flush_s=0)
    assert sink.counters()["mqtt_pending"] >= 1  # kept for the next start

    broker = Broker(tmp_path / "auth", users={"door": "right"}).start()
    try:
        (tmp_path / "pw").write_text("wrong\n")
        cfg = load_settings(None, mqtt={"url": f"mqtt://door@127.0.0.1:{broker.port}", "reconnect_max_s": 1,
                                        "password_file": str(tmp_path / "pw"),
                                        "spool": str(tmp_path / "b.sqlite")}).mqtt
        with capture_logs() as logs:
            sink = MqttSink(cfg, cfg.spool, [])
            time.sleep(3.5)  # several refused attempts
            assert sink.counters()["mqtt_state"] == "refused" and not sink.connected
            sink.close(flush_s=0)
        refused = [e for e in logs if e["event"] == "mqtt_connection_refused"]
        assert len(refused) == 1 and refused[0]["log_level"] == "error" and "wrong" not in str(refused[0])
        (tmp_path / "pw").write_text("right\n")
        sink = MqttSink(cfg, cfg.spool, [])
        assert sink.wait_connected(10)
        sink.close()
    finally:
        broker.stop()


@pytest.mark.parametrize("argv, message", [
    (["--mqtt", "mqtt//127.0.0.1:1883"], "mqtt.url must look like mqtt://HOST:PORT"),
    (["--mqtt", "mqtt://door:secret@127.0.0.1:1883"], "mqtt.url must not hold a password"),
    (["--mqtt", "mqtt://127.0.0.1:99999"], "is not a valid URL"),
])
def test_bad_mqtt_settings_are_one_line(cli, tmp_path, argv, message):
    code, _out, err = cli("run", "--source", str(tmp_path / "x.mp4"), "--zmq", "", *argv)
    assert code == 2
    assert message in err and len(err.strip().splitlines()) == 1
    assert "secret" not in err


def test_missing_ca_file_is_one_line(cli, tmp_path):
    cfg = tmp_path / "c.toml"
    cfg.write_text(f'[mqtt]\nurl = "mqtts://127.0.0.1:8883"\nca_file = "{tmp_path / "nope.pem"}"\n')
    code, _out, err = cli("run", "--config", str(cfg), "--source", str(tmp_path / "x.mp4"), "--zmq", "")
    assert code == 2 and "mqtt.ca_file" in err and "does not exist" in err and len(err.strip().splitlines()) == 1
