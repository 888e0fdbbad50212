"""Builds the detector and embedders that commands run, from settings (torch is imported only here,
only when a command needs a network)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from daemon.config import Settings
from models.registry import split_model_id

if TYPE_CHECKING:
    from models.embedder import Embedder
    from pipeline.cache import EmbeddingCache
    from pipeline.stills import StillEmbedder


def configured_embedder(settings: Settings) -> Embedder:
    from models.embedder import load_embedder

    e = settings.embedder
    return load_embedder(e.model, e.runtime, e.device, e.flip, e.weights_path, e.allow_cpu_fallback,
                         settings.cache_dir / "exports", e.batch_size, e.download)


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def still_engine(settings: Settings, policy: str, cache: EmbeddingCache | None = None) -> StillEmbedder:
    """Detector + embedder + embedding cache for photos; the detector follows the embedder onto CUDA."""
    from models.detector import MTCNNDetector
    from pipeline.cache import EmbeddingCache
    from pipeline.stills import StillEmbedder

    detector = MTCNNDetector(settings.detector.to_settings(), "cuda" if settings.embedder.device != "cpu"
                             and _cuda() else "cpu")
    cache = cache or EmbeddingCache(settings.cache_dir / "embeddings.sqlite")
    return StillEmbedder(detector, configured_embedder(settings), cache, policy=policy)


def engine_for_gallery(settings: Settings, model_id: str | None, cache: EmbeddingCache | None,
                       policy: str) -> StillEmbedder:
    """A still engine embedding exactly as the gallery's model id says (model and flip), or an error."""
    if model_id:
        name, flip = split_model_id(model_id)
        settings = settings.model_copy(update={"embedder": settings.embedder.model_copy(
            update={"model": name, "flip": flip})})
    engine = still_engine(settings, policy, cache)
    if model_id and engine.embedder.model_id != model_id:
        raise ValueError(f"the gallery was built with {model_id}; this facestream embeds with "
                         f"{engine.embedder.model_id}: rebuild it with 'facestream gallery build'")
    return engine
