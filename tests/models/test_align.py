from __future__ import annotations

import numpy as np
import pytest

from models.align import align_face, similarity_transform
from models.registry import DLIB_TEMPLATE_150


def test_similarity_transform_recovers_a_known_transform() -> None:
    angle, scale, shift = np.deg2rad(17.0), 2.3, np.array([40.0, -12.0])
    rot = scale * np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    src = DLIB_TEMPLATE_150
    dst = src @ rot.T + shift
    m = similarity_transform(src, dst)
    np.testing.assert_allclose(m[:, :2], rot, atol=1e-9)
    np.testing.assert_allclose(m[:, 2], shift, atol=1e-9)


def test_degenerate_landmarks_raise() -> None:
    with pytest.raises(ValueError, match="degenerate"):
        similarity_transform(np.ones((5, 2)), DLIB_TEMPLATE_150)
    with pytest.raises(ValueError, match="matching"):
        similarity_transform(np.ones((4, 2)), DLIB_TEMPLATE_150)


def test_chip_puts_landmarks_on_the_template_and_big_faces_do_not_alias() -> None:
    # A synthetic 4000x4000 image with fine stripes: warping it straight down to 150 px aliases;
    # the pre-shrink must give the average grey instead.
    img = np.zeros((4000, 4000, 3), dtype=np.uint8)
    img[:, ::2] = 255
    lm = DLIB_TEMPLATE_150 * 20.0 + 300.0  # a face ~2000 px wide
    chip = align_face(img, lm, DLIB_TEMPLATE_150, 150)
    assert chip.shape == (150, 150, 3)
    assert abs(float(chip.mean()) - 127.5) < 10
    assert float(chip.std()) < 20
