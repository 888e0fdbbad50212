"""Frame buffers reused once nothing holds them any more.

A live daemon pins glibc's mmap threshold (daemon/memory.py) so frame-sized blocks never fragment the
heap; the price is a fresh mmap, page faults and an munmap for every block of 128 KiB or more. A
720p RGB frame is 2.7 MB (675 pages): four 15 frames/s cameras spent half the CPU in the kernel
(``top``: 50 % sy). Reusing each source's frame buffers takes that cost away without giving the
fragmentation back. A buffer is free when only the pool refers to it (``sys.getrefcount``): every
message, view or crop that still uses a frame holds a reference to its array.
"""

from __future__ import annotations

import sys

import numpy as np


def _free_refs() -> int:
    """References a pooled buffer has while it is being checked and nobody else holds it."""
    bufs = [np.empty(1, np.uint8)]
    for b in bufs:
        return sys.getrefcount(b)
    raise AssertionError("unreachable")


_FREE = _free_refs()


class FramePool:
    """``take(shape)``: a uint8 buffer of that shape that nothing else references (new when none is free).
    At most ``capacity`` buffers are kept; beyond that, buffers are allocated and left to the allocator."""

    def __init__(self, capacity: int = 32) -> None:
        if capacity < 0:
            raise ValueError(f"capacity must be >= 0, got {capacity}")
        self.capacity = capacity
        self._bufs: list[np.ndarray] = []
        self.reused = 0
        self.allocated = 0

    def take(self, shape: tuple[int, ...]) -> np.ndarray:
        for b in self._bufs:
            if b.shape == shape and sys.getrefcount(b) <= _FREE:
                self.reused += 1
                return b
        self.allocated += 1
        b = np.empty(shape, np.uint8)
        if len(self._bufs) < self.capacity:
            self._bufs.append(b)
        elif self._bufs and self._bufs[0].shape != shape:
            self._bufs = [b]  # the stream changed resolution: let the old buffers go
        return b
