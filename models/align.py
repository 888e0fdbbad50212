"""Face-chip geometry: the least-squares similarity (Umeyama) between point sets, and warping a face
onto a model's chip. One fit serves template alignment and dlib's shape-predictor geometry."""

from __future__ import annotations

import cv2
import numpy as np


def similarity_transform(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """2x3 matrix of the rotation+uniform scale+translation mapping src onto dst (Umeyama).

    The reflection test on det(u)·det(vt) is dlib's ``find_similarity_transform`` rule (it equals
    dlib's det(cov) < 0 test whenever cov is not singular), so dlib's chips come out exact."""
    src = np.asarray(src, dtype=np.float64)
    dst = np.asarray(dst, dtype=np.float64)
    if src.shape != dst.shape or src.ndim != 2 or src.shape[1] != 2 or len(src) < 2:
        raise ValueError(f"landmarks must be matching (N, 2) arrays with N >= 2, got {src.shape} and {dst.shape}")
    mu_s, mu_d = src.mean(0), dst.mean(0)
    s_c, d_c = src - mu_s, dst - mu_d
    var_s = (s_c**2).sum() / len(src)
    if var_s <= 1e-12:
        raise ValueError("landmarks are degenerate (all at one point)")
    cov = d_c.T @ s_c / len(src)
    u, sig, vt = np.linalg.svd(cov)
    d = np.ones(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        d[1] = -1.0
    rot = u @ np.diag(d) @ vt
    scale = (sig * d).sum() / var_s
    m = np.zeros((2, 3))
    m[:, :2] = scale * rot
    m[:, 2] = mu_d - m[:, :2] @ mu_s
    return m


def align_face(image: np.ndarray, landmarks: np.ndarray, template: np.ndarray, size: int) -> np.ndarray:
    """Warp one face to a (size, size, 3) chip by the similarity mapping its landmarks onto ``template``."""
    return warp_chip(image, similarity_transform(landmarks, template), size)


def warp_chip(image: np.ndarray, m: np.ndarray, size: int) -> np.ndarray:
    """Apply the 2x3 image->chip matrix ``m``.

    When the face is much larger than the chip, the region is first shrunk with area averaging so
    the bilinear warp does not alias (dlib's chip extractor uses a pyramid for the same reason).
    """
    m = np.asarray(m, dtype=np.float64)
    scale = float(np.sqrt(abs(np.linalg.det(m[:, :2]))))
    if scale < 0.5:
        # Crop the source region the chip covers, shrink it by ~2*scale, and fold that into m.
        inv = cv2.invertAffineTransform(m)
        corners = np.array([[0, 0, 1], [size, 0, 1], [0, size, 1], [size, size, 1]], dtype=np.float64)
        pts = corners @ inv.T
        h, w = image.shape[:2]
        x0 = int(max(0, np.floor(pts[:, 0].min()) - 2))
        y0 = int(max(0, np.floor(pts[:, 1].min()) - 2))
        x1 = int(min(w, np.ceil(pts[:, 0].max()) + 2))
        y1 = int(min(h, np.ceil(pts[:, 1].max()) + 2))
        if x1 - x0 >= 2 and y1 - y0 >= 2:
            shrink = min(1.0, 2.0 * scale)
            crop = image[y0:y1, x0:x1]
            new_w, new_h = max(1, round(crop.shape[1] * shrink)), max(1, round(crop.shape[0] * shrink))
            crop = cv2.resize(crop, (new_w, new_h), interpolation=cv2.INTER_AREA)
            fx, fy = new_w / (x1 - x0), new_h / (y1 - y0)
            pre = np.array([[fx, 0, -x0 * fx], [0, fy, -y0 * fy], [0, 0, 1]], dtype=np.float64)
            m = m @ np.linalg.inv(pre)
            image = crop
    return cv2.warpAffine(image, m, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
