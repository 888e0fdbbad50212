"""MTCNN's cascade in NumPy and OpenCV: the full-frame scan, and the refresh of known faces from crops.

The scan follows facenet-pytorch's ``detect_face`` (pyramid, thresholds, box regression, NMS rules).
Resampling comes in two kinds. ``exact`` (stills: galleries, evaluation) reproduces torch's area
interpolation (adaptive average pooling) from one integral image of the frame, for the pyramid and
every crop at once, so photos get facenet-pytorch's boxes and landmarks and the gallery figures stay
those measured with it (OpenCV's INTER_AREA moved LFW verification from 0.988 to 0.985). Streams use
OpenCV's INTER_AREA on the uint8 frame (octave pyramid, per-crop resizes): several times cheaper on
big frames, and the streaming event tests hold with it.

``refine`` is the tracking refresh: a known face's box, squared, goes through the R-net (to re-centre
it) and the O-net (box, landmarks, probability), ~1 ms a face instead of a full-frame scan.
"""

from __future__ import annotations

from collections.abc import Callable

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


def integral(img: np.ndarray) -> np.ndarray:
    """(H+1, W+1, 3) float64 running sums of a uint8 (H, W, 3) image: any box sum from four reads."""
    return cv2.integral(np.ascontiguousarray(img), sdepth=cv2.CV_64F).reshape(img.shape[0] + 1, img.shape[1] + 1, -1)


