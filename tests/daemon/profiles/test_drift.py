"""Drift on synthetic track decisions against a real gallery (no face data): each ended track's score is kept for
the identity it was named, a refused track's top-1 score for that person; the window is bounded, the file is
0600 and survives a restart of the same model; erasing, renaming and enrolling follow the gallery; ``gallery
info`` flags, offline, whoever's recent median is within drift.near of the threshold, with the advice."""

from __future__ import annotations

import json
import re
import stat

import numpy as np

from daemon.config.drift import DriftConfig
from daemon.profiles.drift import DriftWatch
from daemon.stats import GalleryState
from daemon.stores.drift import default_location
from pipeline.gallery import Gallery, Identity
from pipeline.match import CentroidMatcher
from pipeline.types import Detection, EndedTrack, EndedTrackSummary, Frame, MatchedFrame, TrackDecision, TrackedFrame

MODEL = "dlib-resnet-v1@2"
THRESHOLD = 0.9
DET = Detection((0.0, 0.0, 100.0, 100.0), 0.99, np.zeros((5, 2), np.float32))


def _people(*names: str) -> list[Identity]:
    rng = np.random.default_rng(1)
    out = []
    for n in names:
        v = rng.normal(size=128).astype(np.float32)
        v /= np.linalg.norm(v)
        out.append(Identity(n, v, v[None], np.zeros(1, bool), [f"{n}.jpg"], [f"sha-{n}"]))
    return out


class _Gallery:
    """The daemon's gallery_state() as a DriftWatch sees it: swapped whole on a change."""

    def __init__(self, *names: str) -> None:
        self.now = GalleryState(CentroidMatcher(_people(*names)), THRESHOLD, 0.0, 1)

    def swap(self, *names: str) -> None:
        self.now = GalleryState(CentroidMatcher(_people(*names)), THRESHOLD, 0.0, self.now.version + 1)

    def __call__(self) -> GalleryState:
        return self.now


def _track(watch: DriftWatch, tid: int, top: list[tuple[str, float]], named: str | None) -> None:
    """One track: a decision on its aggregate (top candidates), then its end, named or unknown."""
    f = Frame("cam", tid * 2, tid * 2.0, 0.0, np.zeros((2, 2, 3), np.uint8), False)
    d = TrackDecision(tid, DET, named, top[0][1], top[0][1] - top[1][1], named, named is not None, named is None, 3,
                      None, tuple(top))
    watch.observe(MatchedFrame(TrackedFrame(f, (), (), ()), (d,), ()), {})
    end = EndedTrack(tid, tid * 2, tid * 2 + 1, tid * 2.0, tid * 2.0 + 1, 2)
    s = EndedTrackSummary(end, named, top[0][1], "recognized" if named else "unknown", None, False, False, DET,
                          top[0][1], top[0][1] - top[1][1], 3)
    f2 = Frame("cam", tid * 2 + 1, tid * 2.0 + 1, 0.0, f.image, False)
    watch.observe(MatchedFrame(TrackedFrame(f2, (), (), (end,)), (), (s,)), {})


def test_scores_and_refusals_per_identity_bounded_saved_0600_and_reloaded(tmp_path) -> None:
    path, gallery = tmp_path / "g.db.drift.json", _Gallery("ada", "bob")
    cfg = DriftConfig(recent=4, min_scores=3, save_every_s=3600)
    watch = DriftWatch(path, gallery, MODEL, cfg)
    scores = [0.95, 0.94, 0.93, 0.92, 0.91, 0.905]
    for i, s in enumerate(scores):
        _track(watch, i, [("ada", s), ("bob", 0.5)], "ada")
    _track(watch, 10, [("bob", 0.86), ("ada", 0.4)], None)  # refused, bob its top-1
    _track(watch, 11, [("carl", 0.99), ("ada", 0.4)], "carl")  # not in the gallery (any more): not kept
    ada = watch.summary("ada")
    assert ada is not None and ada["accepted"] == 4 and ada["accepted_total"] == 6
    assert ada["recent_median"] == round(float(np.median(scores[-4:])), 4)
    assert ada["margin_to_threshold"] == round(float(np.median(scores[-4:])) - THRESHOLD, 4)
    assert ada["drifting"] is (ada["margin_to_threshold"] <= cfg.near) and ada["refusals"] == 0
    bob = watch.summary("bob")
    assert bob is not None and bob["accepted"] == 0 and bob["refusals"] == 1 and bob["refusal_median"] == 0.86
    assert bob["refusals_near"] == 1 and not bob["drifting"]  # 0.86 is within 0.05 below 0.9
    assert watch.summary("carl") is None and not path.exists()  # written every save_every_s, or at the end
    watch.close()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert set(json.loads(path.read_text())["identities"]) == {"ada", "bob"}

    again = DriftWatch(path, gallery, MODEL, cfg)
    assert again.summary("ada") == ada and again.summary("bob") == bob
    other = DriftWatch(path, gallery, "facenet-vggface2@1", cfg)  # another model's scores mean nothing here
    assert other.summary("ada") is None


