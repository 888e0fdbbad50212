"""Reader for dlib's binary serialization (serialize.h) as used by its DNN model files.

Only the pieces a face-descriptor network needs are implemented; anything else is an
eager ``ValueError`` naming the offset, so a corrupt or foreign file never half-loads.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


class DlibFormatError(ValueError):
    """The file is not a dlib model of the kind we can read."""


@dataclass
class Layer:
    """One ordinary (non tag/skip) layer, with its name and decoded contents."""

    name: str
    params: np.ndarray | None = None
    ints: list[int] = field(default_factory=list)
    shapes: list[tuple[int, int, int, int]] = field(default_factory=list)


class DlibReader:
    """Sequential reader over a dlib serialization byte string."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def _take(self, n: int) -> bytes:
        if self.pos + n > len(self.data):
            raise DlibFormatError(f"unexpected end of file at byte {self.pos} (wanted {n} more)")
        chunk = self.data[self.pos : self.pos + n]
        self.pos += n
        return chunk

    def int(self) -> int:
        control = self._take(1)[0]
        size = control & 0x0F
        if size > 8:
            raise DlibFormatError(f"bad integer control byte {control:#x} at byte {self.pos - 1}")
        value = int.from_bytes(self._take(size), "little") if size else 0
        return -value if control & 0x80 else value

    def bool(self) -> bool:
        ch = self._take(1)
        if ch not in (b"0", b"1"):
            raise DlibFormatError(f"bad boolean {ch!r} at byte {self.pos - 1}")
        return ch == b"1"

    def float(self) -> float:
        mantissa = self.int()
        exponent = self.int()
        if exponent == 32000:
            return float("inf")
        if exponent == 32001:
            return float("-inf")
        if exponent == 32002:
            return float("nan")
        return float(mantissa) * 2.0**exponent

    def string(self) -> str:
        n = self.int()
        if n < 0 or n > 1_000_000:
            raise DlibFormatError(f"bad string length {n} at byte {self.pos}")
        return self._take(n).decode("latin-1")

    def expect_int(self, want: int, what: str) -> None:
        got = self.int()
        if got != want:
            raise DlibFormatError(f"expected {what} {want}, got {got} at byte {self.pos}")

    def tensor(self) -> np.ndarray:
        self.expect_int(2, "tensor version")
        n, k, nr, nc = (self.int() for _ in range(4))
        count = n * k * nr * nc
        raw = self._take(4 * count)
        return np.frombuffer(raw, dtype="<f4").reshape(n, k, nr, nc).astype(np.float32)

    def alias(self) -> tuple[int, int, int, int]:
        self.expect_int(1, "alias_tensor version")
        n, k, nr, nc = (self.int() for _ in range(4))
        return (n, k, nr, nc)


def _read_layer(r: DlibReader) -> Layer:
    """Decode one layer's ``details`` block (starts with its type name)."""
    name = r.string()
    if name.startswith("con_"):
        params = r.tensor()
        ints = [r.int() for _ in range(7)]  # num_filters, nr, nc, stride_y, stride_x, pad_y, pad_x
        shapes = [r.alias(), r.alias()]
        for _ in range(4):
            r.float()
        if name in ("con_5", "con_6"):
            r.bool()  # use_bias
        if name == "con_6":
            r.bool()
        return Layer("con", params, ints, shapes)
    if name in ("affine_", "affine_2"):
        params = r.tensor()
        shapes = [r.alias(), r.alias()]
        mode = r.int()
        if name == "affine_2":
            r.bool()
        return Layer("affine", params, [mode], shapes)
    if name in ("relu_", "relu_2"):
        if name == "relu_2":
            r.bool()
        return Layer("relu")
    if name in ("max_pool_2", "avg_pool_2"):
        return Layer(name[:-2], None, [r.int() for _ in range(6)])
    if name in ("add_prev", "add_prev_"):
        return Layer("add_prev")
    if name in ("fc_2", "fc_3"):
        outputs, inputs = r.int(), r.int()
        params = r.tensor()
        shapes = [r.alias(), r.alias()]
        bias_mode = r.int()
        for _ in range(4):
            r.float()
        if name == "fc_3":
            r.bool()
        return Layer("fc", params, [outputs, inputs, bias_mode], shapes)
    raise DlibFormatError(f"unsupported dlib layer type {name!r} at byte {r.pos}")


@dataclass
class DlibNet:
    """A parsed metric-loss network: input normalisation plus layers from the input outwards."""

    input_size: int
    channel_means: tuple[float, float, float]
    distance_threshold: float
    layers: list[Layer]


def _skip_wrapper_state(r: DlibReader) -> None:
    for _ in range(3):
        r.bool()
    for _ in range(3):
        r.tensor()


def parse_dlib_metric_net(data: bytes) -> DlibNet:
    """Parse a ``loss_metric`` network file such as dlib_face_recognition_resnet_model_v1.dat."""
    r = DlibReader(data)
    try:
        r.expect_int(1, "loss layer version")
        loss = r.string()
    except DlibFormatError as exc:
        raise DlibFormatError(f"not a dlib metric network ({exc})") from None
    if not loss.startswith("loss_metric"):
        raise DlibFormatError(f"not a dlib metric network (loss layer {loss!r})")
    r.float()  # margin
    threshold = r.float()
    versions: list[int] = []
    while True:
        v = r.int()
        if v not in (1, 2, 3):
            raise DlibFormatError(f"bad layer wrapper version {v} at byte {r.pos}")
        versions.append(v)
        if v == 3:
            break
        if len(versions) > 10_000:
            raise DlibFormatError("no bottom layer found")
    name = r.string()
    if name != "input_rgb_image_sized":
        raise DlibFormatError(f"unsupported input layer {name!r}")
    means = (r.float(), r.float(), r.float())
    nr, nc = r.int(), r.int()
    if nr != nc:
        raise DlibFormatError(f"non-square input {nr}x{nc}")
    layers = [_read_layer(r)]
    _skip_wrapper_state(r)
    r.int()  # sample expansion factor of the version-3 bottom wrapper
    # Remaining wrappers, from the input side outwards; tag/skip (version 1) store nothing.
    for v in reversed(versions[:-1]):
        if v == 1:
            continue
        layers.append(_read_layer(r))
        _skip_wrapper_state(r)
    if r.pos != len(data):
        raise DlibFormatError(f"{len(data) - r.pos} trailing bytes after the network")
    return DlibNet(nr, means, threshold, layers)

