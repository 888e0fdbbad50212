"""MTCNN's cascade in NumPy and OpenCV: the full-frame scan, and the refresh of known faces from crops.

The scan follows facenet-pytorch's ``detect_face`` (pyramid, thresholds, box regression, NMS rules);
it differs in resampling: the uint8 frame and crops are resized with OpenCV's INTER_AREA before
conversion to float (torch's area interpolation on float frames was a quarter of the scan's time),
so probabilities and boxes differ from facenet-pytorch's by resampling noise, not by face.

``refine`` is the tracking refresh: a known face's box, squared, goes through the R-net (to re-centre
it) and the O-net (box, landmarks, probability), ~1 ms a face instead of a full-frame scan.
"""

from __future__ import annotations

import cv2
import numpy as np

from models.mtcnn import MtcnnNets

_MAX_BATCH = 256


def nms(boxes: np.ndarray, scores: np.ndarray, groups: np.ndarray, iou: float) -> np.ndarray:
    """IoU NMS within each group (OpenCV's ``NMSBoxesBatched``; IoU without +1, as torchvision's)."""
    if len(boxes) == 0:
        return np.zeros(0, dtype=np.int64)
    xywh = np.stack([boxes[:, 0], boxes[:, 1], boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]], 1)
    keep = cv2.dnn.NMSBoxesBatched(xywh.astype(np.float64).tolist(), scores.astype(np.float64).tolist(),
                                   groups.astype(np.int32).tolist(), -np.inf, iou)
    keep = np.asarray(keep, dtype=np.int64).reshape(-1)
    return keep[np.argsort(-scores[keep], kind="stable")]


def nms_min(boxes: np.ndarray, scores: np.ndarray, groups: np.ndarray, iou: float) -> np.ndarray:
    """MTCNN's last NMS: overlap over the smaller box, +1 pixel areas. No maintained library offers
    this rule; it runs on the few boxes the O-net kept (tens), so a NumPy loop costs microseconds."""
    if len(boxes) == 0:
        return np.zeros(0, dtype=np.int64)
    b = boxes.astype(np.float64) + ((boxes.max() + 1) * groups)[:, None]
    area = (b[:, 2] - b[:, 0] + 1) * (b[:, 3] - b[:, 1] + 1)
    order = np.argsort(scores, kind="stable")[::-1]
    keep = []
    while order.size:
        i = order[0]
        keep.append(i)
        rest = order[1:]
        w = np.maximum(0.0, np.minimum(b[i, 2], b[rest, 2]) - np.maximum(b[i, 0], b[rest, 0]) + 1)
        h = np.maximum(0.0, np.minimum(b[i, 3], b[rest, 3]) - np.maximum(b[i, 1], b[rest, 1]) + 1)
        order = rest[(w * h) / np.minimum(area[i], area[rest]) <= iou]
    return np.asarray(keep, dtype=np.int64)


def square(b: np.ndarray) -> np.ndarray:
    b = b.copy()
    w, h = b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]
    side = np.maximum(w, h)
    b[:, 0] = b[:, 0] + w * 0.5 - side * 0.5
    b[:, 1] = b[:, 1] + h * 0.5 - side * 0.5
    b[:, 2] = b[:, 0] + side
    b[:, 3] = b[:, 1] + side
    return b


def regress(b: np.ndarray, reg: np.ndarray) -> np.ndarray:
    b = b.copy()
    w = b[:, 2] - b[:, 0] + 1
    h = b[:, 3] - b[:, 1] + 1
    b[:, 0] += reg[:, 0] * w
    b[:, 1] += reg[:, 1] * h
    b[:, 2] += reg[:, 2] * w
    b[:, 3] += reg[:, 3] * h
    return b


def _normalise(x: np.ndarray) -> np.ndarray:
    """uint8 NHWC -> float32 NCHW in [-1, 1], as MTCNN was trained."""
    return np.ascontiguousarray(((x.astype(np.float32) - 127.5) * 0.0078125).transpose(0, 3, 1, 2))


