"""A daemon following a shared gallery: every commit (enrol, erase, rename, recalibration on any host) is
swapped into the match stage within ``max_s``, the way SIGHUP swaps a file's.

The feed's notifications (``LISTEN``) make that immediate; a revision poll every ``max_s / 2`` catches one
that was missed. When the database is lost the daemon keeps matching on the gallery it has and says so
(``state`` is ``stale``); the follower reconnects every ``retry_s`` and, once back, reloads when the revision
moved. Nothing here runs per frame: the hot path only ever sees the matcher the last reload built.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import structlog

from pipeline.gallery.store import ChangeFeed, Gallery

log = structlog.get_logger(__name__)

CURRENT, STALE = "current", "stale"


class GalleryFollower:
    """Calls ``reload`` (True when it swapped a gallery in) whenever the gallery at ``location`` changed."""

    def __init__(self, location: str | Path | Any, reload: Callable[[], bool], max_s: float = 2.0,
                 retry_s: float = 0.5) -> None:
        self.location, self.reload, self.max_s, self.retry_s = location, reload, max_s, retry_s
        self.state = CURRENT
        self.reloads = 0
        self.stale_since: float | None = None
        self._seen: int | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="gallery-follow", daemon=True)

    @classmethod
    def for_location(cls, location: Any, reload: Callable[[], bool], max_s: float) -> GalleryFollower | None:
        """A follower when the gallery's backend has a change feed (a database), else None (a file)."""
        if location is None or not Gallery.is_shared(location):
            return None
        return cls(location, reload, max_s)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(self.max_s + 3.0)

    def _mark(self, state: str, **why: Any) -> None:
        if state != self.state:
            self.state = state
            self.stale_since = time.time() if state == STALE else None
            (log.warning if state == STALE else log.info)("gallery_" + state, gallery=str(self.location), **why)

    def _catch_up(self, feed: ChangeFeed) -> None:
        rev = feed.revision()
        if rev == self._seen:
            return
        if not self.reload():
            raise RuntimeError("gallery reload failed")
        self._seen = rev
        self.reloads += 1

    def _follow(self, feed: ChangeFeed) -> None:
        self._catch_up(feed)  # whatever was committed while not listening
        self._mark(CURRENT)
        while not self._stop.is_set():
            feed.wait(self.max_s / 2)  # a notification, or the poll interval
            self._catch_up(feed)

    def _run(self) -> None:
        while not self._stop.is_set():
            feed = None
            try:
                feed = Gallery.follow(self.location)
                if feed is None:
                    return
                self._follow(feed)
            except Exception as exc:  # the database went away (or a reload failed): keep the gallery we have
                self._mark(STALE, error=" ".join(str(exc).split())[:200])
            finally:
                if feed is not None:
                    feed.close()
            self._stop.wait(self.retry_s)
