from __future__ import annotations

import csv

import numpy as np
import pytest

from models.detector import DetectorSettings, MTCNNDetector

# group_1.jpg holds ~26-30 faces of 15-25 px: the hard small-face case. We accept up to 3 fewer
# than the eye count there; every other image must match its count exactly.
SMALL_FACE_TOLERANCE = {"multi_face/group_1.jpg": 3}


def test_face_counts_on_shared_images_at_default_thresholds(data_dir, rgb) -> None:
    det = MTCNNDetector()  # defaults, full resolution
    rows = list(csv.DictReader((data_dir / "images_misc" / "images.csv").open()))
    assert len(rows) >= 9
    failures = []
    for row in rows:
        n = len(det.detect([rgb("images_misc/" + row["filename"])])[0])
        lo = int(row["human_faces_min"]) - SMALL_FACE_TOLERANCE.get(row["filename"], 0)
        hi = int(row["human_faces_max"])
        if not lo <= n <= hi:
            failures.append(f"{row['filename']}: {n} faces, expected {lo}..{hi}")
    assert not failures, failures


def test_batched_detection_equals_single_frames(rgb) -> None:
    det = MTCNNDetector()
    a = rgb("face_recognition_examples/stills/obama-480p.jpg")
    b = np.ascontiguousarray(a[:, ::-1])  # mirror: same size, different content
    batched = det.detect([a, b, a])
    singles = [det.detect([x])[0] for x in (a, b, a)]
    for got, want in zip(batched, singles, strict=True):
        assert len(got) == len(want) == 1
        np.testing.assert_allclose(got[0].box, want[0].box, atol=1e-3)
        np.testing.assert_allclose(got[0].landmarks, want[0].landmarks, atol=1e-3)


def test_detection_scale_maps_back_to_full_resolution(rgb) -> None:
    img = rgb("face_recognition_examples/stills/obama-1080p.jpg")
    full = MTCNNDetector().detect([img])[0]
    half = MTCNNDetector(DetectorSettings(scale=0.5)).detect([img])[0]
    assert len(full) == len(half) == 1
    # Same face, boxes agree to a few percent of the face size.
    size = full[0].width
    assert np.abs(np.array(full[0].box) - np.array(half[0].box)).max() < 0.08 * size
    assert np.abs(full[0].landmarks - half[0].landmarks).max() < 0.05 * size


def test_invalid_settings_and_frames_raise_value_errors() -> None:
    with pytest.raises(ValueError, match="scale must be in"):
        DetectorSettings(scale=0.0)
    with pytest.raises(ValueError, match="min_face_size must be >= 8"):
        DetectorSettings(min_face_size=4)
    with pytest.raises(ValueError, match="must be an RGB uint8 array"):
        MTCNNDetector().detect([np.zeros((10, 10), dtype=np.uint8)])


def test_tiny_frame_gives_no_faces_not_an_error() -> None:
    assert MTCNNDetector().detect([np.zeros((5, 5, 3), dtype=np.uint8)]) == [[]]


FACENET_PHOTOS = ("images_misc/multi_face/multiface.jpg", "images_misc/multi_face/group_2.jpg",
                  "images_misc/multi_face/group_1.jpg", "images_misc/no_faces/cats.jpg",
                  "face_recognition_examples/stills/two_people.jpg")


def _facenet_reference(img: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    import torch
    from facenet_pytorch import MTCNN
    from facenet_pytorch.models.utils.detect_face import detect_face

    ref = MTCNN()
    with torch.inference_mode():
        boxes, points = detect_face(torch.from_numpy(img[None].copy()), 15, ref.pnet, ref.rnet, ref.onet,
                                    [0.6, 0.7, 0.8], 0.709, "cpu")
    return np.asarray(boxes[0], dtype=np.float64).reshape(-1, 5), np.asarray(points[0], np.float64).reshape(-1, 5, 2)


@pytest.mark.parametrize("runtime", ["onnx", "torch"])
def test_stills_cascade_equals_facenet_pytorch(rgb, runtime: str) -> None:
    """models.mtcnn_cascade reimplements facenet-pytorch's detect_face (NumPy, OpenCV NMS, ONNX Runtime);
    with its exact (torch area) resampling, photos get the same boxes, probabilities and landmarks."""
    from models.mtcnn import load_nets
    from models.mtcnn_cascade import detect_faces

    nets = load_nets(runtime)
    for rel in FACENET_PHOTOS:
        img = rgb(rel)
        want, want_points = _facenet_reference(img)
        boxes, points = detect_faces(img[None], nets, 15, (0.6, 0.7, 0.8), 0.709, exact=True)
        assert boxes[0].shape == want.shape, rel
        np.testing.assert_allclose(boxes[0], want, atol=2e-3)
        np.testing.assert_allclose(points[0], want_points, atol=2e-3)


def test_stream_resampling_finds_the_same_faces_as_facenet_pytorch(rgb) -> None:
    """The streams' fast resampling (OpenCV INTER_AREA, octave pyramid) finds the same faces; boxes,
    probabilities and landmarks differ by resampling noise only."""
    from models.mtcnn import load_nets
    from models.mtcnn_cascade import detect_faces
    from pipeline.face_measures import iou

    nets = load_nets("onnx")
    for rel in FACENET_PHOTOS:
        img = rgb(rel)
        want, want_points = _facenet_reference(img)
        boxes, points = detect_faces(img[None], nets, 15, (0.6, 0.7, 0.8), 0.709, octave_pyramid=True)
        assert len(boxes[0]) == len(want), rel
        for w, wp in zip(want, want_points, strict=True):
            k = int(np.argmax([iou(tuple(w[:4]), tuple(b[:4])) for b in boxes[0]]))
            big = w[2] - w[0] >= 48  # smaller faces are upscaled into the O-net, where the resamplers differ most
            assert iou(tuple(w[:4]), tuple(boxes[0][k, :4])) > (0.85 if big else 0.7), rel
            if big:
                assert abs(boxes[0][k, 4] - w[4]) < 0.02, rel
            assert np.abs(points[0][k] - wp).max() < max(1.5, 0.1 * (w[2] - w[0])), rel


def test_refine_recentres_a_moved_face_and_drops_a_box_without_one(rgb) -> None:
    """The tracking refresh: a face box shifted by a fifth of its size (the face moved) comes back onto the
    face, with its landmarks; a box on background is dropped."""
    from pipeline.face_measures import iou

    det = MTCNNDetector()
    img = rgb("face_recognition_examples/stills/two_people.jpg")
    faces = det.detect([img])[0]
    assert len(faces) == 2
    moved = []
    for f in faces:
        dx, dy = 0.2 * f.width, -0.15 * f.height
        moved.append(type(f)((f.box[0] + dx, f.box[1] + dy, f.box[2] + dx, f.box[3] + dy), f.prob, f.landmarks))
    empty = type(faces[0])((5.0, 5.0, 85.0, 85.0), 0.99, faces[0].landmarks)  # the top-left corner: no face
    got = det.refine([img], [[*moved, empty]])[0]
    assert len(got) == 2
    for f in faces:
        best = max(got, key=lambda g: iou(g.box, f.box))
        assert iou(best.box, f.box) > 0.85
        assert np.abs(best.landmarks - f.landmarks).max() < 0.08 * f.width
    assert iou(moved[0].box, faces[0].box) < 0.6  # the shift was real
