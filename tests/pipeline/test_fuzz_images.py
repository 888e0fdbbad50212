"""Mutated photos through the gallery builder's per-file path and the detector: every file ends as an
accepted face or a skipped file with a one-line reason, never an exception.

Hypothesis derives a few hundred files from real photos (byte flips, truncation, inserted and overwritten
bytes, swapped format signatures, spliced files, rewritten header dimensions, tiny and odd-sized
re-encodings); it is derandomized so CI tries the same files every run. Run with ``-s`` to see the tally.
"""

from __future__ import annotations

import io
import struct
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from models.detection import Detection
from pipeline.gallery import Gallery
from pipeline.gallery.enrol import QualityGates, build
from pipeline.gallery.photo_list import Source
from pipeline.gallery.stills import StillEmbedder
from pipeline.images import ImageError, load_rgb

pytestmark = pytest.mark.usefixtures("one_torch_thread")

N_EXAMPLES = 240
MIN_FILES = 200
# Format signatures a file may be given in place of its own (JPEG, PNG, GIF, BMP, TIFF both byte orders,
# WebP, ICO): each sends the bytes to another decoder.
MAGICS = [b"\xff\xd8\xff\xe0", b"\x89PNG\r\n\x1a\n", b"GIF89a", b"BM", b"II*\x00", b"MM\x00*",
          b"RIFF\x00\x00\x00\x00WEBP", b"\x00\x00\x01\x00"]
# (format, mode) pairs PIL can write: the tiny and odd-sized re-encodings.
ENCODINGS = [("JPEG", "RGB"), ("JPEG", "L"), ("JPEG", "CMYK"), ("PNG", "RGB"), ("PNG", "RGBA"), ("PNG", "LA"),
             ("PNG", "P"), ("PNG", "I;16"), ("PNG", "1"), ("BMP", "RGB"), ("GIF", "P"), ("TIFF", "RGB"),
             ("WEBP", "RGB")]


def _encode(img: Image.Image, fmt: str, **kwargs: object) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kwargs)
    return buf.getvalue()


@pytest.fixture(scope="module")
def bases(data_dir: Path) -> dict[str, bytes]:
    """Small real photos as stored, plus one LFW face re-encoded in the other formats the loader reads."""
    files = {"aj_cook": "lfw/deepfunneled/AJ_Cook/AJ_Cook_0001.jpg",
             "aaron_guiel": "lfw/deepfunneled/Aaron_Guiel/Aaron_Guiel_0001.jpg",
             "obama": "face_recognition_examples/stills/obama_small.jpg",
             "kate_siegel": "facenet_pytorch_samples/test_images_aligned/kate_siegel/1.png"}
    out = {name: (data_dir / rel).read_bytes() for name, rel in files.items()}
    face = Image.open(io.BytesIO(out["aj_cook"])).convert("RGB")
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: the EXIF block is parsed and the image rotated
    exif[0x010F] = "facestream"
    out["aj_cook_progressive_exif"] = _encode(face.transpose(Image.Transpose.ROTATE_90), "JPEG", progressive=True,
                                              exif=exif.tobytes())
    out["aj_cook_webp"] = _encode(face, "WEBP")
    out["aj_cook_tiff_lzw"] = _encode(face, "TIFF", compression="tiff_lzw")
    out["aj_cook_bmp"] = _encode(face, "BMP")
    out["aj_cook_gif"] = _encode(face, "GIF")
    out["aj_cook_rgba"] = _encode(face.convert("RGBA"), "PNG")
    out["aj_cook_16bit"] = _encode(face.convert("I;16"), "PNG")
    return out


def set_dims(data: bytes, width: int, height: int) -> bytes:
    """Rewrite the dimensions a PNG (IHDR, CRC fixed so the chunk still verifies) or JPEG (first SOF) header
    declares; other files are returned as they are."""
    d = bytearray(data)
    if d.startswith(b"\x89PNG\r\n\x1a\n") and d[12:16] == b"IHDR":
        d[16:24] = struct.pack(">II", width, height)
        d[29:33] = struct.pack(">I", zlib.crc32(bytes(d[12:29])))
        return bytes(d)
    for sof in (b"\xff\xc0", b"\xff\xc2"):
        i = d.find(sof)
        if i >= 0 and i + 9 <= len(d):
            d[i + 5 : i + 9] = struct.pack(">HH", height & 0xFFFF, width & 0xFFFF)
            return bytes(d)
    return bytes(d)


def tiny_image(face: bytes, width: int, height: int, fmt: str, mode: str) -> bytes:
    img = Image.open(io.BytesIO(face)).convert("RGB").resize((width, height))
    return _encode(img.convert(mode), fmt)


