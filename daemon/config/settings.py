"""Settings: a TOML file plus ``FACESTREAM_*`` environment variables (nested with ``__``).

Precedence: command-line overrides > environment > TOML file > defaults. Unknown keys are errors,
so a typo in a door controller's config never silently falls back to a default.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationError, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from daemon.config.actions import ActionConfig
from daemon.config.common import ConfigError
from daemon.config.drift import DriftConfig
from daemon.config.gallery import GalleryConfig
from daemon.config.http import HttpConfig
from daemon.config.liveness import LivenessConfig
from daemon.config.models import DetectorConfig, EmbedderConfig
from daemon.config.mqtt import MqttConfig
from daemon.config.paths import PathsConfig
from daemon.config.pipeline import PipelineConfig
from daemon.config.profiles import AttendanceConfig, DoorConfig
from daemon.config.retention import RetentionConfig
from daemon.config.sinks import SinksConfig
from daemon.config.unknowns import UnknownsConfig
from models.paths import default_cache_dir


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="FACESTREAM_", env_nested_delimiter="__", extra="forbid")

    detector: DetectorConfig = Field(default_factory=DetectorConfig, description="Face detector settings.")
    embedder: EmbedderConfig = Field(default_factory=EmbedderConfig, description="Embedding model settings.")
    gallery: GalleryConfig = Field(default_factory=GalleryConfig, description="Gallery building and matching.")
    pipeline: PipelineConfig = Field(default_factory=PipelineConfig, description="Streaming pipeline settings.")
    sinks: SinksConfig = Field(default_factory=SinksConfig, description="Where events go.")
    mqtt: MqttConfig = Field(default_factory=MqttConfig, description="MQTT events, retained state and Home "
                             "Assistant discovery.")
    attendance: AttendanceConfig = Field(default_factory=AttendanceConfig, description="Attendance marking.")
    door: DoorConfig = Field(default_factory=DoorConfig, description="Door access decisions and action.")
    actions: list[ActionConfig] = Field(default_factory=list, description="What runs when an event happens "
                                        "([[actions]] tables).")
    liveness: LivenessConfig = Field(default_factory=LivenessConfig, description="Passive liveness before door "
                                     "grants.")
    http: HttpConfig = Field(default_factory=HttpConfig, description="HTTP API, web page and Prometheus metrics.")
    retention: RetentionConfig = Field(default_factory=RetentionConfig, description="How long records that "
                                       "name people are kept.")
    unknowns: UnknownsConfig = Field(default_factory=UnknownsConfig, description="Unknown visitors: faces of "
                                     "tracks that ended unknown, grouped, expiring.")
    drift: DriftConfig = Field(default_factory=DriftConfig, description="Per-identity recent scores and refusals: "
                               "who slides towards the threshold.")
    paths: PathsConfig = Field(default_factory=PathsConfig, description="Where state files live.")
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

    @model_validator(mode="after")
    def _state_files_in_the_state_dir(self) -> Settings:
        """Relative paths of state files (from the file, the environment or keyword settings) are under
        paths.state_dir, never the folder the daemon happens to be started in."""
        r = self.paths.resolve
        self.sinks = self.sinks.model_copy(update={"jsonl": r(self.sinks.jsonl)})
        self.door = self.door.model_copy(update={"audit": r(self.door.audit)})
        self.attendance = self.attendance.model_copy(update={"db": r(self.attendance.db)})
        self.http = self.http.model_copy(update={"audit_log": r(self.http.audit_log)})
        self.mqtt = self.mqtt.model_copy(update={"spool": r(self.mqtt.spool)})
        self.unknowns = self.unknowns.model_copy(update={"path": r(self.unknowns.path)})
        self.drift = self.drift.model_copy(update={"path": r(self.drift.path)})
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