def crops(frames: list[np.ndarray], boxes: np.ndarray, inds: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Resized crops (facenet-pytorch's clipping: no padding) and which boxes had a non-empty crop."""
    out, ok = [], np.zeros(len(boxes), dtype=bool)
    bi = np.trunc(boxes[:, :4]).astype(np.int64)
    for k, (x1, y1, x2, y2) in enumerate(bi):
        img = frames[inds[k]]
        h, w = img.shape[:2]
        x, y, ex, ey = max(x1, 1), max(y1, 1), min(x2, w), min(y2, h)
        if ey > y - 1 and ex > x - 1:
            out.append(cv2.resize(img[y - 1:ey, x - 1:ex], (size, size), interpolation=cv2.INTER_AREA))
            ok[k] = True
    if not out:
        return np.zeros((0, 3, size, size), dtype=np.float32), ok
    return _normalise(np.stack(out)), ok


def padded_size(n: int) -> int:
    """Batch size a run of ``n`` crops is padded to: exact up to 8 (a refresh of one face must not pay for 8),
    a multiple of 8 up to 64, then of 32 (up to 256). A few dozen input shapes in all, so ONNX Runtime's arena
    stops growing after warm-up, while padding wastes at most 7 or 31 crops (powers of two wasted up to half
    a batch: 159 R-net crops ran as 256)."""
    if n <= 8:
        return n
    return -(-n // 8) * 8 if n <= 64 else -(-n // 32) * 32


def run_padded(net, x: np.ndarray) -> tuple[np.ndarray, ...]:
    """Run R-/O-net over ``x`` in chunks of at most 256, each padded to :func:`padded_size`."""
    parts = []
    for s in range(0, len(x), _MAX_BATCH):
        chunk = x[s:s + _MAX_BATCH]
        n = len(chunk)
        size = padded_size(n)
        if size != n:
            chunk = np.concatenate([chunk, np.zeros((size - n, *chunk.shape[1:]), dtype=chunk.dtype)])
        parts.append(tuple(o[:n] for o in net(chunk)))
    return tuple(np.concatenate([p[i] for p in parts]) for i in range(len(parts[0])))


def pyramid(h: int, w: int, min_size: float, factor: float) -> list[float]:
    m = 12.0 / min_size
    scales, side, s = [], min(h, w) * m, m
    while side >= 12:
        scales.append(s)
        s *= factor
        side *= factor
    return scales


def _level(octaves: list[tuple[float, np.ndarray]], scale: float, size: tuple[int, int]) -> np.ndarray:
    """One pyramid level, resized from the smallest halving of the frame still at least ``scale`` (halvings
    are added to ``octaves`` as needed). INTER_AREA straight from a 1080p frame costs ~6 ms a level (58 ms a
    pyramid); from the nearest halving, 4 ms for all levels."""
    while octaves[-1][0] * 0.5 >= scale and min(octaves[-1][1].shape[:2]) >= 24:
        base = octaves[-1][1]
        octaves.append((octaves[-1][0] * 0.5, cv2.resize(base, (base.shape[1] // 2, base.shape[0] // 2),
                                                        interpolation=cv2.INTER_AREA)))
    return cv2.resize(octaves[-1][1], size, interpolation=cv2.INTER_AREA)


def _onet(frames: list[np.ndarray], b: np.ndarray, ii: np.ndarray, nets: MtcnnNets
          ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """O-net on squared boxes: (regressed boxes, probabilities, landmarks (K, 5, 2), kept index)."""
    x, ok = crops(frames, b, ii, 48)
    b, ii = b[ok], ii[ok]
    if not len(b):
        return np.zeros((0, 4)), np.zeros(0), np.zeros((0, 5, 2)), np.zeros(0, dtype=np.int64)
    reg, lm, probs = run_padded(nets.onet, x)
    wi = (b[:, 2] - b[:, 0] + 1)[:, None]
    hi = (b[:, 3] - b[:, 1] + 1)[:, None]
    pts = np.stack([wi * lm[:, :5] + b[:, :1] - 1, hi * lm[:, 5:10] + b[:, 1:2] - 1], axis=2)
    return regress(b[:, :4], reg), probs[:, 1], pts, np.flatnonzero(ok)


def detect_faces(frames: np.ndarray, nets: MtcnnNets, min_size: float, thresholds: tuple[float, float, float],
                 factor: float, octave_pyramid: bool = False) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """``frames``: (N, H, W, 3) uint8 of one size. Per frame: boxes (K, 5: x1 y1 x2 y2 prob) and
    landmarks (K, 5, 2), in the frames' pixels. ``octave_pyramid`` resizes each level from the nearest
    halving of the frame (streams: 15x cheaper on 1080p; resampling differs slightly from a direct resize)."""
    n, h, w = frames.shape[:3]
    imgs = list(frames)
    boxes, inds = [], []
    octaves = [[(1.0, f)] for f in imgs]
    for scale in pyramid(h, w, min_size, factor):
        size = (int(w * scale + 1), int(h * scale + 1))
        data = _normalise(np.stack([_level(o, scale, size) if octave_pyramid else
                                    cv2.resize(o[0][1], size, interpolation=cv2.INTER_AREA) for o in octaves]))
        reg, probs = nets.pnet(data)
        prob = probs[:, 1]
        where = np.argwhere(prob >= thresholds[0])  # (k, 3): image, row, column
        if not len(where):
            continue
        img, yy, xx = where[:, 0], where[:, 1], where[:, 2]
        cell = np.stack([xx, yy], 1).astype(np.float32)
        q1 = np.floor((2 * cell + 1) / scale)
        q2 = np.floor((2 * cell + 12) / scale)
        r = reg[img, :, yy, xx]
        bs = np.concatenate([q1, q2, prob[img, yy, xx][:, None], r], axis=1)
        keep = nms(bs[:, :4], bs[:, 4], img, 0.5)
        boxes.append(bs[keep])
        inds.append(img[keep])
    empty = ([np.zeros((0, 5), np.float32) for _ in range(n)], [np.zeros((0, 5, 2), np.float32) for _ in range(n)])
    if not boxes:
        return empty
    b, ii = np.concatenate(boxes), np.concatenate(inds)
    keep = nms(b[:, :4], b[:, 4], ii, 0.7)
    b, ii = b[keep], ii[keep]
    rw, rh = b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]
    b = square(np.stack([b[:, 0] + b[:, 5] * rw, b[:, 1] + b[:, 6] * rh, b[:, 2] + b[:, 7] * rw,
                         b[:, 3] + b[:, 8] * rh, b[:, 4]], 1))
    x, ok = crops(imgs, b, ii, 24)
    b, ii = b[ok], ii[ok]
    if not len(b):
        return empty
    reg, probs = run_padded(nets.rnet, x)
    sel = probs[:, 1] > thresholds[1]
    b = np.concatenate([b[sel, :4], probs[sel, 1:2]], 1)
    ii, reg = ii[sel], reg[sel]
    keep = nms(b[:, :4], b[:, 4], ii, 0.7)
    b = square(regress(b[keep], reg[keep]))
    ii = ii[keep]
    if not len(b):
        return empty
    ob, score, pts, kept = _onet(imgs, b, ii, nets)
    ii = ii[kept]
    sel = score > thresholds[2]
    ob, score, pts, ii = ob[sel], score[sel], pts[sel], ii[sel]
    keep = nms_min(ob, score, ii, 0.7)
    ob, score, pts, ii = ob[keep], score[keep], pts[keep], ii[keep]
    out = np.concatenate([ob, score[:, None]], 1).astype(np.float32)
    return [out[ii == k] for k in range(n)], [pts[ii == k].astype(np.float32) for k in range(n)]


def refine(frames: list[np.ndarray], boxes: list[np.ndarray], nets: MtcnnNets
           ) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Refresh known faces: ``boxes[k]`` (M, 4) are faces of ``frames[k]`` on an earlier frame. Each is
    squared, re-centred by the R-net, then boxed, scored and landmarked by the O-net; duplicates that
    converged on one face are merged. Returns per frame boxes (M', 5) and landmarks (M', 5, 2); the caller
    keeps those whose probability is high enough."""
    n = len(frames)
    counts = [len(b) for b in boxes]
    out_b = [np.zeros((0, 5), np.float32) for _ in range(n)]
    out_p = [np.zeros((0, 5, 2), np.float32) for _ in range(n)]
    if not sum(counts):
        return out_b, out_p
    b = square(np.concatenate([np.asarray(x, dtype=np.float64).reshape(-1, 4) for x in boxes]))
    ii = np.repeat(np.arange(n), counts)
    x, ok = crops(frames, b, ii, 24)
    b, ii = b[ok], ii[ok]
    if not len(b):
        return out_b, out_p
    reg, _ = run_padded(nets.rnet, x)
    b = square(regress(b, reg))
    ob, score, pts, kept = _onet(frames, b, ii, nets)
    ii = ii[kept]
    keep = nms_min(ob, score, ii, 0.7)
    ob, score, pts, ii = ob[keep], score[keep], pts[keep], ii[keep]
    res = np.concatenate([ob, score[:, None]], 1).astype(np.float32)
    return [res[ii == k] for k in range(n)], [pts[ii == k].astype(np.float32) for k in range(n)]
