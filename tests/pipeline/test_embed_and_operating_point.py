"""The embed stage on a synthetic frame (real dlib weights, no face data) and the operating point's arithmetic:
the impostor-tail threshold, the size-aware prior and the order of what decides a gallery's point."""

from __future__ import annotations

import queue
from typing import Any

import numpy as np
import pytest

from models.registry import model_id_for
from pipeline.embed import EmbedStage
from pipeline.gallery import Gallery, Identity
from pipeline.gallery.operating_point import centroid_shift, gallery_point, prior_point, tail_threshold
from pipeline.types import Detection, EmbeddedFrame, Frame, TrackedFrame, TrackView

DLIB = model_id_for("dlib-resnet-v1", False)


def test_the_embed_stage_embeds_what_the_tracker_asked_for_in_one_batch(dlib_embedder) -> None:
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, size=(240, 320, 3), dtype=np.uint8)
    lm = np.array([[120, 100], [180, 100], [150, 130], [128, 160], [172, 160]], np.float32)
    d = Detection((100.0, 60.0, 200.0, 190.0), 0.99, lm)
    views = (TrackView(1, d.box, d, 0, 3), TrackView(2, d.box, d, 0, 3), TrackView(3, d.box, None, 0, 3))
    outq: queue.Queue[Any] = queue.Queue()
    st = EmbedStage(queue.Queue(), outq, dlib_embedder)
    st.process(TrackedFrame(Frame("cam", 0, 0.0, 0.0, image, False), views, (1, 3), ()))  # 3 has no detection
    st.process(TrackedFrame(Frame("cam", 1, 0.04, 0.04, image, False), views, (), ()))
    first, second = outq.get_nowait(), outq.get_nowait()
    assert isinstance(first, EmbeddedFrame) and [e.track_id for e in first.embeddings] == [1]
    vec = first.embeddings[0].vec
    assert vec.shape == (dlib_embedder.dim,) and abs(float(np.linalg.norm(vec)) - 1.0) < 1e-4
    assert 0.0 < first.embeddings[0].quality <= 1.0 and first.embeddings[0].sharpness > 0
    assert second.embeddings == () and st.faces_embedded == 1


def test_the_impostor_tail_threshold_rises_as_the_allowed_rate_falls() -> None:
    rates = [1e-2, 1e-3, 1e-4, 1e-5, 1e-6]
    ts = [tail_threshold(DLIB, r) for r in rates]
    assert ts == sorted(ts) and len(set(ts)) == len(ts)
    assert all(0.8 < t < 1.0 for t in ts)
    with pytest.raises(ValueError, match="per-comparison FAR must be in"):
        tail_threshold(DLIB, 0.0)


def _people(n: int, spread: float, seed: int = 1) -> list[Identity]:
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        c = rng.normal(size=128)
        c /= np.linalg.norm(c)
        t = c + spread * rng.normal(size=(3, 128))
        t /= np.linalg.norm(t, axis=1, keepdims=True)
        m = t.mean(0)
        out.append(Identity(f"p{i}", (m / np.linalg.norm(m)).astype(np.float32), t.astype(np.float32),
                            np.zeros(3, bool), [f"p{i}/{k}.jpg" for k in range(3)], [f"{i}-{k}" for k in range(3)]))
    return out


def test_the_prior_is_stricter_for_more_identities_and_a_wider_centroid_shift() -> None:
    few, many = prior_point(DLIB, _people(2, 0.05), 0.01), prior_point(DLIB, _people(50, 0.05), 0.01)
    assert many.threshold > few.threshold and "50 identities" in many.source
    assert centroid_shift(_people(10, 0.5)) >= 0.0 and centroid_shift(_people(1, 0.5)) == 0.0


def test_what_decides_a_gallerys_operating_point(tmp_path) -> None:
    people = _people(3, 0.05)
    g = Gallery.create(tmp_path / "g.db", DLIB, 128)
    g.replace_identities(people, keep_others=False)
    prior = gallery_point(g, people, "centroid", 0.01)
    assert prior.source.startswith("uncalibrated gallery")
    g.set_calibration(0.95, 0.03, {"method": "test figures", "target_far": 0.01})
    stored = gallery_point(g, people, "centroid", 0.01)
    assert (stored.threshold, stored.margin) == (0.95, 0.03) and "test figures" in stored.source
    user = gallery_point(g, people, "centroid", 0.01, threshold=0.5, margin=0.1)
    assert (user.threshold, user.margin, user.source) == (0.5, 0.1, "set by the user")
    assert gallery_point(g, people, "svm", 0.01).threshold == 0.5
    g.close()
