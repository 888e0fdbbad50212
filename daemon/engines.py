"""Builds what commands and the daemon run, from settings: the detectors and embedders (torch is imported
only here, only when a command needs a network) and the gallery state the match stage starts from."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import structlog

from daemon.config import Settings
from daemon.stats import GalleryState
from models.registry import EMBEDDERS, model_id_for, split_model_id

if TYPE_CHECKING:
    from models.detector import MTCNNDetector
    from models.embedder import Embedder
    from pipeline.gallery.cache import EmbeddingCache
    from pipeline.gallery.stills import StillEmbedder

log = structlog.get_logger(__name__)


def configured_embedder(settings: Settings) -> Embedder:
    from models.embedder import load_embedder

    e = settings.embedder
    return load_embedder(e.model, e.runtime, e.device, e.flip, e.weights_path, e.allow_cpu_fallback,
                         settings.cache_dir / "exports", e.batch_size, e.download, precision=e.precision)


def still_engine(settings: Settings, policy: str, cache: EmbeddingCache | None = None) -> StillEmbedder:
    """Detector + embedder + embedding cache for photos, each on its configured device."""
    from models.detector import MTCNNDetector
    from pipeline.gallery.cache import EmbeddingCache
    from pipeline.gallery.stills import StillEmbedder

    d = settings.detector
    detector = MTCNNDetector(d.to_settings(), d.device, d.runtime, export_dir=settings.cache_dir / "exports",
                             allow_cpu_fallback=d.allow_cpu_fallback)
    cache = cache or EmbeddingCache(settings.cache_dir / "embeddings.sqlite")
    return StillEmbedder(detector, configured_embedder(settings), cache, policy=policy)


def check_gallery_model(model_id: str, where: str = "the gallery") -> tuple[str, bool]:
    """The embedder (name, flip) that reproduces a gallery's ``model_id``, or a one-line ValueError before any
    network is loaded (an unknown model or an older version of ours cannot embed comparable vectors)."""
    name, flip = split_model_id(model_id)
    if name not in EMBEDDERS:
        raise ValueError(f"{where} was built with model {model_id}, which this facestream does not have "
                         f"({', '.join(EMBEDDERS)}): rebuild it with 'facestream gallery build'")
    if (ours := model_id_for(name, flip)) != model_id:
        raise ValueError(f"{where} was built with {model_id}; this facestream embeds with {ours}: "
                         "rebuild it with 'facestream gallery build'")
    return name, flip


def engine_for_gallery(settings: Settings, model_id: str | None, cache: EmbeddingCache | None,
                       policy: str, where: str = "the gallery") -> StillEmbedder:
    """A still engine embedding exactly as the gallery's model id says (model and flip), or an error."""
    if model_id:
        name, flip = check_gallery_model(model_id, where)
        settings = settings.model_copy(update={"embedder": settings.embedder.model_copy(
            update={"model": name, "flip": flip})})
    engine = still_engine(settings, policy, cache)
    if model_id and engine.embedder.model_id != model_id:
        raise ValueError(f"{where} was built with {model_id}; this facestream embeds with "
                         f"{engine.embedder.model_id}: rebuild it with 'facestream gallery build'")
    return engine


def stream_embedder(settings: Settings, model_id: str | None, where: str) -> Embedder:
    """The daemon's embedder: the gallery's model (and flip) when it has one, else the configured one."""
    from models.embedder import load_embedder

    e, p = settings.embedder, settings.pipeline
    name, flip = check_gallery_model(model_id, where) if model_id else (e.model, e.flip)
    if p.threads_per_stage > 0:
        import torch

        torch.set_num_threads(p.threads_per_stage)
    embedder = load_embedder(name, e.runtime, e.device, flip, e.weights_path, e.allow_cpu_fallback,
                             settings.cache_dir / "exports", e.batch_size, e.download, p.threads_per_stage,
                             e.precision)
    if model_id and embedder.model_id != model_id:
        raise ValueError(f"{where} was built with {model_id}; this facestream embeds with {embedder.model_id}: "
                         "rebuild it with 'facestream gallery build'")
    return embedder


def stream_detector(settings: Settings) -> MTCNNDetector:
    """The daemon's detector. The scan's pyramid starts at 12/stream_min_face_size of the frame (0.3x at 40 px):
    that level is the downscaled copy, so no separate downscale is needed (it would only add a resize)."""
    from models.detector import DetectorSettings, MTCNNDetector

    d = settings.detector
    return MTCNNDetector(DetectorSettings(d.stream_min_face_size, tuple(d.thresholds), d.min_prob, d.factor,
                                          min_face_in_frame=True, fast_resampling=True),
                         device=d.device, runtime=d.runtime, threads=max(1, settings.pipeline.threads_per_stage),
                         export_dir=settings.cache_dir / "exports", allow_cpu_fallback=d.allow_cpu_fallback)


def load_gallery_state(settings: Settings, path: Path | str | None) -> tuple[GalleryState, str | None]:
    """The matcher and operating point of the gallery at ``path`` (a file, or a database URL) as it is now, and
    its model id (None without a gallery: every face is unknown)."""
    from pipeline.gallery import Gallery
    from pipeline.gallery.operating_point import gallery_point
    from pipeline.match import CentroidMatcher, make_matcher
    from pipeline.names import clip

    p, gs = settings.pipeline, settings.gallery
    if path is None:
        log.warning("no_gallery_every_face_is_unknown")
        return GalleryState(CentroidMatcher([]), p.threshold or 1.0, p.margin or 0.0, 0), None
    g = Gallery.open(path)
    try:
        people = g.identities()
        matcher = make_matcher(gs.matcher, people, gs.augment) if people else CentroidMatcher([])
        point = gallery_point(g, people, gs.matcher, gs.target_far, p.threshold, p.margin)
        log.info("operating_point", threshold=point.threshold, margin=point.margin, source=point.source,
                 identities=len(people), search=getattr(matcher, "backend", matcher.kind))
        if bad := g.bad_names():
            log.warning("identity_names_not_allowed", names=[clip(n) for n in bad[:10]], count=len(bad),
                        hint="names from before the name rule still match; rename each with 'facestream gallery "
                        "rename OLD NEW'")
        return GalleryState(matcher, point.threshold, point.margin, g.version, own=point.own), g.model_id
    finally:
        g.close()
