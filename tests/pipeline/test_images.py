"""Every bad-input kind gets a per-file reason, never a traceback; odd-but-valid images load upright RGB."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pipeline.gallery.stills import NO_FACE, StillEmbedder
from pipeline.images import ImageError, load_rgb


@pytest.fixture(scope="module")
def face_jpeg(data_dir: Path) -> bytes:
    return (data_dir / "face_recognition_examples" / "stills" / "obama-480p.jpg").read_bytes()


@pytest.fixture(scope="module")
def bad_dir(tmp_path_factory, face_jpeg: bytes, data_dir: Path) -> Path:
    d = tmp_path_factory.mktemp("bad")
    (d / "notes.jpg").write_text("this is not an image\n")
    (d / "empty.png").write_bytes(b"")
    (d / "truncated.jpg").write_bytes(face_jpeg[: len(face_jpeg) // 3])
    Image.new("L", (10000, 10000), 128).save(d / "huge.png", compress_level=1)
    (d / "cat.jpg").write_bytes((data_dir / "images_misc" / "no_faces" / "cat.jpg").read_bytes())
    (d / "folder.jpg").mkdir()
    return d


def face_image(face_jpeg: bytes) -> Image.Image:
    return Image.open(io.BytesIO(face_jpeg)).convert("RGB")


@pytest.mark.parametrize(
    ("name", "reason"),
    [("notes.jpg", "not an image"), ("empty.png", "empty file"), ("truncated.jpg", "truncated or corrupt"),
     ("huge.png", "too large"), ("folder.jpg", "unreadable"), ("missing.jpg", "unreadable")],
)
def test_bad_files_raise_image_error_with_reason(bad_dir: Path, name: str, reason: str) -> None:
    with pytest.raises(ImageError) as err:
        load_rgb(bad_dir / name)
    assert err.value.reason == reason
    assert "\n" not in str(err.value)


def test_mode_variants_load_as_upright_rgb(tmp_path: Path, face_jpeg: bytes, detector) -> None:
    base = face_image(face_jpeg)
    w, h = base.size
    variants = {
        "grey.png": base.convert("L"),
        "alpha.png": base.convert("RGBA"),
        "cmyk.jpg": base.convert("CMYK"),
        "palette.png": base.convert("P"),
        "image.webp": base,
        "image.bmp": base,
        "image.tiff": base,
    }
    for name, img in variants.items():
        img.save(tmp_path / name)
    # EXIF orientation 6 = "rotate 90 CW to display": store the pixels rotated the other way.
    exif = Image.Exif()
    exif[0x0112] = 6
    base.transpose(Image.Transpose.ROTATE_90).save(tmp_path / "exif_rotated.jpg", exif=exif.tobytes())
    want = np.array(detector.detect([np.asarray(base)])[0][0].box)
    for name in [*variants, "exif_rotated.jpg"]:
        arr = load_rgb(tmp_path / name)
        assert arr.dtype == np.uint8
        assert arr.shape == (h, w, 3), name
        found = detector.detect([arr])[0]
        assert found, f"{name}: face not found after loading"
        # The main face is where it is in the original: the image is upright and not garbled.
        assert np.abs(np.array(found[0].box) - want).max() < 0.1 * (want[2] - want[0]), name


def test_folder_of_bad_inputs_reports_each_reason(bad_dir: Path, tmp_path: Path, face_jpeg: bytes,
                                                  detector, dlib_embedder) -> None:
    (tmp_path / "good.jpg").write_bytes(face_jpeg)
    files = [*sorted(p for p in bad_dir.iterdir()), bad_dir / "missing.jpg", tmp_path / "good.jpg"]
    engine = StillEmbedder(detector, dlib_embedder)
    results = {r.path.name: r for r in engine.embed_files(files)}
    reasons = {name: (r.reason or "").split(":")[0] for name, r in results.items()}
    assert reasons == {
        "notes.jpg": "not an image", "empty.png": "empty file", "truncated.jpg": "truncated or corrupt",
        "huge.png": "too large", "cat.jpg": NO_FACE, "folder.jpg": "unreadable", "missing.jpg": "unreadable",
        "good.jpg": "",
    }
    assert results["good.jpg"].ok and results["good.jpg"].vec.shape == (128,)
    assert sum(not r.ok for r in results.values()) == 7
