"""The gallery store: what every backend of a gallery offers, and the switch that picks one by location.

A site keeps its gallery in a file on one box (SQLite, the default: ``pipeline/gallery/sqlite.py``) or in a
database every host shares (a ``postgresql://`` URL, added behind this same interface). Callers only see
:class:`Gallery`: its reads (names, identities with their templates, the calibration), and its writes, each
one transaction that bumps the version. The name rule (``pipeline/names.py``) is applied here, once, for
every backend.
"""

from __future__ import annotations

import contextlib
import json
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from pipeline import names


class GalleryError(ValueError):
    """The gallery is missing, not a gallery, foreign, damaged, too new, built with another model, or refuses a
    write (a bad or colliding name); the message is one line."""


@dataclass
class Identity:
    """One enrolled person: centroid (unit vector) and all templates with their outlier flags."""

    name: str
    centroid: np.ndarray
    templates: np.ndarray  # (n, D) unit vectors
    outlier: np.ndarray  # (n,) bool
    paths: list[str]
    sha256s: list[str]
    quality: list[dict] | None = None  # per template: prob, face_px, blur

    def template_rows(self, identity_id: int, now: float) -> list[tuple]:
        """Each template as a backend's ``templates`` row: (identity_id, sha256, path, vec, prob, face_px, blur,
        outlier, added) — one shape for SQLite and PostgreSQL."""
        return [(identity_id, sha, path, blob(v), q.get("prob"), q.get("face_px"), q.get("blur"), bool(o), now)
                for v, o, path, sha, q in zip(self.templates, self.outlier, self.paths, self.sha256s,
                                              self.quality or [{}] * len(self.paths), strict=True)]


def blob(v: np.ndarray) -> bytes:
    """A vector as the bytes a backend stores (float32, C order)."""
    return np.ascontiguousarray(v, dtype=np.float32).tobytes()


class FaceCache(Protocol):
    """Embeddings of photos by content hash and context (``pipeline/gallery/cache.py`` is the SQLite one)."""

    def get(self, sha256: str, context: str) -> Any: ...

    def put_many(self, rows: list[tuple[str, str, Any]]) -> None: ...

    def rows(self) -> Iterator[tuple[str, str, Any]]:
        """Every cached (sha256, context, face), for copying a gallery to another backend."""
        ...


class ChangeFeed(Protocol):
    """Commits to a shared gallery as they happen (a backend that several hosts write offers one)."""

    def revision(self) -> int:
        """Moves on every write, calibration included."""
        ...

    def wait(self, timeout_s: float) -> bool:
        """True when a write committed within ``timeout_s``; raises when the store is lost."""
        ...

    def close(self) -> None: ...


