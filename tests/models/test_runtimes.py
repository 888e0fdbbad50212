"""ONNX Runtime and TorchScript must reproduce eager torch on real aligned chips, for every embedder."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from models.embedder import load_embedder
from models.facenet import WeightsNotFoundError, resolve_facenet_weights
from models.runtime import RuntimeUnavailableError, make_runner


@pytest.fixture(scope="module")
def facenet_state(tmp_path_factory) -> str:
    """A state dict saved by the test itself (the real VGGFace2/CASIA files need internet)."""
    from facenet_pytorch import InceptionResnetV1

    torch.manual_seed(0)
    net = InceptionResnetV1(pretrained=None, classify=False).eval()
    path = tmp_path_factory.mktemp("facenet") / "facenet_test_state.pt"
    torch.save(net.state_dict(), path)
    return str(path)


@pytest.mark.parametrize("model", ["dlib-resnet-v1", "facenet-vggface2", "facenet-casia"])
def test_onnx_and_torchscript_match_eager(model, real_chips, facenet_state, tmp_path) -> None:
    weights = None if model.startswith("dlib") else facenet_state
    outs = {}
    for runtime in ("torch", "torchscript", "onnx"):
        emb = load_embedder(model, runtime=runtime, weights_path=weights, export_dir=tmp_path)
        chips = real_chips[emb.input_size]
        raw = emb.runner(np.ascontiguousarray(chips.transpose(0, 3, 1, 2), dtype=np.float32))
        assert raw.shape == (len(chips), emb.dim)
        outs[runtime] = raw
    scale = np.abs(outs["torch"]).max()
    assert scale > 1e-3  # the outputs are not all zeros
    assert np.abs(outs["onnx"] - outs["torch"]).max() <= 1e-4
    assert np.abs(outs["torchscript"] - outs["torch"]).max() <= 1e-4


def test_flip_averaging_is_unit_norm_and_differs(real_chips, dlib_embedder) -> None:
    from models.embedder import Embedder

    flipped = Embedder(dlib_embedder.spec, dlib_embedder.runner, flip=True)
    a, b = dlib_embedder.embed(real_chips[150]), flipped.embed(real_chips[150])
    assert np.allclose(np.linalg.norm(b, axis=1), 1.0, atol=1e-5)
    assert 0.9 < float(np.min(np.sum(a * b, axis=1))) < 0.99999
    assert flipped.model_id.endswith(":flip")


def test_missing_facenet_weights_error_names_file_place_and_url(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    with pytest.raises(WeightsNotFoundError) as err:
        resolve_facenet_weights("facenet-vggface2", None, download=False)
    msg = str(err.value)
    assert "20180402-114759-vggface2.pt" in msg
    assert str(tmp_path / "checkpoints") in msg
    assert "https://github.com/timesler/facenet-pytorch/releases/download/v2.2.9/" in msg
    with pytest.raises(WeightsNotFoundError, match="does not exist"):
        resolve_facenet_weights("facenet-casia", tmp_path / "nope.pt")


def test_facenet_cache_lookup_and_bad_state_dict(tmp_path, monkeypatch, facenet_state) -> None:
    import shutil

    from models.facenet import load_facenet

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    (tmp_path / "checkpoints").mkdir()
    shutil.copy(facenet_state, tmp_path / "checkpoints" / "20180408-102900-casia-webface.pt")
    assert resolve_facenet_weights("facenet-casia", None, download=False).parent == tmp_path / "checkpoints"
    bogus = tmp_path / "bogus.pt"
    torch.save({"fc.weight": torch.zeros(3)}, bogus)
    with pytest.raises(WeightsNotFoundError, match="not an InceptionResnetV1 state dict"):
        load_facenet("facenet-vggface2", bogus)


def test_cuda_request_without_cuda_stops_unless_fallback_allowed(dlib_embedder, tmp_path) -> None:
    if torch.cuda.is_available():
        pytest.skip("CUDA is present on this machine")
    module = dlib_embedder.runner.module
    for runtime in ("torch", "onnx"):
        with pytest.raises(RuntimeUnavailableError, match="CUDA"):
            make_runner(module, "dlib-resnet-v1", 150, runtime, "cuda", False, tmp_path)
        runner = make_runner(module, "dlib-resnet-v1", 150, runtime, "cuda", True, tmp_path)
        assert "cpu" in runner.provider.lower()


@pytest.mark.parametrize("runtime", ["torch", "onnx"])
def test_fp16_embeddings_agree_with_fp32_on_real_chips(real_chips, tmp_path, runtime) -> None:
    """Half precision must keep a face's vector where float32 puts it (LFW DevTest: same accuracy, docs)."""
    full = load_embedder("dlib-resnet-v1", runtime=runtime, export_dir=tmp_path)
    half = load_embedder("dlib-resnet-v1", runtime=runtime, export_dir=tmp_path, precision="fp16")
    assert (full.precision, half.precision) == ("fp32", "fp16")
    assert half.model_id == full.model_id  # an fp16 daemon matches a float32 gallery
    a, b = full.embed(real_chips[150]), half.embed(real_chips[150])
    cos = np.sum(a * b, axis=1)
    assert float(cos.min()) >= 0.9995, cos
    assert float(np.abs(a - b).max()) > 0  # it really ran in half precision, not the float32 model again
    if runtime == "onnx":
        assert sorted(p.name for p in tmp_path.glob("*.onnx")) == sorted(
            p.name for p in tmp_path.glob("dlib-resnet-v1-*.onnx"))
        assert len(list(tmp_path.glob("*-fp16.onnx"))) == 1
    with pytest.raises(ValueError, match="precision must be one of fp32, fp16, got 'int8'"):
        load_embedder("dlib-resnet-v1", runtime=runtime, export_dir=tmp_path, precision="int8")


def test_detector_cuda_request_without_cuda_stops_unless_fallback_allowed(tmp_path) -> None:
    from models.detector import MTCNNDetector

    if torch.cuda.is_available():
        pytest.skip("CUDA is present on this machine")
    for runtime in ("onnx", "torch"):
        with pytest.raises(RuntimeUnavailableError, match="CUDA"):
            MTCNNDetector(device="cuda", runtime=runtime, export_dir=tmp_path)
        det = MTCNNDetector(device="cuda", runtime=runtime, export_dir=tmp_path, allow_cpu_fallback=True)
        assert "cpu" in det.provider.lower()
