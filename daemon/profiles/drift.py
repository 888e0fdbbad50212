"""Drift: per identity, the scores of the last tracks named them and of the tracks refused that had them as top-1.

Staff whose appearance changed (a beard, glasses, ten years) slide towards the threshold long before a strict
door starts refusing them; nobody sees it in a stream of ``face.recognized``. So the daemon keeps, in memory
and bounded (``drift.recent`` scores per identity, for people in the gallery only), each ended track's score
against the identity it was named (the quality-weighted mean of its faces, as it was judged), and for a track
that ended unknown, the score of its top-1 as a refusal of that person. ``GET /v1/identities/{name}`` and
``/metrics`` show them live; the file (``daemon/stores/drift.py``) is written every ``drift.save_every_s`` and
at shutdown, so ``gallery info`` can flag, offline, whoever's recent median is within ``drift.near`` of the
threshold. Erasing or renaming a person (``gallery.updated``) changes memory and file at once; enrolling more
photos of someone starts their window again (their centroid moved).

An observer of the events stage (its work per frame: a dict update per decision) and a sink (for
``gallery.updated``, which the HTTP API publishes from its own threads: hence the lock).
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

import structlog

from daemon.stores.drift import new_document, read_drift, summarize, write_drift
from pipeline.types import MatchedFrame

log = structlog.get_logger(__name__)


class _Person:
    __slots__ = ("accepted", "accepted_sum", "accepted_total", "refused", "refused_total")

    def __init__(self, recent: int) -> None:
        self.accepted: deque[float] = deque(maxlen=recent)
        self.refused: deque[float] = deque(maxlen=recent)
        self.accepted_total = self.refused_total = 0
        self.accepted_sum = 0.0

    def as_json(self) -> dict[str, Any]:
        return {"accepted": [round(s, 4) for s in self.accepted], "refused": [round(s, 4) for s in self.refused],
                "accepted_total": self.accepted_total, "refused_total": self.refused_total,
                "accepted_sum": round(self.accepted_sum, 4)}


class DriftWatch:
    """``state()`` is the daemon's ``gallery_state`` (names and threshold in use); ``cfg`` its ``[drift]``."""

    def __init__(self, path: Path, state: Callable[[], Any], model_id: str, cfg: Any) -> None:
        self.path, self.state, self.model_id, self.cfg = path, state, model_id, cfg
        self._lock = threading.Lock()
        self._saving = threading.Lock()  # one write at a time, the newest state last
        self._people: dict[str, _Person] = {}
        self._top1: dict[tuple[str, int], tuple[str, float]] = {}  # a live track's aggregate top-1
        self._claimed: dict[tuple[str, int], tuple[str, float]] = {}  # its score against the identity it holds
        self._names: tuple[int, frozenset[str]] = (-1, frozenset())
        self._dirty = False
        self._last_save = time.monotonic()
        self._load()

    def _load(self) -> None:
        try:
            doc = read_drift(self.path)
        except ValueError as exc:
            log.warning("drift_file_unreadable", error=str(exc)[:300], detail="a new one replaces it")
            return
        if doc is None:
            return
        if doc.get("model") != self.model_id:
            log.info("drift_file_of_another_model", model=doc.get("model"), running=self.model_id)
            return
        for name, e in doc["identities"].items():
            p = self._people[name] = _Person(self.cfg.recent)
            p.accepted.extend(float(s) for s in e.get("accepted", []))
            p.refused.extend(float(s) for s in e.get("refused", []))
            p.accepted_total = int(e.get("accepted_total", len(p.accepted)))
            p.refused_total = int(e.get("refused_total", len(p.refused)))
            p.accepted_sum = float(e.get("accepted_sum", sum(p.accepted)))

    def _gallery_names(self) -> frozenset[str]:
        """The names in the gallery in use, rebuilt only when its version changes (a big gallery's list)."""
        s = self.state()
        if self._names[0] != s.version:
            self._names = (s.version, frozenset(getattr(s.matcher, "names", ())))
        return self._names[1]

    # ---- the events stage's observer --------------------------------------------------------------------
    def observe(self, msg: MatchedFrame, claims: dict[int, str | None]) -> None:
        src = msg.tracked.frame.source_id
        for d in msg.decisions:
            key = (src, d.track_id)
            if d.candidates:
                self._top1[key] = d.candidates[0]
            if d.claimed is not None:
                own = next((s for n, s in d.candidates if n == d.claimed), None)
                if own is not None:
                    self._claimed[key] = (d.claimed, float(own))
        if not msg.ended:
            self._maybe_save()
            return
        names = self._gallery_names()
        with self._lock:
            for e in msg.ended:
                key = (src, e.ended.track_id)
                top, own = self._top1.pop(key, None), self._claimed.pop(key, None)
                if e.decision == "recognized" and e.identity in names:
                    score = own[1] if own is not None and own[0] == e.identity else float(e.score)
                    p = self._person(e.identity)
                    p.accepted.append(score)
                    p.accepted_total += 1
                    p.accepted_sum += score
                    self._dirty = True
                elif e.decision == "unknown" and top is not None and top[0] in names:
                    p = self._person(top[0])
                    p.refused.append(float(top[1]))
                    p.refused_total += 1
                    self._dirty = True
        self._maybe_save()

    def _person(self, name: str) -> _Person:
        p = self._people.get(name)
        if p is None:
            p = self._people[name] = _Person(self.cfg.recent)
        return p

    def source_ended(self, source_id: str) -> None:
        for d in (self._top1, self._claimed):
            for key in [k for k in d if k[0] == source_id]:
                del d[key]

    # ---- a sink: gallery changes ----------------------------------------------------------------------
    def send(self, topic: str, body: dict[str, Any]) -> None:
        if topic != "gallery.updated":
            return
        action, name = body.get("action"), body.get("identity")
        with self._lock:
            if action == "erased" and name in self._people:
                del self._people[name]
            elif action == "renamed" and body.get("previous") in self._people:
                self._people[str(name)] = self._people.pop(body["previous"])
            elif action == "enrolled" and name in self._people:
                recent = self._people[name]
                recent.accepted.clear()
                recent.refused.clear()
            else:
                return
        if action in ("erased", "renamed"):
            self.save()  # nothing of an erased person is left in the file
        else:
            self._dirty = True

    # ---- reading ------------------------------------------------------------------------------------------
    def summary(self, name: str) -> dict[str, Any] | None:
        """``name``'s drift figures at the threshold in use; None when no track of theirs ended yet."""
        with self._lock:
            p = self._people.get(name)
            entry = p.as_json() if p is not None else None
        if entry is None:
            return None
        state = self.state()  # an identity's own threshold ("not this person") decides for them where it is higher
        threshold = max(state.threshold, getattr(state, "own", {}).get(name, state.threshold))
        return summarize(entry, threshold, self.cfg.near, self.cfg.min_scores)

    def scores(self) -> dict[str, tuple[list[float], int, float, int]]:
        """Per identity: (recent accepted scores, accepted total, their sum, refusals total), for /metrics."""
        with self._lock:
            return {n: (list(p.accepted), p.accepted_total, p.accepted_sum, p.refused_total)
                    for n, p in self._people.items()}

    # ---- the file -------------------------------------------------------------------------------------------
    def _maybe_save(self) -> None:
        if self._dirty and time.monotonic() - self._last_save >= self.cfg.save_every_s:
            self.save()

    def save(self) -> None:
        """Write the file now (people no longer in the gallery left out); a full disk costs a warning, no frame."""
        names = self._gallery_names()
        with self._saving:
            with self._lock:
                for gone in [n for n in self._people if n not in names]:
                    del self._people[gone]
                doc = new_document(self.model_id, self.state().threshold,
                                   {n: p.as_json() for n, p in self._people.items()})
                self._dirty = False
                self._last_save = time.monotonic()
            try:
                write_drift(self.path, doc)
            except (OSError, ValueError) as exc:
                log.warning("drift_file_not_written", path=str(self.path), error=str(exc)[:300])

    def close(self) -> None:
        if self._dirty:  # a daemon that saw nobody (serve) leaves no file behind
            self.save()


def attach_drift(daemon: Any) -> DriftWatch | None:
    """Give ``daemon`` its drift watch when it has a gallery and ``drift.enabled``: an observer and a sink."""
    from daemon.stores.drift import drift_location

    path = drift_location(daemon.settings, daemon.gallery_path)
    if path is None:
        return None
    watch = DriftWatch(path, daemon.gallery_state, daemon.model_id, daemon.settings.drift)
    daemon.add_observer(watch)
    daemon.add_sink(watch)
    return watch

