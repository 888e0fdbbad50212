"""``[sinks]``: where events go (ZeroMQ, the JSONL log, stdout) and the file outputs of a run."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from daemon.config.common import existing_file
from daemon.sinks.keys import ZMQ_ADDRESS, is_loopback


class SinksConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    zmq: str | None = Field("tcp://127.0.0.1:5556", description="ZeroMQ PUB bind address (empty: no ZeroMQ). "
                            "An address other than loopback needs zmq_secret_key, or insecure = true.")
    zmq_secret_key: Path | None = Field(None, description="The server's CURVE secret key file (server.key_secret "
                                        "from 'facestream keys generate', mode 0600): events are encrypted and "
                                        "only subscribers holding the server's public key receive them.")
    insecure: bool = Field(False, description="Allow publishing unencrypted on an address other than loopback "
                           "(logged as a warning at start).")
    zmq_hwm: int = Field(1000, ge=1, description="ZeroMQ high-water mark; beyond it events are dropped, not "
                         "waited for.")
    zmq_wait_subscriber_s: float = Field(0.0, ge=0, description="Before reading sources, wait up to this long for "
                                         "a ZeroMQ subscriber to join (so it misses no event).")
    jsonl: Path | None = Field(None, description="Append events to this JSON-lines file (0600).")
    stdout: bool = Field(False, description="Print a readable line per event.")
    timeline_csv: Path | None = Field(None, description="File sources: per-identity timeline CSV written at the end.")
    annotate_dir: Path | None = Field(None, description="File sources: write <source>.annotated.mp4 here.")

    @field_validator("zmq")
    @classmethod
    def _zmq_addr(cls, v: str | None) -> str | None:
        if v and not ZMQ_ADDRESS.match(v):
            raise ValueError(f"ZeroMQ address must look like tcp://HOST:PORT (or ipc://, inproc://), got {v!r}")
        return v or None

    @field_validator("zmq_secret_key")
    @classmethod
    def _key_exists(cls, v: Path | None) -> Path | None:
        return existing_file(v, "key file {} does not exist (create one with 'facestream keys generate --out DIR')")

    @model_validator(mode="after")
    def _private_unless_keyed(self) -> SinksConfig:
        """Events name people: they leave this machine encrypted, or only when explicitly allowed."""
        if self.zmq and not is_loopback(self.zmq) and self.zmq_secret_key is None and not self.insecure:
            raise ValueError(f"sinks.zmq: {self.zmq} is not a loopback address; publishing there needs CURVE keys "
                             "(sinks.zmq_secret_key, see 'facestream keys generate') or sinks.insecure = true")
        return self
