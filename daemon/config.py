"""Settings: a TOML file plus ``FACESTREAM_*`` environment variables (nested with ``__``).

Precedence: command-line overrides > environment > TOML file > defaults. Unknown keys are errors,
so a typo in a door controller's config never silently falls back to a default.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from daemon.http_config import HttpConfig
from daemon.keys import ZMQ_ADDRESS, is_loopback
from models.detection import DetectorSettings
from models.paths import default_cache_dir
from models.registry import EMBEDDERS, RUNTIMES


class ConfigError(ValueError):
    """The configuration file or environment is unusable; the message is one line."""


_D = DetectorSettings()


def _existing_file(path: Path | None, message: str) -> Path | None:
    """``path`` unchanged when it is None or an existing file; else a ValueError of ``message`` with the path."""
    if path is not None and not path.expanduser().is_file():
        raise ValueError(message.format(path))
    return path


class DetectorConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    min_face_size: int = Field(_D.min_face_size, ge=8, description="Smallest face side in pixels MTCNN "
                               "searches for (smaller is slower).")
    thresholds: tuple[float, float, float] = Field(
        _D.thresholds, description="P-, R- and O-net score thresholds of MTCNN's three stages.")
    min_prob: float = Field(_D.min_prob, ge=0.0, le=1.0, description="Final detection probability a face must "
                            "reach.")
    factor: float = Field(_D.factor, gt=0.0, lt=1.0, description="Scale step of MTCNN's image pyramid.")
    scale: float = Field(_D.scale, gt=0.0, le=1.0, description="Detect on a copy downscaled by this factor.")
    max_side: int = Field(1600, ge=0, description="Stills: downscale for detection so the longest side is at "
                          "most this many pixels (0 = never); alignment still uses full resolution.")
    runtime: Literal["onnx", "torch"] = Field("onnx", description="Runtime of MTCNN's networks on the CPU (ONNX "
                                              "Runtime is ~2x faster; a CUDA device always runs torch).")
    stream_min_face_size: int = Field(40, ge=12, description="Streams: smallest face side, in pixels of the frame, "
                                      "the full-frame scan looks for; its first pyramid level is a copy downscaled "
                                      "by 12/this (0.3x at 40), so this sets the scan's cost (faces below "
                                      "pipeline.min_embed_px are never named; smaller ones only cost time).")
    scan_interval_s: float = Field(0.5, ge=0, description="Streams: seconds between full-frame scans of a source "
                                   "(0 = every frame); a new face is found at most this late.")
    refresh_interval_s: float = Field(0.06, ge=0, description="Streams: seconds between refreshes of known faces "
                                      "from crops around them (0 = every frame; 0.06 = every frame up to ~16 "
                                      "frames/s, every other frame of a 25-30 frames/s source).")
    batch: int = Field(4, ge=1, description="Live frames of different sources detected in one call.")

    @field_validator("thresholds")
    @classmethod
    def _thresholds(cls, v: tuple[float, float, float]) -> tuple[float, float, float]:
        if not all(0.0 <= t <= 1.0 for t in v):
            raise ValueError(f"each threshold must be between 0 and 1, got {list(v)}")
        return v

    def to_settings(self) -> DetectorSettings:
        return DetectorSettings(self.min_face_size, tuple(self.thresholds), self.min_prob, self.factor,
                                self.scale, self.max_side)


class EmbedderConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: str = Field("dlib-resnet-v1", description="Embedding model: " + ", ".join(EMBEDDERS) + ".")
    runtime: Literal["torch", "torchscript", "onnx"] = Field(
        "onnx", description="Inference runtime: " + ", ".join(RUNTIMES) + ".")
    device: str = Field("cpu", description="'cpu' or 'cuda' / 'cuda:N'.")
    allow_cpu_fallback: bool = Field(
        False, description="Run on the CPU when CUDA was asked for but is missing, instead of stopping.")
    flip: bool = Field(False, description="Average each face's embedding with its mirror image's.")
    weights_path: Path | None = Field(None, description="Weights file for the model (FaceNet state dict or "
                                      "dlib .dat); default: the packaged or cached file.")
    download: bool = Field(True, description="Allow downloading missing FaceNet weights.")
    batch_size: int = Field(32, ge=1, le=1024, description="Faces per inference call.")

    @field_validator("model")
    @classmethod
    def _known_model(cls, v: str) -> str:
        if v not in EMBEDDERS:
            raise ValueError(f"unknown model {v!r}; choose one of {', '.join(EMBEDDERS)}")
        return v

    @field_validator("device")
    @classmethod
    def _device(cls, v: str) -> str:
        if v != "cpu" and not v.startswith("cuda"):
            raise ValueError(f"device must be 'cpu' or 'cuda[:N]', got {v!r}")
        return v

    @field_validator("weights_path")
    @classmethod
    def _weights_exist(cls, v: Path | None) -> Path | None:
        # A configured file that is missing is a typo, not a request to download: fail at start.
        return _existing_file(v, "weights file {} does not exist")


class GalleryConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    path: Path | None = Field(None, description="Gallery file used by commands that take --gallery.")
    min_face_px: float = Field(40.0, ge=0, description="Reference photos: smallest face side in pixels.")
    min_blur: float = Field(10.0, ge=0, description="Reference photos: lowest Laplacian variance of the "
                            "aligned face (lower is blurrier).")
    min_prob: float = Field(0.95, ge=0, le=1, description="Reference photos: lowest detection probability.")
    target_far: float = Field(0.01, gt=0, lt=1, description="Share of strangers' photos that may be named as "
                              "someone enrolled (open-set false accept rate); every gallery write calibrates to it.")
    matcher: Literal["centroid", "svm"] = Field("centroid", description="Matcher: centroid cosine or linear SVM.")
    augment: bool = Field(False, description="SVM: interpolate embeddings to balance small classes.")


class PipelineConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    queue_size: int = Field(8, ge=1, description="Bounded queue length between stages.")
    iou_threshold: float = Field(0.3, gt=0, lt=1, description="Minimum IoU to continue a track.")
    max_track_age_s: float = Field(1.0, gt=0, description="Seconds a track survives unseen before it ends (longer "
                                   "than detector.scan_interval_s, so a face missed by one scan keeps its track).")
    embed_interval_s: float = Field(0.2, ge=0, description="Seconds between embeddings of one track (when the face "
                                    "is as good as most of what was seen).")
    scene_cut_threshold: float = Field(20.0, ge=0, description="Mean grey-level change (0-255) of a 32x18 "
                                       "thumbnail that counts as a shot cut and ends all tracks (0 = off).")
    confirm_hits: int = Field(3, ge=1, description="Detections a new track needs before it is embedded or "
                              "reported.")
    confirm_prob: float = Field(0.98, ge=0, le=1, description="Median detection probability a track needs to be "
                                "confirmed as a face (rejects animals and textures).")
    min_embed_px: float = Field(32.0, ge=0, description="Smallest face side (px) worth embedding.")
    min_faces: int = Field(2, ge=1, description="Judgeable faces a track's aggregate needs before it may be named "
                           "(a track that ends sooner is decided on what it has).")
    unknown_after: int = Field(3, ge=1, description="Judgeable faces whose aggregate names nobody before a track is "
                               "reported unknown.")
    max_embeds_per_track: int = Field(12, ge=1, description="Most faces of one track that are embedded (the best "
                                      "first; more add little once a track is decided).")
    min_sharpness: float = Field(0.0, ge=0, description="Laplacian variance of the aligned face below which it is "
                                 "too blurred to judge.")
    cooldown_s: float = Field(10.0, ge=0, description="Seconds before the same identity is announced again on a "
                              "source.")
    stats_interval_s: float = Field(10.0, gt=0, description="Seconds between stats events.")
    threads_per_stage: int = Field(1, ge=0, description="CPU threads for the detector and for the embedder each "
                                   "(they run in parallel stages; 0 = library default, which oversubscribes "
                                   "small machines).")
    stall_timeout_s: float = Field(10.0, gt=0, description="Live sources: seconds without a frame before the "
                                   "stream counts as stalled and is reopened (the watchdog).")
    stall_timeout_by_source: dict[str, float] = Field(
        default_factory=dict, description="Per-source watchdog timeouts by source id, for cameras that send "
        "rarely (e.g. {\"door\" = 60.0}).")
    open_timeout_s: float = Field(10.0, gt=0, description="Live sources: seconds to connect and probe a stream "
                                  "before the attempt counts as failed (FFmpeg probes RTSP for ~3 s).")
    reconnect_initial_s: float = Field(0.5, gt=0, description="First wait before reopening a failed live source; "
                                       "it doubles on every failed attempt.")
    reconnect_max_s: float = Field(30.0, gt=0, description="Cap of the doubling reconnect wait.")
    stop_timeout_s: float = Field(5.0, gt=0, description="SIGTERM/SIGINT: most seconds to drain the stages "
                                  "before exiting (frames not yet detected are let go).")
    threshold: float | None = Field(None, ge=-1.0, le=1.0, description="Override the gallery's calibrated "
                                    "threshold (a cosine similarity, -1 to 1).")
    margin: float | None = Field(None, ge=0.0, le=2.0, description="Override the gallery's calibrated top-1 - "
                                 "top-2 margin (0 to 2).")

    @model_validator(mode="after")
    def _decidable(self) -> PipelineConfig:
        """Cross-field checks: counts that make a track undecidable in view, and a reconnect wait above its cap,
        are typos, not choices."""
        if self.min_faces > self.max_embeds_per_track:
            raise ValueError(f"pipeline.min_faces ({self.min_faces}) must not exceed pipeline.max_embeds_per_track "
                             f"({self.max_embeds_per_track}): a track would never gather enough faces to be named")
        if self.unknown_after > self.max_embeds_per_track:
            raise ValueError(f"pipeline.unknown_after ({self.unknown_after}) must not exceed "
                             f"pipeline.max_embeds_per_track ({self.max_embeds_per_track}): a stranger would never "
                             "be reported while in view")
        if self.reconnect_initial_s > self.reconnect_max_s:
            raise ValueError(f"pipeline.reconnect_initial_s ({self.reconnect_initial_s}) must not exceed "
                             f"pipeline.reconnect_max_s ({self.reconnect_max_s})")
        if self.unknown_after < self.min_faces:
            raise ValueError(f"pipeline.unknown_after ({self.unknown_after}) must not be below pipeline.min_faces "
                             f"({self.min_faces}): a track would be reported unknown on less evidence than it needs "
                             "to be named")
        return self


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
        return _existing_file(v, "key file {} does not exist (create one with 'facestream keys generate --out DIR')")

    @model_validator(mode="after")
    def _private_unless_keyed(self) -> SinksConfig:
        """Events name people: they leave this machine encrypted, or only when explicitly allowed."""
        if self.zmq and not is_loopback(self.zmq) and self.zmq_secret_key is None and not self.insecure:
            raise ValueError(f"sinks.zmq: {self.zmq} is not a loopback address; publishing there needs CURVE keys "
                             "(sinks.zmq_secret_key, see 'facestream keys generate') or sinks.insecure = true")
        return self


class AttendanceConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    db: Path | None = Field(None, description="Attendance book (SQLite, 0600): set it to mark attendance; every "
                            "camera of a site writes to the same book.")
    roster: Path | None = Field(None, description="CSV of the identities expected (an 'identity' column, or the "
                                "first column).")
    site: str = Field("site", min_length=1, description="Site name: marks are once per identity, period and site.")
    sessions: list[str] = Field(default_factory=list, description="Periods within a day, as 'HH:MM-HH:MM' local "
                                "time (empty: the whole day is one period); recognitions between them mark nothing.")

    @field_validator("roster")
    @classmethod
    def _roster_exists(cls, v: Path | None) -> Path | None:
        return _existing_file(v, "roster file {} does not exist")

    @field_validator("sessions")
    @classmethod
    def _sessions(cls, v: list[str]) -> list[str]:
        from daemon.attendance import parse_sessions

        parse_sessions(v)
        return v


class DoorConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    audit: Path | None = Field(None, description="Door audit JSONL (0600): set it to take door decisions "
                               "(access.granted / access.denied), each audited with why.")
    votes_k: int = Field(3, ge=1, description="Faces of the last votes_n, each named the same person on its own, "
                         "needed for a grant.")
    votes_n: int = Field(5, ge=1, description="How many of a track's latest judged faces vote.")
    cooldown_s: float = Field(10.0, ge=0, description="Seconds before the same person is granted again.")
    command: list[str] = Field(default_factory=list, description="Run on a grant: an argv list (no shell); the "
                               "grant event is written to its stdin as JSON.")
    zmq_req: str | None = Field(None, description="Or send the grant as a ZeroMQ REQ to this address and await "
                                "the reply.")
    action_timeout_s: float = Field(5.0, gt=0, description="Seconds the command or the reply may take.")

    @model_validator(mode="after")
    def _consistent(self) -> DoorConfig:
        if self.votes_k > self.votes_n:
            raise ValueError(f"door.votes_k ({self.votes_k}) must not exceed door.votes_n ({self.votes_n})")
        if self.command and self.zmq_req:
            raise ValueError("door.command and door.zmq_req: set one action, not both")
        if self.zmq_req and not ZMQ_ADDRESS.match(self.zmq_req):
            raise ValueError(f"door.zmq_req must look like tcp://HOST:PORT, got {self.zmq_req!r}")
        return self


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="FACESTREAM_", env_nested_delimiter="__", extra="forbid")

    detector: DetectorConfig = Field(default_factory=DetectorConfig, description="Face detector settings.")
    embedder: EmbedderConfig = Field(default_factory=EmbedderConfig, description="Embedding model settings.")
    gallery: GalleryConfig = Field(default_factory=GalleryConfig, description="Gallery building and matching.")
    pipeline: PipelineConfig = Field(default_factory=PipelineConfig, description="Streaming pipeline settings.")
    sinks: SinksConfig = Field(default_factory=SinksConfig, description="Where events go.")
    attendance: AttendanceConfig = Field(default_factory=AttendanceConfig, description="Attendance marking.")
    door: DoorConfig = Field(default_factory=DoorConfig, description="Door access decisions and action.")
    http: HttpConfig = Field(default_factory=HttpConfig, description="HTTP API, web page and Prometheus metrics.")
    sources: list[str] = Field(default_factory=list, description="Sources: file paths, camera indexes, rtsp:// "
                               "or http(s):// URLs.")
    cache_dir: Path = Field(default_factory=default_cache_dir,
                            description="Where cached embeddings and exported models live.")
    log_level: Literal["debug", "info", "warning", "error"] = Field("info", description="Log verbosity.")
    log_format: Literal["auto", "console", "json"] = Field(
        "auto", description="'auto': readable on a terminal, JSON lines otherwise.")

    @model_validator(mode="after")
    def _tracks_outlive_a_scan(self) -> Settings:
        """A track that ends before the next scan could find its face again would split one person in two."""
        if self.pipeline.max_track_age_s <= self.detector.scan_interval_s:
            raise ValueError(f"pipeline.max_track_age_s ({self.pipeline.max_track_age_s}) must exceed "
                             f"detector.scan_interval_s ({self.detector.scan_interval_s}): a face missed by one "
                             "scan would lose its track")
        return self


def _first_error(exc: ValidationError, prefix: str = "") -> str:
    """``section.key: message`` of the first error, on one line (cross-field checks name their keys)."""
    err = exc.errors()[0]
    where = ".".join([prefix] * bool(prefix) + [str(p) for p in err["loc"]]) or "settings"
    msg = str(err["ctx"]["error"]) if err["type"] == "value_error" and "ctx" in err else err["msg"]
    msg = " ".join(msg.split())
    more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
    return f"{msg}{more}" if msg.startswith(f"{where}.") or msg.startswith(f"{where}:") else f"{where}: {msg}{more}"


def with_overrides(settings: Settings, **sections: dict[str, Any]) -> Settings:
    """``settings`` with some keys of its sections replaced (command-line options), validated like the file
    was: ``model_copy(update=...)`` alone would let ``--zmq tcp://0.0.0.0:P`` past the checks."""
    update: dict[str, Any] = {}
    for name, changes in sections.items():
        current = getattr(settings, name)
        try:
            update[name] = type(current).model_validate({**current.model_dump(), **changes})
        except ValidationError as exc:
            raise ConfigError(f"invalid configuration: {_first_error(exc, name)}") from None
    return settings.model_copy(update=update)


def load_settings(config_path: str | Path | None = None, **overrides: Any) -> Settings:
    """Build settings from an optional TOML file, the environment and explicit overrides."""
    toml_path = Path(config_path) if config_path else None
    if toml_path is not None:
        if not toml_path.is_file():
            raise ConfigError(f"config file {toml_path} does not exist")
        try:
            tomllib.loads(toml_path.read_text(encoding="utf-8"))
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise ConfigError(f"config file {toml_path} is not valid TOML: {exc}") from None

    class _FileSettings(Settings):
        @classmethod
        def settings_customise_sources(
            cls, settings_cls: type[BaseSettings], init_settings: PydanticBaseSettingsSource,
            env_settings: PydanticBaseSettingsSource, dotenv_settings: PydanticBaseSettingsSource,
            file_secret_settings: PydanticBaseSettingsSource,
        ) -> tuple[PydanticBaseSettingsSource, ...]:
            sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
            if toml_path is not None:
                sources.append(TomlConfigSettingsSource(settings_cls, toml_file=toml_path))
            return tuple(sources)

    try:
        return _FileSettings(**overrides)
    except ValidationError as exc:
        raise ConfigError(f"invalid configuration: {_first_error(exc)}") from None
