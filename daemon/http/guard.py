"""What every HTTP request passes before a handler sees it.

Loopback is no trust boundary against the browser on the same machine: any page it opens can send a
form to ``127.0.0.1`` (CSRF) or, through a name of its own that it points at ``127.0.0.1``, read the
answers (DNS rebinding). So, in this order:

1. the ``Host`` header must name this daemon (loopback names, the listen address, ``http.allowed_hosts``),
   else 421: a rebinding page always sends its own name;
2. a state-changing request (anything but GET/HEAD/OPTIONS) with an ``Origin`` (or, without one, a
   ``Referer``) must come from the daemon's own origin or ``http.allowed_origins``, else 403;
3. with a token, API routes need it (``Authorization: Bearer``; ``?access_token=`` only for the event stream
   and snapshots, which a browser loads without headers), compared in constant time; an address that keeps
   sending wrong ones waits longer and longer (429);
4. without a token, a state-changing request needs ``X-Facestream-Request: 1``, a header no cross-site form
   can send and no page can add without a CORS preflight, which this server never answers with permission.

Every gallery change asked for (enrol, erase, rename), let through or not, leaves one line in the API
audit log with its outcome.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import re
import socket
import time
from collections import Counter, OrderedDict
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from daemon.config.http import _HOST_NAME, HttpConfig, normal_origin, split_listen
from daemon.http.audit import ApiAudit

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
CSRF_HEADER = "x-facestream-request"
# Routes a browser loads without being able to send headers (EventSource, <img>: snapshots, visitors' faces):
# the only ones where the token may come as ?access_token=.
_QUERY_TOKEN = re.compile(r"^/v1/(events|sources/[^/]+/snapshot\.jpg|unknowns/[^/]+/faces/[^/]+\.jpg)$")
# Gallery changes: (method, path pattern, action). The name is matched loosely (a '/' in it included) so an
# attempt the router refuses is audited too.
AUDITED: list[tuple[str, re.Pattern[str], str]] = [
    ("POST", re.compile(r"^/v1/identities/(?P<name>.+)/photos/?$"), "enrol"),
    ("POST", re.compile(r"^/v1/identities/(?P<name>.+)/merge/?$"), "merge"),
    ("POST", re.compile(r"^/v1/identities/(?P<name>.+)/split/?$"), "split"),
    ("POST", re.compile(r"^/v1/events/(?P<name>[^/]+)/reject/?$"), "reject"),
    ("POST", re.compile(r"^/v1/identities/(?P<name>.+)/video/?$"), "enrol_video"),
    ("DELETE", re.compile(r"^/v1/identities/(?P<name>.+?)/?$"), "erase"),
    ("PATCH", re.compile(r"^/v1/identities/(?P<name>.+?)/?$"), "rename"),
    ("POST", re.compile(r"^/v1/unknowns/(?P<name>.+)/enrol/?$"), "enrol_visitor"),
    ("DELETE", re.compile(r"^/v1/unknowns/(?P<name>.+?)/?$"), "erase_visitor"),
]


def clip(text: str, n: int = 100) -> str:
    """At most ``n`` characters of something a client sent, for messages and logs."""
    return text if len(text) <= n else text[:n] + "..."


def host_of(header: str) -> str | None:
    """The host name of a ``Host`` header (lower case, without port or trailing dot); None when malformed."""
    h = header.strip().lower()
    if h.startswith("["):
        end = h.find("]")
        host, rest = (h[:end + 1], h[end + 1:]) if end > 0 else ("", "")
    else:
        host, sep, port = h.partition(":")
        rest = sep + port
    if rest and not (rest[0] == ":" and rest[1:].isascii() and rest[1:].isdigit() and len(rest) <= 6):
        return None
    host = host.rstrip(".")
    return host if host and _HOST_NAME.match(host) else None


class HostRule:
    """Which ``Host`` names this daemon answers to. A page using DNS rebinding sends its own domain name;
    a literal IP address cannot be rebound, so a daemon listening on every interface takes any address."""

    def __init__(self, listen_host: str, extra: list[str]) -> None:
        self.any = "*" in extra
        self.names = {"localhost", *extra, listen_host.lower().strip("[]")}
        self._listen_ip = _ip(listen_host)
        self.every_interface = self._listen_ip is not None and self._listen_ip.is_unspecified
        if self.every_interface:
            self.names |= {socket.gethostname().lower(), socket.getfqdn().lower()}

    def allows(self, host: str) -> bool:
        if self.any or host in self.names or host.strip("[]") in self.names:
            return True
        ip = _ip(host)
        return ip is not None and (ip.is_loopback or self.every_interface or ip == self._listen_ip)


def _ip(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None


class AuthThrottle:
    """Per remote address: after ``free`` wrong tokens, each further one locks the address out for 1 s,
    doubling up to ``max_s``; a right token clears it. Written here rather than taken from a rate-limit
    library: it is one dict on the server's event loop (no lock, no storage), and a limiter of requests per
    window would slow the page's own polling, where only wrong tokens should cost."""

    def __init__(self, free: int = 5, max_s: float = 60.0, keep: int = 10_000) -> None:
        self.free, self.max_s, self.keep = free, max_s, keep
        self._fails: OrderedDict[str, tuple[int, float]] = OrderedDict()

    def wait_s(self, addr: str, now: float | None = None) -> float:
        """Seconds ``addr`` must still wait (0: it may try)."""
        _, until = self._fails.get(addr, (0, 0.0))
        return max(0.0, until - (time.monotonic() if now is None else now))

    def failed(self, addr: str, now: float | None = None) -> None:
        count = self._fails.pop(addr, (0, 0.0))[0] + 1
        now = time.monotonic() if now is None else now
        until = now + min(self.max_s, 2.0 ** (count - self.free - 1)) if count > self.free else 0.0
        self._fails[addr] = (count, until)
        while len(self._fails) > self.keep:
            self._fails.popitem(last=False)

    def succeeded(self, addr: str) -> None:
        self._fails.pop(addr, None)