class Gallery(ABC):
    """Open with :meth:`create` or :meth:`open` (a path, or a database URL); reads are cheap, writes are
    transactions. ``path`` is where it lives, for messages (a file, or a URL without its password)."""

    path: Any  # a Path, or the database's URL without password (both have .name and str())
    shared = False  # a store several hosts write (a database): daemons follow it live

    @classmethod
    def is_shared(cls, location: str | Path) -> bool:
        return _backend(location).shared

    # ---- opening: the backend switch ---------------------------------------------------------
    @classmethod
    def create(cls, location: str | Path, model_id: str, dim: int) -> Gallery:
        """Create a new gallery, or open an existing one built with the same model."""
        return _backend(location).create(location, model_id, dim)

    @classmethod
    def open(cls, location: str | Path, model_id: str | None = None) -> Gallery:
        """Open an existing gallery; ``model_id`` (when given) must match the one it was built with. Every way
        a location can fail to be a usable gallery is a :class:`GalleryError` naming it and the reason."""
        return _backend(location).open(location, model_id)

    @classmethod
    def follow(cls, location: str | Path) -> ChangeFeed | None:
        """A feed of the gallery's commits, when its backend has one (a database several hosts share); None for
        a file (a daemon reloads one on SIGHUP)."""
        return _backend(location).change_feed(location)

    @classmethod
    def change_feed(cls, location: str | Path) -> ChangeFeed | None:
        return None

    @abstractmethod
    def close(self) -> None: ...

    @contextlib.contextmanager
    def writing(self) -> Iterator[None]:
        """Several writes (an enrolment and its recalibration) as one transaction where the backend can: in a
        database one commit, one change for the hosts that follow it, other hosts' writers waiting their turn.
        A file commits each write on its own (one process writes it)."""
        yield

    # ---- metadata ------------------------------------------------------------------------------
    @abstractmethod
    def meta(self, key: str) -> str | None: ...

    @property
    def model_id(self) -> str:
        return self.meta("model_id") or ""

    @property
    def dim(self) -> int:
        return int(self.meta("dim") or 0)

    @property
    def version(self) -> int:
        """Incremented by every write: events name the gallery state they were matched against."""
        return int(self.meta("version") or 0)

    @property
    def threshold(self) -> float | None:
        return json.loads(self.meta("threshold") or "null")

    @property
    def margin(self) -> float:
        return float(json.loads(self.meta("margin") or "0"))

    @property
    def calibration(self) -> dict | None:
        return json.loads(self.meta("calibration") or "null")

    @abstractmethod
    def cache(self) -> FaceCache:
        """The embedding cache kept with this gallery (so erasing a person erases their photos' vectors)."""

    @abstractmethod
    def set_calibration(self, threshold: float | None, margin: float, figures: dict | None, bump: bool = True) -> None:
        """Store the operating point; ``bump=False`` when it completes a write that already bumped the version."""

    # ---- identities ----------------------------------------------------------------------------
    @abstractmethod
    def names(self) -> list[str]: ...

    @abstractmethod
    def identities(self) -> list[Identity]: ...

    @abstractmethod
    def sources(self) -> dict[str, set[str]]:
        """Identity name -> hashes of every photo offered for them (enrolled or not)."""

    def replace_identities(self, people: list[Identity], keep_others: bool,
                           sources: dict[str, set[str]] | None = None) -> None:
        """Write ``people`` (replacing same-named ones) in one transaction; drop the rest unless
        ``keep_others``. ``sources`` maps identity names to the hashes of every photo offered for
        them, enrolled or not, so removing a person can erase all of their cached embeddings."""
        new = {p.name for p in people}  # built once: a set inside the comprehension was rebuilt per name
        kept = [n for n in self.names() if n not in new] if keep_others else []
        for p in people:
            if not names.is_valid(p.name):
                raise GalleryError(f"bad identity name {names.clip(p.name)!r}: {names.RULE}")
        if clash := names.collisions([*kept, *(p.name for p in people)]):
            a, b = clash[0]
            raise GalleryError(f"identity name {names.clip(b)!r} is too like {names.clip(a)!r} (the same after case "
                               "folding and look-alike characters): use one name for one person")
        self._write_identities(people, keep_others, sources or {})

    def copy_identities(self, people: list[Identity], sources: dict[str, set[str]]) -> None:
        """Replace every identity with ``people`` as stored elsewhere (a migration), in one transaction; names
        are not checked again: one from before the name rule still matches and is pointed out for renaming."""
        self._write_identities(people, False, sources)

    @abstractmethod
    def _write_identities(self, people: list[Identity], keep_others: bool, sources: dict[str, set[str]]) -> None:
        """The backend's one transaction for :meth:`replace_identities` (names already checked)."""

    @abstractmethod
    def remove(self, name: str) -> int:
        """Erase an identity, its templates and the cached embeddings of its photos, in one transaction;
        returns the templates removed."""

    def rename(self, old: str, new: str) -> str:
        """Rename ``old`` (any name the gallery holds, old bad ones included) to ``new`` under the name rule;
        returns the new name as stored."""
        try:
            new = names.check_new_name(new, self.names(), same=old)
        except names.BadName as exc:
            raise GalleryError(str(exc)) from None
        if new == old:
            if old not in self.names():
                raise GalleryError(f"no identity named {names.clip(old)!r} in {self.path}")
            return new  # nothing to change
        self._rename(old, new)
        return new

    @abstractmethod
    def _rename(self, old: str, new: str) -> None:
        """The backend's one transaction for :meth:`rename` (the new name already checked)."""

    def bad_names(self) -> list[str]:
        """Names stored before the name rule that it refuses now: they still match, and should be renamed."""
        return [n for n in self.names() if not names.is_valid(n)]

    @abstractmethod
    def counts(self) -> tuple[int, int, int]:
        """(identities, templates, outlier templates)."""

    # ---- corrections: "not this person", merge and split ---------------------------------------
    @abstractmethod
    def negatives(self) -> dict[str, np.ndarray]:
        """Identity name -> the faces recorded as not them, (k, D) unit vectors (``pipeline/gallery/negatives.py``)."""

    @abstractmethod
    def add_negative(self, name: str, vec: np.ndarray, source: str, figures: dict | None) -> None:
        """Record ``vec`` as not ``name`` (``source``: where the face came from) and store the calibration
        ``figures`` it changes, in one transaction that bumps the version."""

    @abstractmethod
    def regroup(self, people: list[Identity], drop: list[str], moves: dict[str, str], sources: dict[str, set[str]],
                figures: dict | None) -> None:
        """Merge and split as one transaction: write ``people`` (replacing same-named ones), erase the identities
        in ``drop`` (their templates; not the cached embeddings, which ``people`` still use), move the offered
        photos and negatives of each ``moves`` key to its value, add ``sources``, store the calibration."""

    def info(self) -> dict:
        n_id, n_t, n_out = self.counts()
        return {
            "path": str(self.path), "model": self.model_id, "dim": self.dim, "identities": n_id,
            "templates": n_t, "outliers": n_out, "threshold": self.threshold, "margin": self.margin,
            "version": self.version,
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(float(self.meta("created") or 0))),
            "updated": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(float(self.meta("updated") or 0))),
            "calibration": self.calibration,
            "own_thresholds": {n: v["threshold"]
                               for n, v in ((self.calibration or {}).get("per_identity") or {}).items()},
            "negatives": {n: len(v) for n, v in self.negatives().items()},
        }


_BACKENDS: list[tuple[Callable[[str | Path], bool], type[Gallery]]] = []


def register_backend(accepts: Callable[[str | Path], bool], backend: type[Gallery]) -> None:
    """A backend module registers itself when imported (``pipeline/gallery/__init__.py`` imports them all)."""
    _BACKENDS.append((accepts, backend))


def is_url(location: object) -> bool:
    """A database URL (a str, or a checked URL object), never a path (``Path`` folds ``//``)."""
    return not isinstance(location, Path) and "://" in str(location)


def location_name(location: object) -> str:
    """What a caller without the API token is shown of a gallery's location: a file's name, a database's."""
    if isinstance(location, Path):
        return location.name
    if is_url(location):
        return str(location).split("?")[0].rstrip("/").rsplit("/", 1)[-1]
    return Path(str(location)).name


def _backend(location: str | Path) -> type[Gallery]:
    for accepts, backend in _BACKENDS:
        if accepts(location):
            return backend
    shown = str(location).split("@")[-1][:100]  # never a password in a message
    raise GalleryError(f"no gallery backend for {shown!r}: give a file path or a postgresql:// URL")
