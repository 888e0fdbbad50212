"""Robust still-image loading: every failure becomes an :class:`ImageError` with a one-line reason.

Handles EXIF orientation and every PIL mode (grayscale, alpha, palette, CMYK, 16-bit) by
converting to RGB; refuses images above a pixel budget before decoding them.
"""

from __future__ import annotations

import hashlib
import io
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff"})
DEFAULT_MAX_PIXELS = 50_000_000


class ImageError(ValueError):
    """A file that cannot be used as an image; ``reason`` is short and stable for reports."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def load_rgb(path: str | Path, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Decode ``path`` to an RGB uint8 array (H, W, 3), upright per its EXIF orientation."""
    path = Path(path)
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise ImageError("unreadable", exc.strerror or str(exc)) from None
    if path.is_dir():
        raise ImageError("unreadable", "is a directory")
    if size == 0:
        raise ImageError("empty file")
    return _decode(path, max_pixels)


def decode_rgb(data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Like :func:`load_rgb` for bytes already in memory (an HTTP upload): nothing is written to disk."""
    if not data:
        raise ImageError("empty file")
    return _decode(io.BytesIO(data), max_pixels)


def encoded_size(data: bytes) -> tuple[int, int]:
    """(width, height) from an image's header, without decoding it; ImageError when it is no image."""
    if not data:
        raise ImageError("empty file")
    try:
        with Image.open(io.BytesIO(data)) as img:
            return img.size
    except UnidentifiedImageError:
        raise ImageError("not an image") from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise ImageError("truncated or corrupt", str(exc)) from None


def _decode(source: Path | io.BytesIO, max_pixels: int) -> np.ndarray:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(source)
            w, h = img.size
            if w * h > max_pixels:
                raise ImageError("too large", f"{w}x{h} exceeds {max_pixels} pixels")
            img.load()
            img = ImageOps.exif_transpose(img)
    except ImageError:
        raise
    except UnidentifiedImageError:
        raise ImageError("not an image") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageError("too large", str(exc)) from None
    except PermissionError as exc:
        raise ImageError("unreadable", exc.strerror or str(exc)) from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise ImageError("truncated or corrupt", str(exc)) from None
    if img.mode != "RGB":
        if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
            # Composite transparent pixels on white instead of letting them turn black.
            rgba = img.convert("RGBA")
            bg = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
            img = Image.alpha_composite(bg, rgba).convert("RGB")
        elif img.mode in ("I;16", "I;16B", "I;16L", "I"):
            arr = np.asarray(img, dtype=np.float64)
            top = arr.max() if arr.size and arr.max() > 0 else 1.0
            img = Image.fromarray((arr * (255.0 / top)).astype(np.uint8)).convert("RGB")
        else:
            img = img.convert("RGB")
    arr = np.asarray(img, dtype=np.uint8)
    if arr.ndim != 3 or arr.shape[2] != 3 or min(arr.shape[:2]) < 1:
        raise ImageError("truncated or corrupt", f"unexpected decoded shape {arr.shape}")
    return np.ascontiguousarray(arr)
