"""Keep glibc from fragmenting the heap with video frames.

glibc raises its mmap threshold each time a large block is freed (up to 32 MiB), so after a few frames
every 0.7-6 MB frame buffer is carved from per-thread heap arenas instead of being mmapped; with frames
allocated in one thread and freed in another, the arenas fragment and RSS climbs without bound.
Measured with ``facestream bench soak`` (4 looped 640x360 live sources, 50 s): RSS +61 % after warm-up
with glibc's defaults, +12 % with MALLOC_ARENA_MAX=2, +2 % with the threshold pinned at 128 KiB.
Setting the threshold explicitly turns the dynamic adjustment off. It costs throughput: every large
torch buffer is then a fresh mmap (page faults), so the Hamilton clip as a file ran at 9.3-10.4 frames/s
pinned vs 13.7-15.2 unpinned (1 MiB: 10.9; 4 MiB: 12.2 but +8.8 % RSS). The daemon therefore pins it
only when it has live sources (it runs for days); file-only runs end and keep glibc's default.
"""

from __future__ import annotations

import ctypes
import ctypes.util

import structlog

log = structlog.get_logger(__name__)

M_MMAP_THRESHOLD = -3  # glibc's malloc.h
MMAP_THRESHOLD_BYTES = 128 * 1024


def pin_mmap_threshold(nbytes: int = MMAP_THRESHOLD_BYTES) -> bool:
    """Pin glibc's mmap threshold (blocks this large or larger go straight to mmap and back to the OS when
    freed). False where the C library is not glibc (musl, macOS): nothing to do there."""
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
        mallopt = libc.mallopt if libc is not None else None
    except (OSError, AttributeError):
        mallopt = None
    if mallopt is None:
        return False
    ok = bool(mallopt(M_MMAP_THRESHOLD, nbytes))
    if not ok:
        log.warning("mallopt_failed", option="M_MMAP_THRESHOLD", value=nbytes)
    return ok
