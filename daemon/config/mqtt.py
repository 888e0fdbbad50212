"""``[mqtt]``: the MQTT sink (events, retained per-camera state, Home Assistant discovery, the outage spool)."""

from __future__ import annotations

import os
import re
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

from daemon.config.common import existing_file
from daemon.sinks.mqtt_topics import parse_mqtt_url

_TOPIC_LEVEL = re.compile(r"^[^#+/\x00]+(/[^#+/\x00]+)*$")
PASSWORD_ENV = "FACESTREAM_MQTT_PASSWORD"


class MqttConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    url: str | None = Field(None, description="Broker, as mqtt://HOST:PORT or mqtts://HOST:PORT (TLS): set it to "
                            "publish events over MQTT. A user name may be given as mqtt://USER@HOST:PORT; the "
                            "password never goes in the URL.")
    prefix: str = Field("facestream", description="Topic prefix: events go to PREFIX/<source>/<event topic>.")
    username: str | None = Field(None, description="User name for the broker (or USER@ in the URL).")
    password_file: Path | None = Field(None, description="File holding the broker password (first line). Or set "
                                       f"the environment variable {PASSWORD_ENV}.")
    password: SecretStr | None = Field(None, description="The broker password, from the configuration file or "
                                       "the environment (FACESTREAM_MQTT__PASSWORD); never from the command line.")
    ca_file: Path | None = Field(None, description="mqtts://: the CA certificate file that signs the broker's "
                                 "certificate (default: the system's CAs).")
    client_id: str | None = Field(None, description="MQTT client id (default: facestream-<prefix>-<host>).")
    qos: int = Field(1, ge=0, le=2, description="QoS of event messages (1: at least once, acknowledged).")
    keepalive_s: int = Field(30, ge=5, description="Seconds between keep-alive pings; the broker publishes the "
                             "last will (availability offline) after 1.5 times this without one.")
    clear_after_s: float = Field(10.0, gt=0, description="Seconds after the last recognition (or unknown face) at "
                                 "a source before its retained person / unknown state is cleared.")
    homeassistant: bool = Field(False, description="Publish Home Assistant MQTT discovery configs (retained): per "
                                "source a sensor with the last recognised person and a binary sensor 'unknown "
                                "face in view'.")
    discovery_prefix: str = Field("homeassistant", description="Home Assistant's discovery prefix.")
    spool: Path = Field(Path("mqtt-spool.sqlite"), description="On-disk spool (0600; relative: under "
                        "paths.state_dir) holding events not yet acknowledged by the broker, sent in order "
                        "once it is back.")
    spool_max: int = Field(10000, ge=1, description="Events the spool holds; beyond it the oldest are dropped "
                           "(and counted as mqtt_dropped).")
    reconnect_max_s: float = Field(30.0, gt=0, description="Longest wait between reconnection attempts (the "
                                   "wait doubles from 1 s up to this).")
    stats: bool = Field(True, description="Publish the periodic 'stats' events too (PREFIX/stats), so MQTT carries "
                        "exactly the events of the JSONL log.")

    @field_validator("url")
    @classmethod
    def _url(cls, v: str | None) -> str | None:
        if v:
            parse_mqtt_url(v)
        return v or None

    @field_validator("prefix", "discovery_prefix")
    @classmethod
    def _topic(cls, v: str) -> str:
        if not _TOPIC_LEVEL.match(v):
            raise ValueError(f"MQTT topic prefix must be levels separated by '/', without '+', '#' or empty "
                             f"levels, got {v!r}")
        return v

    @field_validator("password_file")
    @classmethod
    def _password_file(cls, v: Path | None) -> Path | None:
        return existing_file(v, "mqtt.password_file {} does not exist")

    @field_validator("ca_file")
    @classmethod
    def _ca(cls, v: Path | None) -> Path | None:
        return existing_file(v, "mqtt.ca_file {} does not exist")

    @model_validator(mode="after")
    def _consistent(self) -> MqttConfig:
        if self.url is None:
            return self
        scheme, _, _, user, password = parse_mqtt_url(self.url)
        if password is not None:
            raise ValueError("mqtt.url must not hold a password (it would show in logs and process lists): put it "
                             f"in mqtt.password_file or the environment variable {PASSWORD_ENV}")
        if user and self.username and user != self.username:
            raise ValueError(f"mqtt.url names user {user!r} but mqtt.username is {self.username!r}")
        if self.ca_file is not None and scheme != "mqtts":
            raise ValueError("mqtt.ca_file is set but mqtt.url is not mqtts://")
        if self.password_file is not None and self.password is not None:
            raise ValueError("mqtt.password and mqtt.password_file: set one, not both")
        return self

    def credentials(self) -> tuple[str | None, str | None]:
        """(user, password): the password from the file, the settings or the environment, in that order."""
        user = self.username or (parse_mqtt_url(self.url)[3] if self.url else None)
        if self.password_file is not None:
            lines = self.password_file.expanduser().read_text(encoding="utf-8").splitlines()
            password: str | None = lines[0] if lines else ""
        elif self.password is not None:
            password = self.password.get_secret_value()
        else:
            password = os.environ.get(PASSWORD_ENV)
        if password is not None and user is None:
            raise ValueError("mqtt: a password is set but no user name (mqtt.username or mqtt://USER@HOST)")
        return user, password