def mutations(bases: dict[str, bytes]) -> st.SearchStrategy[tuple[str, bytes, list[str]]]:
    """(base name, file bytes, what was done): one to three mutations of one real photo, or a tiny one."""
    names = sorted(bases)
    frac = st.floats(0.0, 1.0, allow_nan=False)

    def at(data: bytes, f: float, limit: int | None = None) -> int:
        n = len(data) if limit is None else min(len(data), limit)
        return min(int(f * n), max(n - 1, 0))

    @st.composite
    def one(draw: st.DrawFn, data: bytes) -> tuple[bytes, str]:
        kind = draw(st.sampled_from(["flip", "truncate", "insert", "overwrite", "magic", "splice", "dims"]))
        if not data:
            return draw(st.binary(max_size=64)), "random bytes"
        d = bytearray(data)
        if kind == "flip":
            spots = draw(st.lists(st.tuples(frac, st.integers(1, 255)), min_size=1, max_size=16))
            header = draw(st.booleans())  # most decoders fail early: aim half the flips at the first 512 bytes
            for f, x in spots:
                d[at(data, f, 512 if header else None)] ^= x
            return bytes(d), f"flipped {len(spots)} byte(s)" + (" in the header" if header else "")
        if kind == "truncate":
            cut = at(data, draw(frac))
            return bytes(d[:cut]), f"truncated to {cut} bytes"
        if kind in ("insert", "overwrite"):
            pos = at(data, draw(frac), 2048 if draw(st.booleans()) else None)
            blob = draw(st.binary(min_size=1, max_size=64))
            d[pos : pos + (len(blob) if kind == "overwrite" else 0)] = blob
            return bytes(d), f"{kind} {len(blob)} random bytes at {pos}"
        if kind == "magic":
            magic = draw(st.sampled_from(MAGICS))
            d[: len(magic)] = magic
            return bytes(d), f"signature swapped for {magic!r}"
        if kind == "splice":
            other = bases[draw(st.sampled_from(names))]
            cut = at(data, draw(frac))
            return bytes(d[:cut]) + other[cut:], f"spliced with another file at {cut}"
        width, height = draw(st.sampled_from([0, 1, 3, 250, 7000, 65535])), draw(st.integers(0, 65535))
        return set_dims(data, width, height), f"header says {width}x{height}"

    @st.composite
    def case(draw: st.DrawFn) -> tuple[str, bytes, list[str]]:
        name = draw(st.sampled_from(names))
        if draw(st.integers(0, 9)) == 0:  # tiny and odd sizes, every format and mode
            fmt, mode = draw(st.sampled_from(ENCODINGS))
            side = st.integers(1, 40) | st.integers(1, 3000)
            w, h = draw(side), draw(side)
            data, done = tiny_image(bases[name], w, h, fmt, mode), [f"{w}x{h} {fmt} {mode}"]
        else:
            data, done = bases[name], []
        for _ in range(draw(st.integers(0 if done else 1, 3))):
            data, what = draw(one(data))
            done.append(what)
        return name, data, done

    return case()


def one_line(reason: object) -> bool:
    return isinstance(reason, str) and bool(reason.strip()) and "\n" not in reason and "Traceback" not in reason


def test_mutated_images_are_accepted_or_skipped_with_a_reason(tmp_path: Path, bases: dict[str, bytes], detector,
                                                              dlib_embedder) -> None:
    engine = StillEmbedder(detector, dlib_embedder, policy="dominant")  # the builder's engine, as the CLI makes it
    gates = QualityGates()
    files: list[Source] = []
    loaded = 0

    @settings(max_examples=N_EXAMPLES, deadline=None, derandomize=True, database=None, print_blob=True,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(mutations(bases))
    def check(case: tuple[str, bytes, list[str]]) -> None:
        nonlocal loaded
        name, data, done = case
        path = tmp_path / f"{len(files):04d}.img"
        path.write_bytes(data)
        files.append(Source(path, name))
        # The detector on what the loader gives (the daemon's and `facestream detect`'s path).
        try:
            image = load_rgb(path)
        except ImageError as exc:
            assert one_line(str(exc)) and exc.reason, (done, str(exc))
        else:
            loaded += 1
            assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3, (done, image.shape)
            found = detector.detect([image])[0]
            assert all(isinstance(d, Detection) and np.isfinite(d.box).all() for d in found), done
        # The builder's per-file path: load, detect, choose the face, align, embed, then the quality gates.
        (r,) = engine.embed_files([path])
        if r.ok:
            assert r.vec is not None and r.vec.shape == (dlib_embedder.dim,) and np.isfinite(r.vec).all(), done
            assert r.reason is None and abs(float(np.linalg.norm(r.vec)) - 1.0) < 1e-3, done
            reason = gates.check(r.info)
            assert reason is None or one_line(reason), (done, reason)
        else:
            assert one_line(r.reason), (done, r.reason)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # PIL warns about corrupt EXIF and truncated reads: expected here
        check()
    # The same files through the builder itself: each is enrolled or listed as skipped with its reason.
    gallery = Gallery.create(tmp_path / "fuzz.db", dlib_embedder.model_id, dlib_embedder.dim)
    engine.computed = engine.cached = 0
    result = build(engine, gallery, files, gates, tmp_path / "report", progress=False)
    gallery.close()
    n, accepted, skipped = len(files), result["enrolled"], result["skipped"]
    print(f"fuzz: {n} mutated files, {accepted} accepted, {skipped} skipped ({loaded} decoded to an image)")
    assert n >= MIN_FILES
    assert result["files"] == n and accepted + skipped == n
    assert (result["embedded"], result["from_cache"]) == (0, n)  # the build reused the results checked above
    assert all(one_line(row["reason"]) for row in result["skipped_files"])
    assert 0 < accepted < n and 0 < loaded < n  # the mutations both kept and broke real faces
