"""Stills to embeddings: load, detect (batched), pick the face, align, embed, cache.

Shared by verification, gallery building and identification so every tool embeds a photo the
same way and reuses the same cached vectors.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from models.detection import Detection
from models.detector import MTCNNDetector
from models.embedder import Embedder
from pipeline.face_measures import laplacian_blur
from pipeline.gallery.cache import CachedFace, EmbeddingCache
from pipeline.images import DEFAULT_MAX_PIXELS, ImageError, file_sha256, load_rgb

NO_FACE = "no face detected"
POLICY_VERSION = "-v2"  # bump when a selection rule changes, so cached choices are not reused


@dataclass
class FaceResult:
    """Outcome for one file: a unit embedding or a reason, plus figures about the chosen face."""

    path: Path
    sha256: str | None
    vec: np.ndarray | None
    reason: str | None
    info: dict[str, float | int | str | list[float]]

    @property
    def ok(self) -> bool:
        return self.vec is not None


def _off_centre(d: Detection, shape: tuple[int, ...]) -> float:
    return float(np.hypot((d.box[0] + d.box[2]) / 2 - shape[1] / 2.0, (d.box[1] + d.box[3]) / 2 - shape[0] / 2.0))


def select_face(dets: list[Detection], shape: tuple[int, ...], policy: str) -> tuple[Detection | None, str]:
    """Choose the subject face. ``largest``; ``center`` (the face nearest the image centre, as in
    LFW-style crops); ``dominant`` (the largest only if it is clearly bigger than the next)."""
    if not dets:
        return None, NO_FACE
    if policy == "largest" or len(dets) == 1:
        return dets[0], ""
    if policy == "center":
        cy, cx = shape[0] / 2.0, shape[1] / 2.0
        big = dets[0].area
        cands = [d for d in dets if d.area >= 0.25 * big]

        def off_centre(d: Detection) -> float:
            return ((d.box[0] + d.box[2]) / 2 - cx) ** 2 + ((d.box[1] + d.box[3]) / 2 - cy) ** 2

        return min(cands, key=off_centre), ""
    if policy == "dominant":
        big, second = dets[0], dets[1]
        if big.area >= 2.0 * second.area:
            return big, ""
        # A photo framed on its subject: the largest face is central and the others sit off-centre.
        side = min(shape[0], shape[1])
        if big.area >= 1.2 * second.area and _off_centre(big, shape) < 0.15 * side and all(
                _off_centre(d, shape) > 0.3 * side for d in dets[1:] if d.area * 2.0 > big.area):
            return big, ""
        return None, f"{len(dets)} faces, none clearly dominant"
    raise ValueError(f"face selection policy must be largest, center or dominant, got {policy!r}")


class StillEmbedder:
    """Embeds one chosen face per image file, with caching and per-file failure reasons."""

    def __init__(self, detector: MTCNNDetector, embedder: Embedder, cache: EmbeddingCache | None = None,
                 policy: str = "largest", max_pixels: int = DEFAULT_MAX_PIXELS, chunk: int = 16) -> None:
        select_face([], (1, 1), policy)  # validates the policy name eagerly
        self.detector = detector
        self.embedder = embedder
        self.cache = cache or EmbeddingCache(None)
        self.policy = policy
        self.max_pixels = max_pixels
        self.chunk = chunk
        # fp16 vectors share the model id (they match a float32 gallery) but are not the same numbers: cached apart.
        half = "" if getattr(embedder, "precision", "fp32") == "fp32" else f"|{embedder.precision}"
        self.context = f"{detector.settings.ident}|{policy}{POLICY_VERSION}|{embedder.model_id}{half}"
        self.computed = 0
        self.cached = 0

    def embed_files(self, paths: Iterable[Path], progress: str | None = None) -> list[FaceResult]:
        paths = [Path(p) for p in paths]
        results: list[FaceResult | None] = [None] * len(paths)
        todo: list[int] = []
        for i, p in enumerate(paths):
            try:
                sha = file_sha256(p)
            except OSError as exc:
                results[i] = FaceResult(p, None, None, f"unreadable: {exc.strerror or exc}", {})
                continue
            hit = self.cache.get(sha, self.context)
            if hit is not None:
                results[i] = FaceResult(p, sha, hit.vec, hit.reason, hit.info)
                self.cached += 1
            else:
                results[i] = FaceResult(p, sha, None, None, {})
                todo.append(i)
        bar = tqdm(total=len(todo), desc=progress, disable=None if progress else True, unit="img")
        for start in range(0, len(todo), self.chunk):
            idx = todo[start : start + self.chunk]
            self._compute([results[i] for i in idx])  # type: ignore[misc]
            bar.update(len(idx))
        bar.close()
        return results  # type: ignore[return-value]

    def embed_images(self, items: list[tuple[Path, str, np.ndarray]]) -> list[FaceResult]:
        """(label, sha256, RGB image) decoded in memory (uploads), embedded and cached like files."""
        results = []
        todo: list[tuple[FaceResult, np.ndarray]] = []
        for label, sha, image in items:
            hit = self.cache.get(sha, self.context)
            if hit is not None:
                results.append(FaceResult(label, sha, hit.vec, hit.reason, hit.info))
                self.cached += 1
            else:
                results.append(FaceResult(label, sha, None, None, {}))
                todo.append((results[-1], image))
        for start in range(0, len(todo), self.chunk):
            part = todo[start : start + self.chunk]
            self._compute_images([r for r, _ in part], [im for _, im in part])
        return results

    def embed_encoded(self, items: list[tuple[Path, str, bytes]],
                      decode: Callable[[bytes], np.ndarray]) -> list[FaceResult]:
        """Uploads, (label, sha256, encoded bytes): cached ones are not decoded at all, the others one at a time,
        so a request of many large photos holds one decoded image, not all of them."""
        results = []
        for label, sha, data in items:
            hit = self.cache.get(sha, self.context)
            if hit is not None:
                results.append(FaceResult(label, sha, hit.vec, hit.reason, hit.info))
                self.cached += 1
                continue
            result = FaceResult(label, sha, None, None, {})
            results.append(result)
            try:
                image = decode(data)
            except ImageError as exc:
                result.reason = str(exc)
                continue
            self._compute_images([result], [image])
            del image
        return results

    def _compute(self, items: list[FaceResult]) -> None:
        images: list[np.ndarray] = []
        loaded: list[FaceResult] = []
        for item in items:
            try:
                images.append(load_rgb(item.path, self.max_pixels))
                loaded.append(item)
            except ImageError as exc:
                item.reason = str(exc)
        self._compute_images(loaded, images)
        decoded = {id(it) for it in loaded}  # the unreadable ones are cached with their reason here
        self.computed += len(items) - len(loaded)
        self.cache.put_many([(it.sha256, self.context, CachedFace(it.vec, it.reason, it.info))
                             for it in items if it.sha256 and id(it) not in decoded])

    def _compute_images(self, loaded: list[FaceResult], images: list[np.ndarray]) -> None:
        dets = self.detector.detect(images) if images else []
        chips: list[np.ndarray] = []
        chipped: list[FaceResult] = []
        for item, image, found in zip(loaded, images, dets, strict=True):
            det, why = select_face(found, image.shape, self.policy)
            if det is None:
                item.reason = why
                item.info = {"faces": len(found)}
                continue
            chip = self.embedder.align(image, det)
            item.info = {
                "faces": len(found), "prob": round(det.prob, 5), "face_px": round(min(det.width, det.height), 1),
                "blur": round(laplacian_blur(chip), 2), "box": [round(v, 1) for v in det.box],
                "width": int(image.shape[1]), "height": int(image.shape[0]),
            }
            chips.append(chip)
            chipped.append(item)
        if chips:
            vecs = self.embedder.embed(np.stack(chips))
            for item, vec in zip(chipped, vecs, strict=True):
                item.vec = vec
        self.computed += len(loaded)
        self.cache.put_many([(it.sha256, self.context, CachedFace(it.vec, it.reason, it.info))
                             for it in loaded if it.sha256])
