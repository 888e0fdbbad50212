"""dlib's 5-point shape predictor in numpy: parsing, landmarks on a real face, chip geometry."""

from __future__ import annotations

import numpy as np
import pytest

from models.dlib_format import DlibFormatError
from models.dlib_shape_predictor import (
    CHIP_TEMPLATE_5,
    ShapePredictor,
    dlib_chip_transform,
    find_shape_predictor_file,
    rect_from_mtcnn,
)


@pytest.fixture(scope="module")
def sp() -> ShapePredictor:
    return ShapePredictor.load()


def _apply(m: np.ndarray, pts: np.ndarray) -> np.ndarray:
    return pts @ m[:, :2].T + m[:, 2]


def test_packaged_model_parses_to_its_end(sp: ShapePredictor) -> None:
    # from_bytes refuses trailing bytes, so a successful load consumed the file exactly.
    assert sp.num_parts == 5
    assert sp.initial_shape.shape == (5, 2)
    assert np.all((sp.initial_shape > 0) & (sp.initial_shape < 1))  # inside the unit face box
    n_cascades, n_trees, n_splits = sp.idx1.shape
    assert n_cascades > 1 and n_trees > 1 and n_splits in (1, 3, 7, 15, 31)
    assert sp.leaves.shape == (n_cascades, n_trees, n_splits + 1, 5, 2)
    assert sp.anchor_idx.shape == sp.deltas.shape[:2]
    assert sp.idx1.max() < sp.deltas.shape[1] and sp.anchor_idx.max() < 5


def test_trailing_or_missing_bytes_are_refused() -> None:
    data = find_shape_predictor_file().read_bytes()
    with pytest.raises(DlibFormatError, match="trailing"):
        ShapePredictor.from_bytes(data + b"\x00")
    with pytest.raises(DlibFormatError, match="end of file"):
        ShapePredictor.from_bytes(data[:-3])


def test_prediction_handles_faces_at_the_border_and_grey_input(sp: ShapePredictor) -> None:
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (60, 80, 3), dtype=np.uint8)
    p = sp.predict(img, (-20, -20, 40, 40))  # pixels outside the image read as 0, as in dlib
    assert p.shape == (5, 2) and np.all(np.isfinite(p))
    grey = (img.astype(np.int32).sum(axis=2) // 3).astype(np.uint8)
    np.testing.assert_allclose(sp.predict(grey, (10, 5, 60, 55)), sp.predict(img, (10, 5, 60, 55)))
    rounded = sp.predict(img, (10, 5, 60, 55), round_output=True)
    np.testing.assert_array_equal(rounded, np.round(rounded))


def test_landmarks_on_a_real_face_agree_with_mtcnn(sp: ShapePredictor, detector, rgb) -> None:
    img = rgb("face_recognition_examples/test_images/obama.jpg")
    det = detector.detect([img])[0][0]
    lm = det.landmarks.astype(np.float64)
    p = sp.predict(img, rect_from_mtcnn(det.box, lm))
    per100 = 100.0 / np.linalg.norm(lm[1] - lm[0])  # errors in % of MTCNN's eye distance
    # parts 0,1 are the corners of the eye on the image's right, 2,3 of the other eye
    assert np.linalg.norm((p[0] + p[1]) / 2 - lm[1]) * per100 < 10
    assert np.linalg.norm((p[2] + p[3]) / 2 - lm[0]) * per100 < 10
    # part 4 is the bottom of the nose: below MTCNN's nose tip, but not by much
    assert abs(p[4, 0] - lm[2, 0]) * per100 < 12
    assert 3 < (p[4, 1] - lm[2, 1]) * per100 < 30
    # and the chip transform brings the parts close to dlib's template
    chip = (0.25 + CHIP_TEMPLATE_5) / 1.5 * 150
    assert np.abs(_apply(dlib_chip_transform(p), p) - chip).max() < 6


def test_chip_transform_matches_dlib_geometry() -> None:
    size, padding = 150, 0.25
    chip = (padding + CHIP_TEMPLATE_5) / (2 * padding + 1) * size
    # parts exactly at the chip positions: dlib's centered_drect spans size-1 px about the centre,
    # so at scale 1 its chip is the template shifted by half a pixel
    shift = np.array([[1.0, 0.0, -0.5], [0.0, 1.0, -0.5]])
    np.testing.assert_allclose(dlib_chip_transform(chip, size, padding), shift, atol=1e-9)
    # a rotated and shifted face at the same scale comes back the same way
    a = np.deg2rad(20.0)
    rot = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
    pts = chip @ rot.T + [300.0, 40.0]
    np.testing.assert_allclose(_apply(dlib_chip_transform(pts, size, padding), pts), chip - 0.5, atol=1e-9)
    # at another scale dlib's chip is zoomed about its centre by (size*s - 1)/(size - 1) / s
    s = 2.0
    pts = chip * s
    got = _apply(dlib_chip_transform(pts, size, padding), pts)
    zoom = s * (size - 1) / (size * s - 1)
    np.testing.assert_allclose(got, (chip - size / 2) * zoom + (size - 1) / 2, atol=1e-9)
    with pytest.raises(ValueError, match="5 landmarks"):
        dlib_chip_transform(chip[:4])
