"""MTCNN (P-, R-, O-net cascade) run by us on facenet-pytorch's shipped weights.

Same networks, pyramid, thresholds and NMS rules as facenet-pytorch's ``detect_face``, without
importing facenet-pytorch or torchvision: importing those pulls in torch._dynamo and costs ~1.4 s
per process, which dominated quick gallery edits. The weight files are located, not imported.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


def weights_dir() -> Path:
    spec = importlib.util.find_spec("facenet_pytorch")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("MTCNN weights not found: install facenet-pytorch==2.5.3")
    return Path(next(iter(spec.submodule_search_locations))) / "data"


class PNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.prelu1 = nn.Conv2d(3, 10, 3), nn.PReLU(10)
        self.pool1 = nn.MaxPool2d(2, 2, ceil_mode=True)
        self.conv2, self.prelu2 = nn.Conv2d(10, 16, 3), nn.PReLU(16)
        self.conv3, self.prelu3 = nn.Conv2d(16, 32, 3), nn.PReLU(32)
        self.conv4_1, self.conv4_2 = nn.Conv2d(32, 2, 1), nn.Conv2d(32, 4, 1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.pool1(self.prelu1(self.conv1(x)))
        x = self.prelu3(self.conv3(self.prelu2(self.conv2(x))))
        return self.conv4_2(x), F.softmax(self.conv4_1(x), dim=1)


class RNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.prelu1 = nn.Conv2d(3, 28, 3), nn.PReLU(28)
        self.pool1 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv2, self.prelu2 = nn.Conv2d(28, 48, 3), nn.PReLU(48)
        self.pool2 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv3, self.prelu3 = nn.Conv2d(48, 64, 2), nn.PReLU(64)
        self.dense4, self.prelu4 = nn.Linear(576, 128), nn.PReLU(128)
        self.dense5_1, self.dense5_2 = nn.Linear(128, 2), nn.Linear(128, 4)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.pool1(self.prelu1(self.conv1(x)))
        x = self.pool2(self.prelu2(self.conv2(x)))
        x = self.prelu3(self.conv3(x)).permute(0, 3, 2, 1).contiguous()
        x = self.prelu4(self.dense4(x.view(x.shape[0], -1)))
        return self.dense5_2(x), F.softmax(self.dense5_1(x), dim=1)


class ONet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.prelu1 = nn.Conv2d(3, 32, 3), nn.PReLU(32)
        self.pool1 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv2, self.prelu2 = nn.Conv2d(32, 64, 3), nn.PReLU(64)
        self.pool2 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv3, self.prelu3 = nn.Conv2d(64, 64, 3), nn.PReLU(64)
        self.pool3 = nn.MaxPool2d(2, 2, ceil_mode=True)
        self.conv4, self.prelu4 = nn.Conv2d(64, 128, 2), nn.PReLU(128)
        self.dense5, self.prelu5 = nn.Linear(1152, 256), nn.PReLU(256)
        self.dense6_1, self.dense6_2, self.dense6_3 = nn.Linear(256, 2), nn.Linear(256, 4), nn.Linear(256, 10)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x = self.pool1(self.prelu1(self.conv1(x)))
        x = self.pool2(self.prelu2(self.conv2(x)))
        x = self.pool3(self.prelu3(self.conv3(x)))
        x = self.prelu4(self.conv4(x)).permute(0, 3, 2, 1).contiguous()
        x = self.prelu5(self.dense5(x.view(x.shape[0], -1)))
        return self.dense6_2(x), self.dense6_3(x), F.softmax(self.dense6_1(x), dim=1)


def load_nets(device: torch.device) -> tuple[PNet, RNet, ONet]:
    d = weights_dir()
    nets = (PNet(), RNet(), ONet())
    for net, name in zip(nets, ("pnet.pt", "rnet.pt", "onet.pt"), strict=True):
        net.load_state_dict(torch.load(d / name, map_location="cpu", weights_only=True))
        net.to(device).eval()
    return nets  # type: ignore[return-value]


def nms(boxes: torch.Tensor, scores: torch.Tensor, groups: torch.Tensor, iou: float, use_min: bool = False
        ) -> torch.Tensor:
    """Greedy NMS within each group. ``use_min`` divides the overlap by the smaller box (MTCNN's
    last stage, with +1 pixel areas); otherwise IoU without +1 (as torchvision computes it)."""
    if boxes.numel() == 0:
        return torch.empty(0, dtype=torch.long)
    b = boxes.detach().cpu().double().numpy()
    s = scores.detach().cpu().double().numpy()
    g = groups.detach().cpu().numpy()
    off = (b.max() + 1) * g[:, None]
    b = b + off
    one = 1.0 if use_min else 0.0
    area = (b[:, 2] - b[:, 0] + one) * (b[:, 3] - b[:, 1] + one)
    order = np.argsort(-s, kind="stable") if not use_min else np.argsort(s, kind="stable")[::-1]
    keep = []
    while order.size:
        i = order[0]
        keep.append(i)
        rest = order[1:]
        w = np.maximum(0.0, np.minimum(b[i, 2], b[rest, 2]) - np.maximum(b[i, 0], b[rest, 0]) + one)
        h = np.maximum(0.0, np.minimum(b[i, 3], b[rest, 3]) - np.maximum(b[i, 1], b[rest, 1]) + one)
        inter = w * h
        o = inter / np.minimum(area[i], area[rest]) if use_min else inter / (area[i] + area[rest] - inter)
        order = rest[o <= iou]
    return torch.as_tensor(np.asarray(keep, dtype=np.int64))


def _square(b: torch.Tensor) -> torch.Tensor:
    h, w = b[:, 3] - b[:, 1], b[:, 2] - b[:, 0]
    side = torch.max(w, h)
    b[:, 0] = b[:, 0] + w * 0.5 - side * 0.5
    b[:, 1] = b[:, 1] + h * 0.5 - side * 0.5
    b[:, 2:4] = b[:, :2] + side.repeat(2, 1).permute(1, 0)
    return b


def _regress(b: torch.Tensor, reg: torch.Tensor) -> torch.Tensor:
    w = b[:, 2] - b[:, 0] + 1
    h = b[:, 3] - b[:, 1] + 1
    b[:, :4] = torch.stack([b[:, 0] + reg[:, 0] * w, b[:, 1] + reg[:, 1] * h,
                            b[:, 2] + reg[:, 2] * w, b[:, 3] + reg[:, 3] * h]).permute(1, 0)
    return b


def _crops(imgs: torch.Tensor, boxes: torch.Tensor, inds: torch.Tensor, size: int) -> torch.Tensor:
    h, w = imgs.shape[2:4]
    bi = boxes.trunc().int().cpu().numpy()
    x, y = np.maximum(bi[:, 0], 1), np.maximum(bi[:, 1], 1)
    ex, ey = np.minimum(bi[:, 2], w), np.minimum(bi[:, 3], h)
    out = [F.interpolate(imgs[inds[k], :, y[k] - 1:ey[k], x[k] - 1:ex[k]].unsqueeze(0), size=(size, size),
                         mode="area")
           for k in range(len(bi)) if ey[k] > y[k] - 1 and ex[k] > x[k] - 1]
    return (torch.cat(out, 0) - 127.5) * 0.0078125


def detect_faces(frames: torch.Tensor, nets: tuple[PNet, RNet, ONet], min_size: int,
                 thresholds: tuple[float, float, float], factor: float) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """``frames``: (N, H, W, 3) uint8 of one size. Returns per frame boxes (K, 5: x1 y1 x2 y2 prob)
    and landmarks (K, 5, 2)."""
    pnet, rnet, onet = nets
    imgs = frames.permute(0, 3, 1, 2).float()
    n, h, w = imgs.shape[0], imgs.shape[2], imgs.shape[3]
    m = 12.0 / min_size
    scales, side = [], min(h, w) * m
    s = m
    while side >= 12:
        scales.append(s)
        s *= factor
        side *= factor
    boxes, inds = [], []
    for scale in scales:
        data = (F.interpolate(imgs, size=(int(h * scale + 1), int(w * scale + 1)), mode="area") - 127.5) * 0.0078125
        reg, probs = pnet(data)
        prob = probs[:, 1]
        mask = prob >= thresholds[0]
        where = mask.nonzero()
        reg = reg.permute(1, 0, 2, 3)[:, mask].permute(1, 0)
        cell = where[:, 1:].to(reg.dtype).flip(1)
        q1 = ((2 * cell + 1) / scale).floor()
        q2 = ((2 * cell + 12) / scale).floor()
        bs = torch.cat([q1, q2, prob[mask].unsqueeze(1), reg], dim=1)
        keep = nms(bs[:, :4], bs[:, 4], where[:, 0], 0.5)
        boxes.append(bs[keep])
        inds.append(where[keep, 0])
    b = torch.cat(boxes) if boxes else torch.zeros(0, 9)
    ii = torch.cat(inds) if inds else torch.zeros(0, dtype=torch.long)
    keep = nms(b[:, :4], b[:, 4], ii, 0.7)
    b, ii = b[keep], ii[keep]
    rw, rh = b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]
    b = torch.stack([b[:, 0] + b[:, 5] * rw, b[:, 1] + b[:, 6] * rh, b[:, 2] + b[:, 7] * rw,
                     b[:, 3] + b[:, 8] * rh, b[:, 4]]).permute(1, 0)
    b = _square(b)
    if len(b):
        reg, probs = rnet(_crops(imgs, b, ii, 24))
        score = probs[:, 1]
        ok = score > thresholds[1]
        b = torch.cat((b[ok, :4], score[ok].unsqueeze(1)), dim=1)
        ii, reg = ii[ok], reg[ok]
        keep = nms(b[:, :4], b[:, 4], ii, 0.7)
        b, ii, reg = b[keep], ii[keep], reg[keep]
        b = _square(_regress(b, reg))
    pts = torch.zeros(0, 5, 2)
    if len(b):
        reg, lm, probs = onet(_crops(imgs, b, ii, 48))
        score = probs[:, 1]
        ok = score > thresholds[2]
        lm = lm[ok].permute(1, 0)
        b = torch.cat((b[ok, :4], score[ok].unsqueeze(1)), dim=1)
        ii, reg = ii[ok], reg[ok]
        wi, hi = b[:, 2] - b[:, 0] + 1, b[:, 3] - b[:, 1] + 1
        px = wi.repeat(5, 1) * lm[:5, :] + b[:, 0].repeat(5, 1) - 1
        py = hi.repeat(5, 1) * lm[5:10, :] + b[:, 1].repeat(5, 1) - 1
        pts = torch.stack((px, py)).permute(2, 1, 0)
        b = _regress(b, reg)
        keep = nms(b[:, :4], b[:, 4], ii, 0.7, use_min=True)
        b, ii, pts = b[keep], ii[keep], pts[keep]
    bn, pn, iin = b.detach().cpu().numpy(), pts.detach().cpu().numpy(), ii.cpu().numpy()
    return [bn[iin == k] for k in range(n)], [pn[iin == k] for k in range(n)]