def test_erase_rename_and_enrol_follow_the_gallery(tmp_path) -> None:
    path, gallery = tmp_path / "g.db.drift.json", _Gallery("ada", "bob")
    watch = DriftWatch(path, gallery, MODEL, DriftConfig(recent=10, min_scores=1))
    for i in range(3):
        _track(watch, i, [("ada", 0.95), ("bob", 0.5)], "ada")
        _track(watch, 10 + i, [("bob", 0.97), ("ada", 0.5)], "bob")
    watch.save()
    assert b"ada" in path.read_bytes()
    gallery.swap("bob")
    watch.send("gallery.updated", {"action": "erased", "identity": "ada"})
    assert watch.summary("ada") is None and b"ada" not in path.read_bytes()  # written at once
    gallery.swap("robert")
    watch.send("gallery.updated", {"action": "renamed", "identity": "robert", "previous": "bob"})
    robert = watch.summary("robert")
    assert robert is not None and robert["accepted"] == 3 and watch.summary("bob") is None
    assert set(json.loads(path.read_text())["identities"]) == {"robert"}
    watch.send("gallery.updated", {"action": "enrolled", "identity": "robert", "added": 1})
    fresh = watch.summary("robert")  # a new photo moved the centroid: their window starts again
    assert fresh is not None and fresh["accepted"] == 0 and fresh["accepted_total"] == 3


def _gallery_file(tmp_path, names: list[str]) -> Gallery:
    g = Gallery.create(tmp_path / "g.db", MODEL, 128)
    g.replace_identities(_people(*names), keep_others=False)
    g.set_calibration(THRESHOLD, 0.0, None)
    return g


def test_gallery_info_flags_who_drifts_offline_and_remove_forgets_them(tmp_path, cli) -> None:
    g = _gallery_file(tmp_path, ["ada", "bob"])
    g.close()
    path = default_location(tmp_path / "g.db", tmp_path)
    state = _Gallery("ada", "bob")
    watch = DriftWatch(path, state, MODEL, DriftConfig())
    for i in range(6):  # ada slides to the threshold, bob is well clear of it
        _track(watch, i, [("ada", THRESHOLD + 0.004 + 0.001 * (i % 2)), ("bob", 0.5)], "ada")
        _track(watch, 10 + i, [("bob", THRESHOLD + 0.06), ("ada", 0.5)], "bob")
    watch.close()

    rc, out, err = cli("gallery", "info", "--gallery", tmp_path / "g.db", "--json")
    assert rc == 0, err
    drift = json.loads(out)["drift"]
    assert drift["file"] == str(path) and set(drift["identities"]) == {"ada", "bob"}
    assert [f["identity"] for f in drift["flagged"]] == ["ada"]
    assert "enrol a fresh photo or clip" in drift["flagged"][0]["advice"]
    assert drift["identities"]["bob"]["margin_to_threshold"] > 0.01 and not drift["identities"]["bob"]["drifting"]
    rc, out, err = cli("gallery", "info", "--gallery", tmp_path / "g.db")
    assert rc == 0 and re.search(r"^drifting +1$", out, re.M)
    assert re.search(r"^drifting: ada: recent median .* enrol a fresh photo or clip", out, re.M)

    rc, out, err = cli("gallery", "remove", "ada", "--gallery", tmp_path / "g.db")
    assert rc == 0, err
    assert b"ada" not in path.read_bytes()  # their scores go with them
    path.write_text("{not json")
    rc, out, err = cli("gallery", "info", "--gallery", tmp_path / "g.db")
    # A broken drift file costs a warning, never the gallery's figures.
    assert rc == 0 and "is not JSON" in err and re.search(r"^drifting +0$", out, re.M)


def test_identity_metrics_are_opt_in_by_gallery_size() -> None:
    from daemon.config.http import IDENTITY_METRICS_AUTO, HttpConfig

    auto = HttpConfig()
    assert auto.identity_labels(IDENTITY_METRICS_AUTO) and not auto.identity_labels(IDENTITY_METRICS_AUTO + 1)
    assert HttpConfig(identity_metrics=True).identity_labels(10**6)
    assert not HttpConfig(identity_metrics=False).identity_labels(1)
