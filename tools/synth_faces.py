"""Synthetic face embeddings shaped like dlib-resnet-v1's, for matcher benchmarks at 10^5-10^6 identities.

No photo set holds a million people, and uniform random unit vectors are the wrong test: dlib's vectors sit in
a narrow cone (strangers score 0.84 on average, not 0) spanning only 77 of the 128 dimensions, which is what
makes a nearest-neighbour index work hard. So a vector here is
``normalise(MEAN_NORM * e + b_identity + s * w_photo)``: ``e`` a fixed direction, ``b`` drawn once per identity
with the measured between-identity spectrum, ``w`` per photo with the measured within-identity spectrum (in its
own random axes of the same subspace), and ``s`` a per-photo log-normal scale (some photos are worse).

The constants below were measured once on the shared LFW data with the real embedder (2026-12-03):
``facestream gallery build $S/lfw/identification_split.csv --out lfw_all.db`` (all 2,541 photos of the 158
identification-split people, torch runtime: 2,432 kept templates) then ``python -m tools.synth_faces measure
lfw_all.db``, which prints them and the genuine / impostor figures of the real and the synthetic vectors side
by side (docs/benchmarks.md, "Large galleries"). ``NOISE_SCALE_SD`` is the one fitted value: 0.2 makes the
synthetic genuine spread match the measured one (0 gives 0.0087 against 0.0154).
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass

import numpy as np

DIM = 128
MEAN_NORM = 0.9143  # |mean of all unit embeddings|
# Eigenvalues (x 1e-4) of the pooled within-identity covariance; the remaining 51 are below 2e-6.
WITHIN_SPECTRUM = np.array([
    14.4, 13.2, 12.8, 12.3, 12.2, 11.8, 11.4, 11.3, 11, 10.4, 10.4, 10.2, 9.84, 9.72, 9.45, 9.3, 9.23, 9.02, 8.87,
    8.71, 8.42, 8.33, 8.03, 7.91, 7.59, 7.51, 7.42, 7.34, 7.14, 7.12, 6.87, 6.78, 6.65, 6.51, 6.44, 6.19, 6.09, 5.86,
    5.65, 5.51, 5.31, 5.25, 5.2, 5.04, 4.83, 4.77, 4.64, 4.54, 4.48, 4.39, 4.33, 4.27, 4.19, 4.03, 3.89, 3.77, 3.67,
    3.62, 3.45, 3.37, 3.26, 3.18, 3.07, 2.94, 2.82, 2.76, 2.7, 2.43, 2.41, 2.22, 2, 1.88, 1.78, 1.54, 1.08, 0.647,
    0.331]) * 1e-4
# Eigenvalues (x 1e-4) of the covariance of identity means, less the within share left in a mean of n photos.
BETWEEN_SPECTRUM = np.array([
    157, 109, 77.2, 69, 65.1, 58.1, 44.9, 40.9, 36.8, 35.5, 32.2, 27.8, 26.9, 25.8, 21.8, 20.8, 19.8, 17.9, 16.1,
    15.6, 14.7, 13.6, 13, 12.2, 11.5, 11.2, 10.8, 10.4, 10, 9.32, 8.6, 7.57, 7.39, 6.96, 6.73, 6.48, 6.07, 5.85,
    5.48, 5.27, 4.9, 4.75, 4.35, 4.19, 3.91, 3.7, 3.38, 3.22, 3.01, 2.91, 2.75, 2.56, 2.36, 2.32, 2.11, 2.09, 1.86,
    1.77, 1.49, 1.43, 1.4, 1.24, 1.2, 1.1, 0.994, 0.949, 0.857, 0.744, 0.68, 0.561, 0.523, 0.38, 0.296, 0.231,
    0.205, 0.136, 0.0669]) * 1e-4
NOISE_SCALE_SD = 0.2
# The real vectors' figures (all photo pairs of the 2,432 templates: 18,689 genuine, 2,937,407 impostor).
MEASURED = {"genuine_mean": 0.9521, "genuine_sd": 0.0154, "impostor_mean": 0.8352, "impostor_sd": 0.0347,
            "impostor_at_far_1e-2": 0.9081, "impostor_at_far_1e-3": 0.9276, "impostor_at_far_1e-4": 0.9442}
RANK = len(WITHIN_SPECTRUM)
CHUNK = 65_536  # identities drawn per seeded block, so any identity's centre can be redrawn alone


@dataclass
class SynthFaces:
    """A reproducible population: identity ``i``'s centre depends only on ``seed`` and ``i``."""

    seed: int = 0

    def __post_init__(self) -> None:
        rng = np.random.default_rng([self.seed, 0])
        basis, _ = np.linalg.qr(rng.normal(size=(DIM, RANK + 1)))
        self.direction, self.between_axes = basis[:, 0], basis[:, 1:]
        turn, _ = np.linalg.qr(rng.normal(size=(RANK, RANK)))
        self.within_axes = self.between_axes @ turn

    def _centres(self, block: int) -> np.ndarray:
        """Unnormalised identity centres of one block (CHUNK rows)."""
        z = np.random.default_rng([self.seed, 1, block]).standard_normal((CHUNK, RANK))
        return MEAN_NORM * self.direction + (z * np.sqrt(BETWEEN_SPECTRUM)) @ self.between_axes.T

    def _photos(self, centres: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        w = (rng.standard_normal((len(centres), RANK)) * np.sqrt(WITHIN_SPECTRUM)) @ self.within_axes.T
        scale = np.exp(NOISE_SCALE_SD * rng.standard_normal((len(centres), 1)) - NOISE_SCALE_SD**2)
        v = centres + scale * w
        return v / np.linalg.norm(v, axis=1, keepdims=True)

    def gallery(self, n: int, photos: int = 1) -> np.ndarray:
        """(n, 128) float32 unit centroids, each the normalised mean of ``photos`` synthetic photos."""
        if n < 0 or photos < 1:
            raise ValueError(f"need n >= 0 and photos >= 1, got n={n}, photos={photos}")
        out = np.empty((n, DIM), np.float32)
        for block, start in enumerate(range(0, n, CHUNK)):
            stop = min(n, start + CHUNK)
            centres = self._centres(block)[: stop - start]
            rng = np.random.default_rng([self.seed, 2, block])
            acc = sum(self._photos(centres, rng) for _ in range(photos))
            out[start:stop] = acc / np.linalg.norm(acc, axis=1, keepdims=True)
        return out

    def probes(self, ids: np.ndarray, seed: int = 1) -> np.ndarray:
        """(len(ids), 128) float32: a new photo of each identity in ``ids`` (not one of its gallery photos)."""
        ids = np.asarray(ids, dtype=np.int64)
        out = np.empty((len(ids), DIM), np.float32)
        rng = np.random.default_rng([self.seed, 3, seed])
        for block in np.unique(ids // CHUNK):
            rows = np.flatnonzero(ids // CHUNK == block)
            out[rows] = self._photos(self._centres(int(block))[ids[rows] % CHUNK], rng)
        return out

    def photo_sets(self, n: int, photos: int, seed: int = 2) -> tuple[np.ndarray, np.ndarray]:
        """``photos`` photos of each of the first ``n`` identities and their labels (for the figures)."""
        ids = np.repeat(np.arange(n), photos)
        return self.probes(ids, seed), ids


def pair_figures(vecs: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """Genuine and impostor cosine figures over every pair of ``vecs``."""
    v = np.asarray(vecs, np.float64)
    s = v @ v.T
    iu = np.triu_indices(len(v), 1)
    same = (labels[:, None] == labels[None, :])[iu]
    gen, imp = s[iu][same], s[iu][~same]
    out = {"genuine_mean": gen.mean(), "genuine_sd": gen.std(), "impostor_mean": imp.mean(),
           "impostor_sd": imp.std()}
    for far in ("1e-2", "1e-3", "1e-4"):
        out[f"impostor_at_far_{far}"] = float(np.quantile(imp, 1 - float(far)))
    return {k: round(float(x), 4) for k, x in out.items()}


def measure(vecs: np.ndarray, labels: np.ndarray, rank: int = RANK) -> dict:
    """The constants above from real unit embeddings and their identity labels."""
    v = np.asarray(vecs, np.float64)
    ids, labels = np.unique(labels, return_inverse=True)
    counts = np.bincount(labels)
    means = np.stack([v[labels == i].mean(0) for i in range(len(ids))])
    resid = v - means[labels]
    within = resid.T @ resid / (len(v) - len(ids))
    between = np.cov(means.T) - within * np.mean(1 / counts)
    ew = np.sort(np.linalg.eigvalsh(within))[::-1]
    eb = np.clip(np.sort(np.linalg.eigvalsh(between))[::-1], 0, None)
    return {"photos": len(v), "identities": len(ids), "mean_norm": round(float(np.linalg.norm(v.mean(0))), 4),
            "within_spectrum_x1e4": [float(f"{x * 1e4:.3g}") for x in ew[:rank]],
            "between_spectrum_x1e4": [float(f"{x * 1e4:.3g}") for x in eb[:rank]],
            "within_rest_max": float(f"{ew[rank]:.3g}"), "real": pair_figures(v, labels)}


def synthetic_figures(identities: int = 400, photos: int = 12, seed: int = 0) -> dict[str, float]:
    vecs, labels = SynthFaces(seed).photo_sets(identities, photos)
    return pair_figures(vecs, labels)


def main(argv: list[str] | None = None) -> int:
    """``python -m tools.synth_faces measure GALLERY``: the constants from a real gallery's kept templates."""
    p = argparse.ArgumentParser(prog="python -m tools.synth_faces")
    p.add_argument("action", choices=["measure"])
    p.add_argument("gallery", help="a gallery built with dlib-resnet-v1 (several photos per identity)")
    args = p.parse_args(argv)
    from pipeline.gallery import Gallery, GalleryError

    try:
        g = Gallery.open(args.gallery)
    except GalleryError as exc:
        print(f"synth_faces: error: {exc}", file=sys.stderr)
        return 2
    people = [q for q in g.identities() if (~q.outlier).sum() >= 2]
    g.close()
    vecs = np.vstack([q.templates[~q.outlier] for q in people])
    labels = np.concatenate([np.full(int((~q.outlier).sum()), i) for i, q in enumerate(people)])
    print(json.dumps({**measure(vecs, labels), "synthetic": synthetic_figures()}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
