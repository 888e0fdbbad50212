"""What the HTTP API does with photos and the gallery: recognise an upload, enrol, erase and rename people.

A face in an uploaded photo is judged by the daemon's own rule: the same quality gate, matcher,
threshold and margin the match stage uses at that moment. Gallery writes go through the same code as
``facestream gallery add|remove|rename`` (one transaction, recalibration), then the running daemon
swaps the gallery in before the request returns. Uploads are decoded in memory: nothing is written
anywhere but the gallery file.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import threading
import unicodedata
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import structlog

from daemon.http.errors import ApiError
from pipeline import names
from pipeline.face_measures import face_quality, laplacian_blur
from pipeline.gallery import Gallery, GalleryError
from pipeline.images import ImageError, decode_rgb, encoded_size
from pipeline.match import decide
from pipeline.types import FaceEmbedding

if TYPE_CHECKING:
    from daemon.config import Settings
    from daemon.stats import GalleryState
    from models.embedder import Embedder
    from pipeline.gallery.stills import StillEmbedder
    from pipeline.match_stage import FaceGate

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class DaemonLink:
    """The running daemon, as far as photo requests need it."""

    settings: Settings
    embedder: Embedder
    gallery_path: Path | str | None
    gallery_state: Callable[[], GalleryState]
    face_gate: Callable[[], FaceGate]
    reload_gallery: Callable[[], None]
    publish: Callable[[str, dict[str, Any]], None]


def check_name(name: str, existing: list[str] | None = None) -> str:
    """An identity name under the one name rule (pipeline/names.py), not colliding with ``existing``; else 422."""
    try:
        return names.check_new_name(name, existing or [])
    except names.BadName as exc:
        raise ApiError(422, str(exc)) from None


def existing_name(name: str) -> str:
    """A name to look up: any name the gallery may hold (``gallery add`` takes more than the API does)."""
    clean = unicodedata.normalize("NFC", name).strip()
    if not clean or len(clean) > 200 or any(unicodedata.category(c) == "Cc" for c in clean):
        raise ApiError(422, f"bad identity name {names.clip(name)!r}")
    return clean


def photo_label(path: str) -> str:
    """A template's photo as shown without the token: its file name (an upload's label is one already)."""
    return path if path.startswith("upload:") else Path(path).name


def _label(filename: str | None, index: int) -> Path:
    """How an uploaded photo is named in the gallery (its template's path): never a path on this machine."""
    base = re.sub(r"[^\w.\-]+", "_", Path(filename or "").name)[:80] or f"photo{index + 1}"
    return Path(f"upload:{base}")


class PixelBudget:
    """At most ``slots`` holders at once whose pixels add up to at most ``pixels`` (one holder may always run,
    so an image at the cap is never starved)."""

    def __init__(self, pixels: int, slots: int) -> None:
        self.pixels, self.slots = pixels, slots
        self._used, self._holders = 0, 0
        self._cond = threading.Condition()

    @contextlib.contextmanager
    def take(self, n: int) -> Iterator[None]:
        with self._cond:
            self._cond.wait_for(lambda: self._holders == 0 or (
                self._holders < self.slots and self._used + n <= self.pixels))
            self._used += n
            self._holders += 1
        try:
            yield
        finally:
            with self._cond:
                self._used -= n
                self._holders -= 1
                self._cond.notify_all()


class FaceService:
    def __init__(self, daemon: DaemonLink) -> None:
        self.daemon = daemon
        self._lock = threading.Lock()  # one photo request at a time: two model thread pools on 2 cores crawl
        # Eight concurrent uploads must not hold eight decoded images (a 143 KB PNG of one colour is 147 MB
        # decoded, and decoding and detecting it peak at ~20 bytes a pixel): at most one decode per core, and
        # their pixels within one upload's cap.
        self._decoding = PixelBudget(daemon.settings.http.max_upload_pixels, max(1, min(4, os.cpu_count() or 1)))
        self._engine: StillEmbedder | None = None
        self._liveness: Any = None

    @property
    def gallery_path(self) -> Path | str | None:
        return self.daemon.gallery_path

    def _still_engine(self) -> StillEmbedder:
        """Photos are detected as ``gallery build`` detects them (the stills settings), embedded by the daemon's
        embedder; made on first use so a daemon nobody uploads to never loads a second detector."""
        if self._engine is None:
            from models.detector import MTCNNDetector
            from pipeline.gallery.stills import StillEmbedder

            s = self.daemon.settings
            detector = MTCNNDetector(s.detector.to_settings(), runtime=s.detector.runtime, threads=1,
                                     export_dir=s.cache_dir / "exports")
            self._engine = StillEmbedder(detector, self.daemon.embedder, policy="dominant")
        return self._engine

    def _decode_upload(self, data: bytes) -> np.ndarray:
        return decode_rgb(data, self.daemon.settings.http.max_upload_pixels)

    # ---- recognise ---------------------------------------------------------------------------------
    def _live_scorer(self) -> Any:
        """The liveness models, loaded on the first ``?liveness=1`` (never for a daemon nobody asks)."""
        if self._liveness is None:
            from pipeline.liveness import LivenessScorer, LivenessSettings

            lv = self.daemon.settings.liveness
            try:
                self._liveness = LivenessScorer(LivenessSettings(runtime=lv.runtime, threads=1,
                                                                 weights_dir=lv.weights_dir, threshold=lv.threshold))
            except (ValueError, OSError) as exc:  # weights missing or corrupt: say which, as a JSON error
                raise ApiError(503, f"liveness is not available: {exc}") from None
        return self._liveness

    def recognize(self, data: bytes, liveness: bool = False) -> dict[str, Any]:
        try:
            width, height = encoded_size(data)
        except ImageError as exc:
            raise ApiError(422, f"not a usable image: {exc}") from None
        limit = self.daemon.settings.http.max_upload_pixels
        if width * height > limit:
            raise ApiError(413, f"not a usable image: too large: {width}x{height} exceeds {limit} pixels "
                           "(http.max_upload_pixels)")
        with self._decoding.take(width * height):  # held until the image is let go
            try:
                image = self._decode_upload(data)
            except ImageError as exc:
                raise ApiError(413 if exc.reason == "too large" else 422, f"not a usable image: {exc}") from None
            with self._lock:
                engine = self._still_engine()
                dets = engine.detector.detect([image])[0]
                chips = [engine.embedder.align(image, d) for d in dets]
                vecs = engine.embedder.embed(np.stack(chips)) if chips else np.zeros((0, 1), np.float32)
                live = (self._live_scorer().score_many([(image, d.box) for d in dets]) if liveness and dets
                        else None)
            height, width = image.shape[:2]
            del image
        state = self.daemon.gallery_state()
        matcher, threshold, margin, version = state.matcher, state.threshold, state.margin, state.version
        gate = self.daemon.face_gate()
        faces = []
        for i, (det, chip, vec) in enumerate(zip(dets, chips, vecs, strict=True)):
            why = gate.reject(FaceEmbedding(i, vec, det, face_quality(det), laplacian_blur(chip)))
            r = decide(matcher.topk(np.asarray(vec)[None, :], 5)[0], threshold, margin, state.own)
            identity = r.identity if why is None else None
            faces.append({
                "box": [round(float(v), 1) for v in det.box],
                "landmarks": [[round(float(x), 1), round(float(y), 1)] for x, y in det.landmarks],
                "det_prob": round(float(det.prob), 4),
                "identity": identity,
                "decision": "recognized" if identity else ("not judged" if why else "unknown"),
                "reason": why,
                "score": round(r.score, 4), "margin": round(r.margin, 4),
                "candidates": [{"identity": n, "score": round(s, 4)} for n, s in r.candidates[:3]],
                **({"live_score": round(float(live[i]), 4), "live": bool(live[i] >= self.daemon.settings.liveness
                                                                          .threshold)} if live is not None else {}),
            })
        return {"faces": faces, "width": int(width), "height": int(height),
                "threshold": round(threshold, 4), "margin_required": round(margin, 4), "gallery_version": version,
                "model": self.daemon.embedder.model_id}

    def embed_face(self, data: bytes, what: str = "photo") -> tuple[np.ndarray, dict[str, Any]]:
        """The unit embedding of an upload's subject face, as ``gallery add`` would choose and gate it (1:1
        verification); ApiError 422 naming ``what`` when there is none or it fails a quality gate."""
        from pipeline.gallery.cache import EmbeddingCache
        from pipeline.gallery.enrol import QualityGates

        gs = self.daemon.settings.gallery
        with self._decoding.take(self.daemon.settings.http.max_upload_pixels), self._lock:
            engine = self._still_engine()
            engine.cache = EmbeddingCache(None)  # nothing of a verification is kept
            r = engine.embed_encoded([(Path("upload:photo"), hashlib.sha256(data).hexdigest(), data)],
                                     self._decode_upload)[0]
        why = r.reason if r.vec is None else QualityGates(gs.min_face_px, gs.min_blur, gs.min_prob).check(r.info)
        if r.vec is None or why:
            raise ApiError(422, f"{what}: {why}")
        return np.asarray(r.vec, np.float32), r.info

    def centroid(self, name: str) -> np.ndarray:
        """An enrolled person's centroid; ApiError 404 when there is nobody of that name."""
        name = existing_name(name)
        g = self._open()
        try:
            person = next((p for p in g.identities() if p.name == name), None)
        finally:
            g.close()
        if person is None:
            raise ApiError(404, f"no identity named {names.clip(name)!r} in the gallery")
        return np.asarray(person.centroid, np.float32)

    def check_new_person(self, name: str) -> str:
        """``name`` for a new person: 422 when it breaks the name rule, 409 when the gallery has it (or one too
        like it) already."""
        name = check_name(name)
        g = self._open()
        try:
            existing = g.names()
        finally:
            g.close()
        if name in existing:
            raise ApiError(409, f"an identity named {names.clip(name)!r} already exists")
        try:
            return names.check_new_name(name, existing)
        except names.BadName as exc:
            raise ApiError(409, str(exc)) from None

    @contextlib.contextmanager
    def still_engine(self) -> Iterator[StillEmbedder]:
        """The photo engine for one piece of work (a clip's frames): one upload's pixels, one request at a time."""
        with self._decoding.take(self.daemon.settings.http.max_upload_pixels), self._lock:
            yield self._still_engine()

    # ---- gallery -------------------------------------------------------------------------------------
    def open_gallery(self) -> Gallery:
        return self._open()

    def _open(self) -> Gallery:
        if self.gallery_path is None:
            raise ApiError(409, "this daemon runs without a gallery: start it with --gallery FILE")
        try:
            return Gallery.open(self.gallery_path)
        except GalleryError as exc:  # replaced or damaged on disk since the daemon started: it keeps the old one
            raise ApiError(503, f"the gallery cannot be used now: {exc}") from None

    def identities(self, paths: bool = False) -> dict[str, Any]:
        """The gallery's people; ``paths``: the photos' and gallery's paths on this machine, else their labels
        (file names), which is all a caller without the token is shown."""
        if self.gallery_path is None:
            return {"identities": [], "gallery": None, "version": 0, "threshold": None, "margin": 0.0}
        g = self._open()
        try:
            people = [{"name": p.name, "templates": len(p.paths), "outliers": int(p.outlier.sum()),
                       "photos": p.paths if paths else [photo_label(x) for x in p.paths]} for p in g.identities()]
            return {"identities": people, "gallery": str(g.path) if paths else g.path.name, "version": g.version,
                    "threshold": g.threshold, "margin": g.margin}
        finally:
            g.close()

    @contextlib.contextmanager
    def open_for_write(self) -> Iterator[Gallery]:
        """The gallery, open, one photo request or gallery write at a time (``daemon/http/corrections.py``)."""
        g = self._open()
        try:
            with self._lock:
                yield g
        finally:
            g.close()

    def person(self, name: str, paths: bool = False) -> dict[str, Any]:
        """One person as ``identities`` lists them; ApiError 404 when there is nobody of that name."""
        name = existing_name(name)
        found = next((p for p in self.identities(paths)["identities"] if p["name"] == name), None)
        if found is None:
            raise ApiError(404, f"no identity named {names.clip(name)!r} in the gallery")
        return found

    def changed(self, action: str, **body: Any) -> int:
        return self._changed(action, **body)

    def _changed(self, action: str, **body: Any) -> int:
        """Swap the new gallery into the running pipeline and tell every sink; returns the version now in use."""
        self.daemon.reload_gallery()
        version = self.daemon.gallery_state().version
        self.daemon.publish("gallery.updated", {"action": action, **body, "gallery_version": version})
        return version

    def enrol(self, name: str, photos: list[tuple[str | None, bytes]]) -> dict[str, Any]:
        from pipeline.gallery.enrol import QualityGates, enrol

        name = check_name(name)
        if not photos:
            raise ApiError(422, "no photos in the request: send one or more image files")
        limit = self.daemon.settings.http.max_photos
        if len(photos) > limit:
            raise ApiError(413, f"{len(photos)} photos in one request; at most {limit} (http.max_photos)")
        report: dict[Path, dict[str, Any]] = {}
        items = []
        for i, (filename, data) in enumerate(photos):
            label = _label(filename, i)
            while label in report:
                label = Path(f"{label}~{i + 1}")
            report[label] = {"photo": filename or label.name, "enrolled": False, "reason": None}
            items.append((label, hashlib.sha256(data).hexdigest(), data))
        g = self._open()
        gs = self.daemon.settings.gallery
        try:
            name = check_name(name, g.names())
            with self._decoding.take(self.daemon.settings.http.max_upload_pixels), self._lock:  # one at a time
                engine = self._still_engine()
                engine.cache = g.cache()
                results = engine.embed_encoded(items, self._decode_upload)
                with g.writing():  # the person and the recalibration in one commit (a shared gallery)
                    result = enrol(engine, g, name, [], QualityGates(gs.min_face_px, gs.min_blur, gs.min_prob),
                                   gs.target_far, results, refuse_shared=True)
        finally:
            g.close()
        skipped = {Path(s["path"]): s["reason"] for s in result["skipped_files"]}
        for label, *_ in items:
            report[label].update(enrolled=label not in skipped, reason=skipped.get(label))
        photos_out = list(report.values())
        if not result["added"]:
            raise ApiError(422, f"no photo of {name} was enrolled", photos=photos_out)
        version = self._changed("enrolled", identity=name, added=result["added"])
        log.info("api_enrolled", identity=name, added=result["added"], gallery_version=version)
        return {"identity": name, "added": result["added"], "rejected": len(photos_out) - result["added"],
                "photos": photos_out, "threshold": result["threshold"], "margin": result["margin"],
                "gallery_version": version}

    def erase(self, name: str) -> dict[str, Any]:
        from pipeline.gallery.calibration import recalibrate

        name = existing_name(name)
        g = self._open()
        try:
            with self._lock, g.writing():
                try:
                    removed = g.remove(name)
                except GalleryError:
                    raise ApiError(404, f"no identity named {names.clip(name)!r} in the gallery") from None
                cal = recalibrate(g, self.daemon.settings.gallery.target_far)
        finally:
            g.close()
        version = self._changed("erased", identity=name, templates=removed)
        log.info("api_erased", identity=name, templates=removed, gallery_version=version)
        return {"erased": name, "templates": removed, "threshold": cal["threshold"], "margin": cal["margin"],
                "gallery_version": version}

    def rename(self, old: str, new: str) -> dict[str, Any]:
        from pipeline.gallery.calibration import recalibrate

        old, new = existing_name(old), check_name(new)
        g = self._open()
        try:
            with self._lock, g.writing():
                try:
                    new = g.rename(old, new)
                except GalleryError as exc:
                    if "already exists" in str(exc):
                        raise ApiError(409, f"an identity named {names.clip(new)!r} already exists") from None
                    if "too like" in str(exc):
                        raise ApiError(409, str(exc)) from None
                    raise ApiError(404, f"no identity named {names.clip(old)!r} in the gallery") from None
                recalibrate(g, self.daemon.settings.gallery.target_far)
        finally:
            g.close()
        version = self._changed("renamed", identity=new, previous=old)
        return {"renamed": old, "to": new, "gallery_version": version}
