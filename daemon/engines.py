"""Builds the detector and embedders that commands run, from settings (torch is imported only here,
only when a command needs a network)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from daemon.config import Settings
from models.registry import EMBEDDERS, model_id_for, split_model_id

if TYPE_CHECKING:
    from models.embedder import Embedder
    from pipeline.gallery.cache import EmbeddingCache
    from pipeline.gallery.stills import StillEmbedder


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
    from pipeline.gallery.cache import EmbeddingCache
    from pipeline.gallery.stills import StillEmbedder

    detector = MTCNNDetector(settings.detector.to_settings(), "cuda" if settings.embedder.device != "cpu"
                             and _cuda() else "cpu")
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
