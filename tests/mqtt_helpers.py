"""A real mosquitto broker on 127.0.0.1 (started, killed and restarted by tests) and a real subscriber."""

from __future__ import annotations

import shutil
import socket
import subprocess
import threading
import time
from pathlib import Path

MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Broker:
    """mosquitto with a generated config: anonymous, or users from a password file; persistence on, so a
    subscriber's persistent session (and messages queued for it) survives a restart."""

    def __init__(self, folder: Path, users: dict[str, str] | None = None) -> None:
        self.folder, self.port = folder, _free_port()
        folder.mkdir(parents=True, exist_ok=True)
        # As root, mosquitto drops to user 'mosquitto', which cannot write a test's folder: stay who we are.
        import getpass

        lines = [f"listener {self.port} 127.0.0.1", f"user {getpass.getuser()}", "persistence true",
                 f"persistence_location {folder}/", "autosave_interval 1", "autosave_on_changes true"]
        if users:
            pw = folder / "passwords"
            pw.write_text("")
            for user, password in users.items():
                subprocess.run(["mosquitto_passwd", "-b", str(pw), user, password], check=True, capture_output=True)
            pw.chmod(0o600)
            lines += ["allow_anonymous false", f"password_file {pw}"]
        else:
            lines.append("allow_anonymous true")
        self.conf = folder / "mosquitto.conf"
        self.conf.write_text("\n".join(lines) + "\n")
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    def start(self) -> Broker:
        self.proc = subprocess.Popen([MOSQUITTO, "-c", str(self.conf)], stdout=subprocess.DEVNULL,
                                     stderr=(self.folder / "mosquitto.log").open("ab"))
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), 0.2).close()
                return self
            except OSError:
                if self.proc.poll() is not None:
                    log = (self.folder / 'mosquitto.log').read_text()[-500:]
                    raise RuntimeError(f"mosquitto exited: {log}") from None
                time.sleep(0.05)
        raise RuntimeError("mosquitto did not start in 10 s")

    def stop(self, kill: bool = False) -> None:
        if self.proc is not None and self.proc.poll() is None:
            (self.proc.kill if kill else self.proc.terminate)()
            self.proc.wait(10)
        self.proc = None


class Subscriber:
    """paho subscriber on ``topic`` (QoS 1) recording (topic, payload, retained) in arrival order; with
    ``session`` a persistent session, so messages queued while it was away reach it after a broker restart."""

    def __init__(self, broker: Broker, topic: str = "facestream/#", session: str | None = None,
                 auth: tuple[str, str] | None = None) -> None:
        import paho.mqtt.client as mqtt

        self.messages: list[tuple[str, bytes, bool]] = []
        self.lock = threading.Lock()
        self.subscribed = threading.Event()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=session or "",
                                  clean_session=session is None)
        if auth:
            self.client.username_pw_set(*auth)
        self.client.reconnect_delay_set(0.1, 0.5)

        def on_connect(client, userdata, flags, reason, props):
            if not reason.is_failure:
                client.subscribe(topic, qos=1)

        def on_message(client, userdata, msg):
            with self.lock:
                self.messages.append((msg.topic, msg.payload, bool(msg.retain)))

        self.client.on_connect = on_connect
        self.client.on_subscribe = lambda *a: self.subscribed.set()
        self.client.on_message = on_message
        self.client.connect("127.0.0.1", broker.port, keepalive=5)
        self.client.loop_start()
        assert self.subscribed.wait(10), "subscriber could not subscribe"

    def topics(self) -> list[str]:
        with self.lock:
            return [t for t, _, _ in self.messages]

    def wait_for(self, predicate, timeout_s: float = 20.0) -> bool:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            with self.lock:
                if predicate(list(self.messages)):
                    return True
            time.sleep(0.05)
        return False

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()
