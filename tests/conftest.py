"""Shared fixtures: the shared data folder, and session-wide detector and embedders (real weights)."""

from __future__ import annotations

import io
import os
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parent.parent


def data_root() -> Path:
    return Path(os.environ.get("FACESTREAM_DATA", REPO.parent / "shared" / "data")).resolve()


# The door judges liveness by default; its published weights come from the shared data here (no download).
LIVENESS_WEIGHTS = {"FACESTREAM_LIVENESS__WEIGHTS_DIR": str(data_root() / "liveness" / "models")}
os.environ.update({k: v for k, v in LIVENESS_WEIGHTS.items() if k not in os.environ})


@pytest.fixture(scope="session")
def data_dir() -> Path:
    root = data_root()
    if not (root / "MANIFEST.md").is_file():
        pytest.skip(f"shared face data not found at {root} (set FACESTREAM_DATA)")
    return root


@pytest.fixture(scope="module")
def one_torch_thread():
    """On a CPU shared with other jobs, two spinning intra-op threads make MTCNN ~30x slower than one."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def detector():
    from models.detector import DetectorSettings, MTCNNDetector

    return MTCNNDetector(DetectorSettings(max_side=1600))


@pytest.fixture(scope="session")
def dlib_embedder():
    from models.embedder import load_embedder

    return load_embedder("dlib-resnet-v1", runtime="torch")


@pytest.fixture(scope="session")
def rgb(data_dir: Path):
    from pipeline.images import load_rgb

    def load(rel: str) -> np.ndarray:
        return load_rgb(data_dir / rel)

    return load


@pytest.fixture(scope="session")
def real_chips(data_dir: Path, detector, rgb) -> dict[int, np.ndarray]:
    """Aligned chips of real faces at 150 and 160 px, for runtime parity tests."""
    from models.align import align_face
    from models.registry import EMBEDDERS

    names = ["obama.jpg", "obama2.jpg", "biden.jpg"]
    out: dict[int, list[np.ndarray]] = {150: [], 160: []}
    for n in names:
        img = rgb(f"face_recognition_examples/test_images/{n}")
        det = detector.detect([img])[0][0]
        for spec in (EMBEDDERS["dlib-resnet-v1"], EMBEDDERS["facenet-vggface2"]):
            out[spec.input_size].append(align_face(img, det.landmarks, spec.template, spec.input_size))
    return {k: np.stack(v) for k, v in out.items()}


@pytest.fixture(scope="session")
def stills_gallery(tmp_path_factory, data_dir: Path, detector, dlib_embedder) -> Path:
    """Miranda, Lacamoire and Obama stills (the Hamilton example's known faces) plus Biden."""
    from pipeline.gallery import Gallery
    from pipeline.gallery.enrol import QualityGates, build
    from pipeline.gallery.photo_list import Source
    from pipeline.gallery.stills import StillEmbedder

    stills = data_dir / "face_recognition_examples" / "stills"
    path = tmp_path_factory.mktemp("gal") / "stills.db"
    gallery = Gallery.create(path, dlib_embedder.model_id, dlib_embedder.dim)
    engine = StillEmbedder(detector, dlib_embedder, gallery.cache(), policy="dominant")
    sources = [Source(stills / "lin-manuel-miranda.png", "lin_manuel_miranda"),
               Source(stills / "alex-lacamoire.png", "alex_lacamoire"),
               Source(stills / "obama.jpg", "barack_obama"), Source(stills / "biden.jpg", "joe_biden")]
    result = build(engine, gallery, sources, QualityGates(), None, progress=False)
    assert result["identities"] == 4
    gallery.close()
    return path


@pytest.fixture(scope="session")
def hamilton_run(tmp_path_factory, data_dir: Path, stills_gallery: Path) -> tuple[list[dict], Path]:
    """The Hamilton clip run to its end in process against the stills gallery (JSONL and timeline CSV):
    the reference several tests hold other runs to. Returns (events, timeline CSV path)."""
    import json

    from daemon.config import load_settings
    from daemon.profiles import build_daemon

    out = tmp_path_factory.mktemp("hamilton")
    video = data_dir / "face_recognition_examples" / "video" / "short_hamilton_clip.mp4"
    settings = load_settings(None, sources=[str(video)], embedder={"runtime": "torch"},
                             sinks={"jsonl": str(out / "a.jsonl"), "zmq": None, "timeline_csv": str(out / "a.csv")})
    assert build_daemon(settings, stills_gallery)[0].run(install_signals=False) == 0
    return [json.loads(line) for line in (out / "a.jsonl").read_text().splitlines()], out / "a.csv"


@pytest.fixture(scope="module")
def cache_home(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("xdg_cache")


@pytest.fixture(scope="module")
def env(cache_home: Path) -> dict[str, str]:
    """Environment for a ``facestream`` process: cache out of $HOME, torch runtime, one CPU thread."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("FACESTREAM_")}
    return {**base, "XDG_CACHE_HOME": str(cache_home), "FACESTREAM_EMBEDDER__RUNTIME": "torch",
            "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", **LIVENESS_WEIGHTS}


@pytest.fixture
def cli(monkeypatch, env: dict[str, str]):
    """Run ``facestream ARGS...`` in-process; returns (exit status, stdout, stderr)."""
    import structlog

    from daemon.cli import main

    for key in [k for k in os.environ if k not in env]:
        monkeypatch.delenv(key)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    saved = structlog.get_config()

    def run(*argv: object) -> tuple[int, str, str]:
        out, err = io.StringIO(), io.StringIO()
        with redirect_stdout(out), redirect_stderr(err):
            rc = main([str(a) for a in argv])
        return rc, out.getvalue(), err.getvalue()

    yield run
    structlog.configure(**saved)  # main() points structlog at the redirected stderr