def _windows(start: np.ndarray, n_in: np.ndarray, n_out: int) -> tuple[np.ndarray, np.ndarray]:
    """torch's adaptive-pooling windows: output i averages input [floor(i*n/m), ceil((i+1)*n/m))."""
    i = np.arange(n_out)
    lo = (i[None] * n_in[:, None]) // n_out
    hi = -((-(i[None] + 1) * n_in[:, None]) // n_out)
    return start[:, None] + lo, start[:, None] + hi


def area_resize(ii: np.ndarray, y0: np.ndarray, x0: np.ndarray, h: np.ndarray, w: np.ndarray, out_h: int,
                out_w: int) -> np.ndarray:
    """Regions (K of them: top-left y0/x0, size h x w) of the image behind ``ii`` resized to out_h x out_w as
    ``F.interpolate(mode='area')`` does; float64 (K, out_h, out_w, 3)."""
    ys, ye = _windows(y0, h, out_h)
    xs, xe = _windows(x0, w, out_w)
    a, b = ys[:, :, None], ye[:, :, None]
    c, d = xs[:, None, :], xe[:, None, :]
    total = ii[b, d] - ii[a, d] - ii[b, c] + ii[a, c]
    return total / ((b - a) * (d - c))[..., None]


def _normalise_float(x: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(((x - 127.5) * 0.0078125).astype(np.float32).transpose(0, 3, 1, 2))


def exact_crops(iis: list[np.ndarray], shapes: list[tuple[int, ...]], boxes: np.ndarray, inds: np.ndarray,
                size: int) -> tuple[np.ndarray, np.ndarray]:
    """:func:`crops` with torch's area resampling, every crop in one vectorised gather."""
    bi = np.trunc(boxes[:, :4]).astype(np.int64)
    hw = np.asarray([shapes[k][:2] for k in inds], dtype=np.int64).reshape(-1, 2)
    x, y = np.maximum(bi[:, 0], 1), np.maximum(bi[:, 1], 1)
    ex, ey = np.minimum(bi[:, 2], hw[:, 1]), np.minimum(bi[:, 3], hw[:, 0])
    ok = (ey > y - 1) & (ex > x - 1)
    out = np.zeros((int(ok.sum()), size, size, 3))
    for k in np.unique(inds[ok]):
        sel = inds[ok] == k
        idx = np.flatnonzero(ok)[sel]
        out[sel] = area_resize(iis[k], y[idx] - 1, x[idx] - 1, ey[idx] - y[idx] + 1, ex[idx] - x[idx] + 1, size, size)
    return _normalise_float(out), ok


def crops(frames: list[np.ndarray], boxes: np.ndarray, inds: np.ndarray, size: int,
          octaves: list[list[tuple[float, np.ndarray]]] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Resized crops (facenet-pytorch's clipping: no padding) and which boxes had a non-empty crop. With
    ``octaves`` (the scan's halvings of each frame), a box at least four times the crop size is cut from
    the halving where it is still twice that: INTER_AREA reads every source pixel, so a 200 px face
    resized to 24 px from full resolution costs 16x what it costs from a quarter-size copy."""
    out, ok = [], np.zeros(len(boxes), dtype=bool)
    bi = np.trunc(boxes[:, :4]).astype(np.int64)
    for k, (x1, y1, x2, y2) in enumerate(bi):
        img = frames[inds[k]]
        h, w = img.shape[:2]
        x, y, ex, ey = max(x1, 1), max(y1, 1), min(x2, w), min(y2, h)
        if not (ey > y - 1 and ex > x - 1):
            continue
        region = img[y - 1:ey, x - 1:ex]
        if octaves is not None:
            levels = octaves[inds[k]]
            j = 0
            while j + 1 < len(levels) and max(ey - y, ex - x) * levels[j + 1][0] >= 2 * size:
                j += 1
            if j:
                f, small = levels[j]
                sy0, sx0 = int((y - 1) * f), int((x - 1) * f)
                region = small[sy0:max(sy0 + 1, int(ey * f)), sx0:max(sx0 + 1, int(ex * f))]
        out.append(cv2.resize(region, (size, size), interpolation=cv2.INTER_AREA))
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


Cropper = Callable[[np.ndarray, np.ndarray, int], tuple[np.ndarray, np.ndarray]]


def _onet(crop: Cropper, b: np.ndarray, ii: np.ndarray, nets: MtcnnNets
          ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """O-net on squared boxes: (regressed boxes, probabilities, landmarks (K, 5, 2), kept index)."""
    x, ok = crop(b, ii, 48)
    b, ii = b[ok], ii[ok]
    if not len(b):
        return np.zeros((0, 4)), np.zeros(0), np.zeros((0, 5, 2)), np.zeros(0, dtype=np.int64)
    reg, lm, probs = run_padded(nets.onet, x)
    wi = (b[:, 2] - b[:, 0] + 1)[:, None]
    hi = (b[:, 3] - b[:, 1] + 1)[:, None]
    pts = np.stack([wi * lm[:, :5] + b[:, :1] - 1, hi * lm[:, 5:10] + b[:, 1:2] - 1], axis=2)
    return regress(b[:, :4], reg), probs[:, 1], pts, np.flatnonzero(ok)


def detect_faces(frames: np.ndarray, nets: MtcnnNets, min_size: float, thresholds: tuple[float, float, float],
                 factor: float, octave_pyramid: bool = False, exact: bool = False
                 ) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """``frames``: (N, H, W, 3) uint8 of one size. Per frame: boxes (K, 5: x1 y1 x2 y2 prob) and
    landmarks (K, 5, 2), in the frames' pixels. ``octave_pyramid`` resizes each level from the nearest
    halving of the frame (streams: 15x cheaper on 1080p; resampling differs slightly from a direct resize);
    ``exact`` resamples as torch's area interpolation does (stills; see the module docstring)."""
    n, h, w = frames.shape[:3]
    imgs = list(frames)
    boxes, inds = [], []
    octaves = [[(1.0, f)] for f in imgs]
    if exact:
        iis = [integral(f) for f in imgs]
        shapes = [f.shape for f in imgs]
        whole = (np.zeros(1, np.int64), np.zeros(1, np.int64), np.asarray([h]), np.asarray([w]))

        def crop(b: np.ndarray, ii: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
            return exact_crops(iis, shapes, b, ii, size)
    else:
        def crop(b: np.ndarray, ii: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
            return crops(imgs, b, ii, size, octaves if octave_pyramid else None)
    for scale in pyramid(h, w, min_size, factor):
        size = (int(w * scale + 1), int(h * scale + 1))
        if exact:
            data = _normalise_float(np.concatenate([area_resize(i, *whole, size[1], size[0]) for i in iis]))
        else:
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
    x, ok = crop(b, ii, 24)
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
    ob, score, pts, kept = _onet(crop, b, ii, nets)
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
    ob, score, pts, kept = _onet(lambda bb, jj, size: crops(frames, bb, jj, size), b, ii, nets)
    ii = ii[kept]
    keep = nms_min(ob, score, ii, 0.7)
    ob, score, pts, ii = ob[keep], score[keep], pts[keep], ii[keep]
    res = np.concatenate([ob, score[:, None]], 1).astype(np.float32)
    return [res[ii == k] for k in range(n)], [pts[ii == k].astype(np.float32) for k in range(n)]
