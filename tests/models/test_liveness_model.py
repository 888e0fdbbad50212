"""MiniFASNet liveness: published weights load strictly, the upstream samples come out as published, ONNX
agrees with torch on real crops, the crop window is upstream's, and bad weight files fail in one line."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from models.minifasnet import LivenessWeightsError, build_arch, load_minifasnet, resolve_liveness_weights
from models.registry import LIVENESS_MODELS, get_liveness_spec
from pipeline.liveness import LivenessScorer, LivenessSettings, crop_window, liveness_crop

pytestmark = pytest.mark.usefixtures("one_torch_thread")
SAMPLES = {"image_T1.jpg": True, "image_F1.jpg": False, "image_F2.jpg": False}  # upstream's published labels


@pytest.fixture(scope="module")
def weights_dir(data_dir: Path) -> Path:
    return data_dir / "liveness" / "models"


@pytest.fixture(scope="module")
def scorers(weights_dir: Path, tmp_path_factory) -> dict[str, LivenessScorer]:
    exports = tmp_path_factory.mktemp("liveness_exports")
    return {rt: LivenessScorer(LivenessSettings(runtime=rt, weights_dir=weights_dir, export_dir=exports))
            for rt in ("torch", "onnx")}


@pytest.fixture(scope="module")
def faces(data_dir: Path, detector) -> list[tuple[np.ndarray, tuple[float, float, float, float]]]:
    """The three upstream samples and four CelebA-Spoof photos, each with its largest MTCNN face."""
    from pipeline.images import load_rgb

    live = data_dir / "liveness"
    paths = [live / "models" / "samples" / n for n in SAMPLES]
    paths += [live / "celeba_spoof_sample" / d / "1.jpg" for d in ("Live", "Spoof")]
    paths += [live / "celeba_spoof_sample" / d / "10.jpg" for d in ("Live", "Spoof")]
    out = []
    for p in paths:
        img = load_rgb(p)
        dets = detector.detect([img])[0]
        assert dets, p
        out.append((img, dets[0].box))
    return out


def test_published_weights_load_strictly(weights_dir: Path) -> None:
    for spec in LIVENESS_MODELS.values():
        state = torch.load(weights_dir / spec.filename, map_location="cpu", weights_only=True)
        assert all(k.startswith("module.") for k in state)  # saved from DataParallel
        net = build_arch(spec.arch)
        result = net.load_state_dict({k.removeprefix("module."): v for k, v in state.items()}, strict=True)
        assert not result.missing_keys and not result.unexpected_keys
        assert 400_000 < sum(p.numel() for p in net.parameters()) < 450_000  # upstream: ~0.43 M parameters
    with pytest.raises(ValueError, match="unknown liveness model 'nope'"):
        get_liveness_spec("nope")


def test_upstream_samples_come_out_as_published(faces, scorers) -> None:
    scorer = scorers["torch"]
    probs = scorer.probabilities(faces[:3])
    scores = scorer.score_many(faces[:3])
    for (name, live), p, s in zip(SAMPLES.items(), probs, scores, strict=True):
        assert (int(np.argmax(p.sum(axis=0))) == 1) == live  # upstream's rule: argmax of the summed softmaxes
        assert scorer.is_live(s) == live, (name, s, p)
    assert scores[0] > 0.99 and scores[1] < 0.3 and scores[2] < 0.05  # far from the threshold, not borderline


def test_onnx_agrees_with_torch_on_real_crops(faces, scorers) -> None:
    t = scorers["torch"].probabilities(faces)
    o = scorers["onnx"].probabilities(faces)
    assert t.shape == (7, 2, 3) and np.allclose(t.sum(axis=2), 1.0, atol=1e-5)
    assert np.abs(o - t).max() <= 1e-4
    st, so = scorers["torch"].score_many(faces), scorers["onnx"].score_many(faces)
    assert np.abs(so - st).max() <= 1e-4
    assert st.max() - st.min() > 0.5  # real spread, not a constant output
    # A padded ONNX batch (7 faces run as 8) gives each face what it gets alone.
    alone = np.array([scorers["onnx"].score(img, box) for img, box in faces])
    assert np.abs(alone - so).max() <= 1e-5


def test_crop_window_shifts_inside_the_frame_as_upstream() -> None:
    # Box 31x41 at (10, 10) in a 200x100 frame: scale 2.7 is capped at 99/41 so the window fits the height,
    # then the window (74.85 x 99) is shifted right and down to start at the frame's corner.
    assert crop_window(100, 200, (10.0, 10.0, 40.0, 50.0), 2.7) == (0, 0, 74, 99)
    # A face in the middle of a large frame: centred window of 2.7x the box, no shift.
    assert crop_window(1000, 1000, (450.0, 450.0, 549.0, 549.0), 2.7) == (365, 365, 635, 635)
    # At the right edge the 400 px window keeps its width and moves left (750..1150 -> 599..999).
    assert crop_window(1000, 1000, (900.0, 450.0, 999.0, 549.0), 4.0) == (599, 300, 999, 700)
    img = np.zeros((100, 200, 3), dtype=np.uint8)
    img[:, 150:] = 255
    crop = liveness_crop(img, (10.0, 10.0, 40.0, 50.0), 2.7)
    assert crop.shape == (80, 80, 3) and crop.dtype == np.uint8 and crop.max() == 0  # the white part lies outside
    with pytest.raises(ValueError, match="x2 > x1"):
        crop_window(100, 100, (50.0, 50.0, 40.0, 60.0), 2.7)
    with pytest.raises(ValueError, match="RGB uint8"):
        liveness_crop(img.astype(np.float32), (10.0, 10.0, 40.0, 50.0), 2.7)


def test_settings_are_checked_eagerly() -> None:
    with pytest.raises(ValueError, match="runtime must be 'onnx' or 'torch'"):
        LivenessSettings(runtime="tensorrt")
    with pytest.raises(ValueError, match=r"threshold must be in \[0, 1\]"):
        LivenessSettings(threshold=1.5)
    with pytest.raises(ValueError, match="unknown liveness model"):
        LivenessSettings(models=("minifasnet-v9",))


def _one_line(exc: pytest.ExceptionInfo) -> str:
    msg = str(exc.value)
    assert "\n" not in msg
    return msg


def test_corrupt_or_missing_weights_fail_in_one_line_with_the_checksum(weights_dir: Path, tmp_path: Path) -> None:
    spec = get_liveness_spec("minifasnet-v2")
    bad = tmp_path / "weights"
    bad.mkdir()
    data = (weights_dir / spec.filename).read_bytes()
    (bad / spec.filename).write_bytes(data[: len(data) // 2])  # a truncated copy
    with pytest.raises(LivenessWeightsError) as exc:
        load_minifasnet("minifasnet-v2", bad)
    msg = _one_line(exc)
    assert str(bad / spec.filename) in msg and spec.sha256 in msg and "corrupt" in msg
    with pytest.raises(ValueError) as exc:  # the scorer reports the same line (a ValueError: exit 2 in the CLI)
        LivenessScorer(LivenessSettings(weights_dir=bad, runtime="torch"))
    assert spec.sha256 in _one_line(exc)
    # The other model's file is absent from that folder.
    other = get_liveness_spec("minifasnet-v1se")
    with pytest.raises(LivenessWeightsError) as exc:
        load_minifasnet("minifasnet-v1se", bad)
    msg = _one_line(exc)
    assert str(bad / other.filename) in msg and "not found" in msg and other.sha256 in msg
    # A damaged cached copy is refused too (never silently used); no cache and no download names the cache.
    cache = tmp_path / "cache"
    cache.mkdir()
    shutil.copy(bad / spec.filename, cache / spec.filename)
    with pytest.raises(LivenessWeightsError) as exc:
        resolve_liveness_weights(spec, None, cache, download=False)
    assert spec.sha256 in _one_line(exc)
    with pytest.raises(LivenessWeightsError) as exc:
        resolve_liveness_weights(other, None, cache, download=False)
    msg = _one_line(exc)
    assert str(cache) in msg and other.sha256 in msg and other.url in msg
    # The intact files pass the same check.
    assert resolve_liveness_weights(spec, weights_dir) == weights_dir / spec.filename
