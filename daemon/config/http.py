"""``[http]`` settings: where the HTTP API listens, its token and its upload limits.

The API names people, shows camera frames and erases identities, so it listens on loopback unless
it has a token: any other address without one is a configuration error, not a warning.
"""

from __future__ import annotations

import ipaddress
import re
from pathlib import Path
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

from daemon.config.common import StoreLocation

MIN_TOKEN_CHARS = 16
IDENTITY_METRICS_AUTO = 50  # people: below it, per-identity scores on /metrics cost little


def split_listen(listen: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[::1]:PORT`` for IPv6) to (host, port); a one-line ValueError otherwise."""
    host, sep, port = listen.rpartition(":")
    bracketed = host.startswith("[") and host.endswith("]") and len(host) > 2
    if host.startswith("[") != bracketed or (":" in host and not bracketed):
        host = ""  # an IPv6 address goes in brackets: [::1]:8080
    host = host[1:-1] if bracketed else host
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"must look like HOST:PORT (127.0.0.1:8080, [::1]:8080), got {listen!r}")
    return host, int(port)


_HOST_NAME = re.compile(r"^(\[[0-9a-f:.]+\]|[a-z0-9_]([a-z0-9_.\-]*[a-z0-9_])?)$")


def normal_origin(origin: str) -> str | None:
    """``scheme://host[:port]`` in lower case with the scheme's default port dropped; None when ``origin`` is
    not an http(s) origin (``null``, a path, credentials, another scheme)."""
    try:
        u = urlsplit(origin.strip())
        port = u.port
    except ValueError:
        return None
    if u.scheme not in ("http", "https") or not u.hostname or u.username or u.password or u.path not in ("", "/") \
            or u.query or u.fragment:
        return None
    host = f"[{u.hostname}]" if ":" in u.hostname else u.hostname
    default = {"http": 80, "https": 443}[u.scheme]
    return f"{u.scheme}://{host.lower()}" + (f":{port}" if port is not None and port != default else "")


def is_loopback_host(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # 0.0.0.0 is an address; a host name or interface could be anything


class HttpConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    listen: str | None = Field(None, description="Serve the HTTP API and web page on HOST:PORT (empty: no HTTP). "
                               "An address other than loopback needs token or token_file.")
    token: SecretStr | None = Field(None, description=f"API token (at least {MIN_TOKEN_CHARS} characters): every "
                                    "request must send 'Authorization: Bearer TOKEN' (or ?access_token= where a "
                                    "browser cannot set headers). Prefer token_file or FACESTREAM_HTTP__TOKEN.")
    token_file: Path | None = Field(None, description="A file holding the API token (first line).")
    max_upload_mb: float = Field(10.0, gt=0, le=200, description="Largest request body accepted (photo uploads); "
                                 "larger ones get 413 before they are read.")
    max_upload_pixels: int = Field(24_000_000, ge=10_000, le=200_000_000, description="Largest uploaded image, "
                                   "width x height, read from its header before decoding (offline files allow "
                                   "50 MP): a small PNG of one colour can decode to gigabytes.")
    max_photos: int = Field(20, ge=1, le=200, description="Most photos in one enrol request.")
    snapshot_max_width: int = Field(960, ge=64, description="Snapshots wider than this are scaled down before "
                                    "JPEG encoding (keeps the page's polling cheap).")
    recent_events: int = Field(200, ge=1, le=10000, description="Events kept for a new page or a reconnecting "
                               "event stream (Last-Event-ID).")
    allowed_hosts: list[str] = Field(default_factory=list, description="Host names (besides loopback and the listen "
                                     "address) that requests may be addressed to, e.g. the name a reverse proxy "
                                     "forwards; any other Host header gets 421, which stops DNS rebinding. '*' "
                                     "allows any name (only behind a proxy that checks Host itself).")
    allowed_origins: list[str] = Field(default_factory=list, description="Origins (scheme://host[:port]) besides "
                                       "the daemon's own whose pages may send state-changing requests; any other "
                                       "Origin (or Referer) gets 403.")
    audit_log: StoreLocation | None = Field(None, description="API audit: a JSON-lines file (0600) or a "
                                            "postgresql:// URL; every enrol, erase and rename with time, remote "
                                            "address, route and outcome, never photo bytes. Default: "
                                            "GALLERY.api-audit.jsonl beside a gallery file, api-audit.jsonl in "
                                            "paths.state_dir for a gallery in a database.")
    body_timeout_s: float = Field(30.0, gt=0, le=3600, description="Seconds a request body may take to arrive "
                                  "before the request gets 408 (a client that never finishes holds nothing).")
    max_parts: int = Field(64, ge=1, le=10000, description="Most parts in one multipart form; more get 413 before "
                           "the form is parsed.")
    identity_metrics: bool | None = Field(None, description="Export facestream_identity_score{identity} (a "
                                          "summary of each identity's recent accepted scores) on /metrics: a label "
                                          "per person. Empty: on while the gallery holds at most "
                                          "IDENTITY_METRICS_AUTO (50) people; true or false to choose.")
    max_clip_s: float = Field(10.0, gt=0, le=120, description="Longest clip POST /v1/identities/{name}/video "
                              "takes (its sampled frames are held in memory); the clip's bytes count against "
                              "max_upload_mb too.")
    auth_failures_free: int = Field(5, ge=1, description="Wrong tokens an address may send before each further "
                                    "one makes it wait (1 s, doubling, up to auth_backoff_max_s).")
    auth_backoff_max_s: float = Field(60.0, gt=0, description="Longest wait after repeated wrong tokens.")

    @field_validator("listen")
    @classmethod
    def _listen(cls, v: str | None) -> str | None:
        if v:
            split_listen(v)
        return v or None

    @field_validator("allowed_hosts")
    @classmethod
    def _hosts(cls, v: list[str]) -> list[str]:
        out = []
        for h in v:
            name = h.strip().lower().rstrip(".")
            if name != "*" and not _HOST_NAME.match(name):
                raise ValueError(f"http.allowed_hosts: {h[:100]!r} is not a host name (no scheme, port or path)")
            out.append(name)
        return out

    @field_validator("allowed_origins")
    @classmethod
    def _origins(cls, v: list[str]) -> list[str]:
        out = []
        for o in v:
            norm = normal_origin(o)
            if norm is None:
                raise ValueError(f"http.allowed_origins: {o[:100]!r} must look like https://host[:port]")
            out.append(norm)
        return out

    @field_validator("token_file")
    @classmethod
    def _token_file(cls, v: Path | None) -> Path | None:
        if v is not None and not v.expanduser().is_file():
            raise ValueError(f"token file {v} does not exist")
        if v is not None and v.expanduser().stat().st_mode & 0o077:
            raise ValueError(f"token file {v} can be read by other users: chmod 600 it")
        return v

    @model_validator(mode="after")
    def _guarded(self) -> HttpConfig:
        if self.token is not None and self.token_file is not None:
            raise ValueError("http.token and http.token_file: set one, not both")
        token = self.secret()
        if token is not None and len(token) < MIN_TOKEN_CHARS:
            raise ValueError(f"http token must be at least {MIN_TOKEN_CHARS} characters, got {len(token)}")
        if self.listen and token is None and not is_loopback_host(split_listen(self.listen)[0]):
            raise ValueError(f"http.listen: {self.listen} is not a loopback address; serving there needs an API "
                             "token (http.token_file, http.token or FACESTREAM_HTTP__TOKEN)")
        return self

    def secret(self) -> str | None:
        """The token, read from its file when one is set; None when the API is open (loopback only)."""
        if self.token_file is not None:
            lines = self.token_file.expanduser().read_text(encoding="utf-8").splitlines()
            return lines[0].strip() if lines and lines[0].strip() else ""
        return self.token.get_secret_value() if self.token is not None else None

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * 1024 * 1024)

    def identity_labels(self, identities: int) -> bool:
        """Whether /metrics gets a series per identity for a gallery of ``identities`` people."""
        return self.identity_metrics if self.identity_metrics is not None else identities <= IDENTITY_METRICS_AUTO
