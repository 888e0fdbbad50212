"""dlib's face-recognition ResNet (``anet_type`` in dnn_face_recognition_ex.cpp) as a torch module.

The weights come from the parsed .dat file; the topology is rebuilt from the sequence of layer
types, because dlib does not store tag numbers. Input is float RGB pixels 0..255, NCHW.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from models.dlib_format import DlibFormatError, DlibNet, Layer, parse_dlib_metric_net

DLIB_MODEL_FILE = "dlib_face_recognition_resnet_model_v1.dat"


def find_packaged_model(filename: str = DLIB_MODEL_FILE) -> Path:
    """Locate a file of the face-recognition-models package without importing it.

    Its ``__init__`` imports ``pkg_resources``, which current setuptools no longer ships.
    """
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            f"{filename} not found: install the 'face-recognition-models' package "
            "(pip install face-recognition-models)"
        )
    for base in spec.submodule_search_locations:
        path = Path(base) / "models" / filename
        if path.is_file():
            return path
    raise FileNotFoundError(f"{filename} not found in the face-recognition-models package")


def _conv(layer: Layer) -> nn.Conv2d:
    num_filters, nr, nc, sy, sx, py, px = layer.ints
    flat = layer.params.reshape(-1)
    n_w = flat.size - num_filters
    in_ch = n_w // (num_filters * nr * nc)
    if in_ch * num_filters * nr * nc != n_w:
        raise DlibFormatError(f"conv parameter count {flat.size} does not fit {num_filters}x?x{nr}x{nc}")
    conv = nn.Conv2d(in_ch, num_filters, (nr, nc), stride=(sy, sx), padding=(py, px), bias=True)
    with torch.no_grad():
        conv.weight.copy_(torch.from_numpy(flat[:n_w].reshape(num_filters, in_ch, nr, nc)))
        conv.bias.copy_(torch.from_numpy(flat[n_w:]))
    return conv


class Affine(nn.Module):
    """dlib's ``affine`` layer: per-channel scale and shift (a frozen batch norm)."""

    def __init__(self, layer: Layer) -> None:
        super().__init__()
        flat = layer.params.reshape(-1)
        k = flat.size // 2
        self.register_buffer("gamma", torch.from_numpy(flat[:k].copy()).view(1, k, 1, 1))
        self.register_buffer("beta", torch.from_numpy(flat[k:].copy()).view(1, k, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gamma + self.beta


def _out_size(size: int, window: int, stride: int, pad: int) -> int:
    return 1 + (size + 2 * pad - window) // stride


class Residual(nn.Module):
    """con-affine-relu-con-affine plus an identity or 2x2 average-pool shortcut (add_prev)."""

    def __init__(self, layers: list[Layer], in_ch: int, in_size: int) -> None:
        super().__init__()
        self.conv1, self.aff1 = _conv(layers[0]), Affine(layers[1])
        self.conv2, self.aff2 = _conv(layers[3]), Affine(layers[4])
        self.down = layers[5].name == "avg_pool"
        size = in_size
        for conv in (self.conv1, self.conv2):
            size = _out_size(size, conv.kernel_size[0], conv.stride[0], conv.padding[0])
        out_ch = self.conv2.out_channels
        if self.down:
            nr, nc, sy, sx, py, px = layers[5].ints
            self.pool = nn.AvgPool2d((nr, nc), (sy, sx), (py, px))
            short = _out_size(in_size, nr, sy, py)
        else:
            self.pool = nn.Identity()
            short = in_size
        self.out_size = max(size, short)
        self.out_ch = max(out_ch, in_ch)
        # add_prev zero-pads the smaller operand: spatially at bottom/right, channels at the top.
        self.main_pad = (0, self.out_size - size, 0, self.out_size - size, 0, self.out_ch - out_ch)
        self.short_pad = (0, self.out_size - short, 0, self.out_size - short, 0, self.out_ch - in_ch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        main = self.aff2(self.conv2(F.relu(self.aff1(self.conv1(x)))))
        short = self.pool(x)
        if any(self.main_pad):
            main = F.pad(main, self.main_pad)
        if any(self.short_pad):
            short = F.pad(short, self.short_pad)
        return F.relu(main + short)


class DlibResNet(nn.Module):
    """The whole descriptor network; returns raw (unnormalised) 128-D descriptors."""

    def __init__(self, net: DlibNet) -> None:
        super().__init__()
        names = [layer.name for layer in net.layers]
        if names[:4] != ["con", "affine", "relu", "max_pool"] or names[-2:] != ["avg_pool", "fc"]:
            raise DlibFormatError(f"unexpected network layout: starts {names[:4]}, ends {names[-2:]}")
        self.register_buffer("mean", torch.tensor(net.channel_means, dtype=torch.float32).view(1, 3, 1, 1))
        self.input_size = net.input_size
        self.stem_conv, self.stem_aff = _conv(net.layers[0]), Affine(net.layers[1])
        nr, nc, sy, sx, py, px = net.layers[3].ints
        self.stem_pool = nn.MaxPool2d((nr, nc), (sy, sx), (py, px))
        size = _out_size(net.input_size, self.stem_conv.kernel_size[0], self.stem_conv.stride[0],
                         self.stem_conv.padding[0])
        size = _out_size(size, nr, sy, py)
        channels = self.stem_conv.out_channels
        blocks: list[Residual] = []
        i = 4
        body = net.layers[:-2]
        while i < len(body):
            span = 8 if i + 5 < len(body) and body[i + 5].name == "avg_pool" else 7
            chunk = body[i : i + span]
            want = ["con", "affine", "relu", "con", "affine"] + (["avg_pool"] if span == 8 else []) + [
                "add_prev", "relu"]
            if [layer.name for layer in chunk] != want:
                raise DlibFormatError(f"unexpected residual block at layer {i}: {[x.name for x in chunk]}")
            block = Residual(chunk, channels, size)
            blocks.append(block)
            channels, size = block.out_ch, block.out_size
            i += span
        self.blocks = nn.Sequential(*blocks)
        pool = net.layers[-2]
        if pool.ints[0] != 0:
            raise DlibFormatError("expected a global average pool before the fc layer")
        outputs, inputs, _bias_mode = net.layers[-1].ints
        w = net.layers[-1].params.reshape(-1)
        if w.size != inputs * outputs or inputs != channels:
            raise DlibFormatError(f"fc layer {inputs}x{outputs} does not fit {channels} channels")
        self.fc = nn.Linear(inputs, outputs, bias=False)
        with torch.no_grad():
            self.fc.weight.copy_(torch.from_numpy(w.reshape(inputs, outputs).T.copy()))
        self.dim = outputs

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = (x - self.mean) / 256.0
        x = self.stem_pool(F.relu(self.stem_aff(self.stem_conv(x))))
        x = self.blocks(x)
        return self.fc(x.mean(dim=(2, 3)))


def load_dlib_resnet(path: str | Path | None = None) -> DlibResNet:
    """Build the network from a .dat file (default: the one face-recognition-models ships)."""
    path = Path(path) if path else find_packaged_model()
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise FileNotFoundError(f"cannot read dlib model {path}: {exc.strerror}") from None
    module = DlibResNet(parse_dlib_metric_net(data))
    return module.eval()