def _headers(scope: Scope) -> dict[str, str]:
    """Request headers by lower-case name (the last of repeated ones), decoded as latin-1 as HTTP says."""
    return {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", ())}


async def send_error(send: Send, status: int, message: str, headers: list[tuple[bytes, bytes]] | None = None) -> None:
    body = json.dumps({"error": {"status": status, "message": message}}).encode("utf-8")
    await send({"type": "http.response.start", "status": status, "headers": [
        (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
        (b"cache-control", b"no-store"), (b"x-content-type-options", b"nosniff"), *(headers or [])]})
    await send({"type": "http.response.body", "body": body})


class RequestGuard:
    """ASGI middleware around the whole app (API, page and files alike)."""

    def __init__(self, app: Any, http: HttpConfig, audit: ApiAudit | None = None) -> None:
        self.app = app
        self.hosts = HostRule(split_listen(http.listen)[0] if http.listen else "127.0.0.1", http.allowed_hosts)
        self.origins = frozenset(http.allowed_origins)
        self.token = http.secret()
        self.throttle = AuthThrottle(http.auth_failures_free, http.auth_backoff_max_s)
        self.audit = audit
        self.refused: Counter[str] = Counter()  # by reason: host, origin, header, token, throttled

    def _check(self, scope: Scope, headers: dict[str, str]) -> tuple[int, str, str, float] | None:
        """(status, message, reason, retry-after seconds) for a request that must not reach the app."""
        raw_host = headers.get("host", "")
        host = host_of(raw_host)
        if host is None or not self.hosts.allows(host):
            return (421, f"this daemon does not serve the host {clip(raw_host)!r}: add the name to "
                    "http.allowed_hosts if it is yours", "host", 0.0)
        method, path = scope["method"], scope["path"]
        unsafe = method not in SAFE_METHODS
        if unsafe:
            origin, which = headers.get("origin"), "Origin"
            if origin is None and "referer" in headers:
                ref = urlsplit(headers["referer"])
                origin, which = f"{ref.scheme}://{ref.netloc}", "Referer"
            if origin is not None:
                norm = normal_origin(origin)
                own = {normal_origin(f"{scheme}://{raw_host.strip()}") for scheme in ("http", "https")}
                if norm is None or (norm not in own and norm not in self.origins):
                    return (403, f"cross-site request refused: {which} {clip(origin)!r} is not this daemon's "
                            "origin (http.allowed_origins)", "origin", 0.0)
        api = path.startswith("/v1/") or path == "/metrics"
        if self.token is not None and api:
            addr = (scope.get("client") or ("?", 0))[0]
            wait = self.throttle.wait_s(addr)
            if wait > 0:
                return (429, f"too many wrong API tokens from {addr}: wait {wait:.0f} s", "throttled", wait)
            sent = headers.get("authorization", "")
            if sent[:7].lower() == "bearer ":
                given = sent[7:].strip()
            elif method == "GET" and _QUERY_TOKEN.match(path):
                given = dict(parse_qsl(scope.get("query_string", b"").decode("latin-1"))).get("access_token", "")
            else:
                given = ""
            if not hmac.compare_digest(given.encode("utf-8", "replace"), self.token.encode("utf-8")):
                self.throttle.failed(addr)
                return 401, "missing or wrong API token (Authorization: Bearer TOKEN)", "token", 0.0
            self.throttle.succeeded(addr)
            scope.setdefault("state", {})["token_ok"] = True  # handlers may show server paths to this caller
        elif unsafe and headers.get(CSRF_HEADER, "").strip() != "1":
            return (403, "a state-changing request needs the header 'X-Facestream-Request: 1' (or the API token): "
                    "cross-site forms cannot send it", "header", 0.0)
        return None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = _headers(scope)
        audited = next(((action, m["name"]) for method, pattern, action in AUDITED
                        if scope["method"] == method and (m := pattern.match(scope["path"]))), None)
        refused = self._check(scope, headers)
        if refused is not None:
            status, message, reason, retry = refused
            self.refused[reason] += 1
            extra = [(b"www-authenticate", b"Bearer")] if status == 401 else []
            if retry:
                extra.append((b"retry-after", str(max(1, round(retry))).encode()))
            await send_error(send, status, message, extra)
            if audited and self.audit is not None:
                self.audit.write(scope, audited[0], audited[1], status, message)
            return
        if not audited or self.audit is None:
            await self.app(scope, receive, send)
            return
        seen: dict[str, int] = {}

        async def recording(message: MutableMapping[str, Any]) -> None:
            if message["type"] == "http.response.start":
                seen["status"] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, recording)
        except Exception as exc:
            self.audit.write(scope, audited[0], audited[1], 500, f"internal error: {type(exc).__name__}")
            raise
        state = scope.get("state") or {}
        self.audit.write(scope, audited[0], audited[1], seen.get("status", 500), state.get("audit_error"),
                         state.get("audit"))
