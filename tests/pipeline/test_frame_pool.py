"""The frame pool hands out a buffer again only once nothing refers to it."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.frame_pool import FramePool


def test_a_buffer_still_referenced_is_never_reused_and_a_released_one_is() -> None:
    pool = FramePool(capacity=4)
    a = pool.take((4, 6, 3))
    a[:] = 7
    view = a[1:3]  # a crop some stage still holds keeps the frame alive
    b = pool.take((4, 6, 3))
    assert b is not a and np.all(a == 7)
    del a
    c = pool.take((4, 6, 3))
    assert c is not b and np.shares_memory(c, view) is False  # the viewed buffer is still in use
    del view
    d = pool.take((4, 6, 3))  # now nothing refers to the first buffer: it is handed out again
    assert (pool.reused, pool.allocated) == (1, 3)
    assert d.shape == (4, 6, 3)


def test_capacity_bounds_the_buffers_kept_and_a_new_resolution_replaces_them() -> None:
    pool = FramePool(capacity=2)
    held = [pool.take((2, 2, 3)) for _ in range(3)]  # the third is not kept by the pool
    assert len(pool._bufs) == 2
    del held
    pool.take((8, 8, 3))
    assert [b.shape for b in pool._bufs] == [(8, 8, 3)]
    with pytest.raises(ValueError, match="capacity must be >= 0"):
        FramePool(-1)
