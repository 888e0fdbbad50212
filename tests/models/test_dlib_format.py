from __future__ import annotations

import struct

import numpy as np
import pytest

from models.dlib_format import DlibFormatError, DlibReader, parse_dlib_metric_net
from models.dlib_resnet import DLIB_MODEL_FILE, find_packaged_model, load_dlib_resnet


def enc_int(v: int) -> bytes:
    mag = abs(v)
    body = mag.to_bytes((mag.bit_length() + 7) // 8, "little") if mag else b""
    return bytes([len(body) | (0x80 if v < 0 else 0)]) + body


def test_primitives_decode_as_dlib_writes_them() -> None:
    # float 0.6 as dlib writes it: mantissa then exponent, value m * 2**e
    m, e = 5404319552844595, -53
    data = enc_int(300) + enc_int(-7) + enc_int(0) + b"1" + enc_int(3) + b"abc" + enc_int(m) + enc_int(e)
    r = DlibReader(data)
    assert r.int() == 300
    assert r.int() == -7
    assert r.int() == 0
    assert r.bool() is True
    assert r.string() == "abc"
    assert r.float() == pytest.approx(0.6, abs=1e-15)
    assert r.pos == len(data)


def test_tensor_is_raw_little_endian_float32() -> None:
    vals = [1.5, -2.0, 0.25, 8.0, 0.0, 3.0]
    data = enc_int(2) + enc_int(1) + enc_int(2) + enc_int(3) + enc_int(1) + struct.pack("<6f", *vals)
    t = DlibReader(data).tensor()
    assert t.shape == (1, 2, 3, 1)
    np.testing.assert_array_equal(t.reshape(-1), np.array(vals, dtype=np.float32))


def test_packaged_model_parses_to_its_last_byte() -> None:
    path = find_packaged_model()
    assert path.name == DLIB_MODEL_FILE
    net = parse_dlib_metric_net(path.read_bytes())
    assert net.input_size == 150
    assert net.channel_means == pytest.approx((122.782, 117.001, 104.298), abs=1e-3)
    assert net.distance_threshold == pytest.approx(0.6)
    assert sum(layer.name == "con" for layer in net.layers) == 29
    model = load_dlib_resnet(path)
    assert model.dim == 128
    assert len(model.blocks) == 14


def test_truncated_or_foreign_files_raise_format_errors(tmp_path) -> None:
    data = find_packaged_model().read_bytes()
    with pytest.raises(DlibFormatError, match="unexpected end of file"):
        parse_dlib_metric_net(data[: len(data) // 2])
    with pytest.raises(DlibFormatError, match="not a dlib metric network"):
        parse_dlib_metric_net(b"\x89PNG\r\n\x1a\n" + bytes(100))
    bad = tmp_path / "missing.dat"
    with pytest.raises(FileNotFoundError, match="cannot read dlib model"):
        load_dlib_resnet(bad)


def test_descriptors_separate_people(real_chips, dlib_embedder) -> None:
    # obama, obama2, biden: dlib calls faces the same person below Euclidean distance 0.6 on raw
    # descriptors; on unit vectors the same ordering must hold with a wide gap.
    v = dlib_embedder.embed(real_chips[150])
    assert np.allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-5)
    same = float(v[0] @ v[1])
    diff = max(float(v[0] @ v[2]), float(v[1] @ v[2]))
    assert same > 0.9 > diff
