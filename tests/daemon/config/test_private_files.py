"""Files that name people are mode 0600 whether this run creates them (even under umask 0) or reuses
ones left 0644: galleries and their SQLite side files, the embedding cache, ``gallery export`` outputs,
report CSVs and plots, the timeline CSV and the annotated video."""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path

import cv2
import numpy as np
import pytest
from cli_helpers import link_photos

from daemon.profiles.outputs import Annotator, Timeline
from models.registry import EMBEDDERS
from pipeline.gallery import Gallery, Identity
from pipeline.gallery.cache import CachedFace, EmbeddingCache
from pipeline.private_files import PRIVATE_MODE
from pipeline.types import EndedTrack, EndedTrackSummary, Frame, MatchedFrame, TrackedFrame, TrackView
from tools.reports import save_figure, write_csv

pytestmark = pytest.mark.usefixtures("one_torch_thread")
DLIB = EMBEDDERS["dlib-resnet-v1"]
LOOSE = 0o644


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def loose(path: Path, content: bytes = b"old contents\n") -> Path:
    """A file left world-readable by an older version, ``cp`` or a umask."""
    path.write_bytes(content)
    path.chmod(LOOSE)
    assert mode(path) == LOOSE
    return path


@pytest.fixture(params=["fresh", "reused"])
def reuse(request) -> Iterator[bool]:
    """Each test runs twice: creating its files under umask 0, and over existing 0644 files."""
    old = os.umask(0)
    try:
        yield request.param == "reused"
    finally:
        os.umask(old)


def gallery_with_alice(path: Path) -> None:
    g = Gallery.create(path, DLIB.model_id, DLIB.dim)
    v = np.zeros((2, DLIB.dim), np.float32)
    v[0, 0], v[1, 1] = 1.0, 1.0
    v[1] = (v[0] + v[1]) / np.linalg.norm(v[0] + v[1])
    c = v.mean(0) / np.linalg.norm(v.mean(0))
    g.replace_identities([Identity("alice", c, v, np.zeros(2, bool), ["a1.jpg", "a2.jpg"], ["s1", "s2"])],
                         keep_others=True)
    g.close()


def test_gallery_and_its_journal_are_private(tmp_path: Path, reuse: bool, cli) -> None:
    path = tmp_path / "g.db"
    gallery_with_alice(path)
    assert mode(path) == PRIVATE_MODE  # created 0600 under umask 0
    if reuse:
        path.chmod(LOOSE)
    # A write through the real command: the file, and the rollback journal SQLite makes for the write.
    rc, _, err = cli("gallery", "rename", "alice", "Alice", "--gallery", path)
    assert rc == 0, err
    assert mode(path) == PRIVATE_MODE
    if reuse:
        path.chmod(LOOSE)
    g = Gallery.open(path)
    g.conn.execute("BEGIN IMMEDIATE")
    g.conn.execute("UPDATE meta SET value = 'x' WHERE key = 'updated'")
    journal = path.with_name(path.name + "-journal")
    assert journal.exists() and mode(journal) == PRIVATE_MODE and mode(path) == PRIVATE_MODE
    g.conn.rollback()
    g.close()
    if reuse:  # Gallery.create over an existing gallery (`gallery build --out` on it) tightens it too
        path.chmod(LOOSE)
        stale = loose(journal, b"")  # an empty leftover journal next to it
        Gallery.create(path, DLIB.model_id, DLIB.dim).close()
        assert mode(path) == PRIVATE_MODE
        assert stale.exists() and mode(stale) == PRIVATE_MODE  # SQLite keeps an empty journal; we tighten it
        # Reading it tightens it as well: the file names people whoever opens it.
        path.chmod(LOOSE)
        rc, out, err = cli("gallery", "list", "--gallery", path)
        assert rc == 0 and out.split()[0] == "Alice", err
        assert mode(path) == PRIVATE_MODE


def test_embedding_cache_is_private(tmp_path: Path, reuse: bool) -> None:
    path = tmp_path / "cache" / "embeddings.sqlite"
    if reuse:
        path.parent.mkdir()
        with closing(EmbeddingCache(path)) as c:
            c.put_many([("s1", "ctx", CachedFace(np.ones(4, np.float32), None, {}))])
        for p in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
            if p.exists():
                p.chmod(LOOSE)
    cache = EmbeddingCache(path)
    cache.put_many([("s2", "ctx", CachedFace(None, "no face detected", {}))])
    side = [p for p in (path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")) if p.exists()]
    assert side, "WAL mode makes -wal and -shm files while open"
    assert {p.name: mode(p) for p in [path, *side]} == {p.name: PRIVATE_MODE for p in [path, *side]}
    assert cache.get("s2", "ctx").reason == "no face detected"
    cache.close()


def test_gallery_export_is_private(tmp_path: Path, reuse: bool, cli) -> None:
    path = tmp_path / "g.db"
    gallery_with_alice(path)
    prefix = tmp_path / "export"
    npz, meta = Path(f"{prefix}.npz"), Path(f"{prefix}.json")
    if reuse:
        loose(npz, b"x" * 10_000)  # longer than the new file: it must be truncated, not overwritten in place
        loose(meta, b"{" * 10_000)
    rc, out, err = cli("gallery", "export", "--gallery", path, "--out", prefix, "--json")
    assert rc == 0, err
    assert json.loads(out) == {"npz": str(npz), "json": str(meta)}
    assert (mode(npz), mode(meta)) == (PRIVATE_MODE, PRIVATE_MODE)
    with np.load(npz) as z:
        assert z["names"].tolist() == ["alice"] and z["templates"].shape == (2, DLIB.dim)
    assert json.loads(meta.read_text())["identities_list"][0]["name"] == "alice"


def test_gallery_build_report_and_calibration_plot_are_private(tmp_path: Path, data_dir: Path, reuse: bool,
                                                               cli) -> None:
    knn = data_dir / "face_recognition_examples" / "knn_examples" / "train"
    src = link_photos(tmp_path / "src", knn, {"obama": ["obama.jpg", "obama2.jpg"],
                                                      "biden": ["biden.jpg", "biden2.jpg"]})
    (src / "biden" / "notes.jpg").write_text("not a photo\n")  # one skipped file: skipped.csv has a row
    out, report, png = tmp_path / "g.db", tmp_path / "report", tmp_path / "roc.png"
    reports = [report / n for n in ("skipped.csv", "mislabelled.csv", "close_identities.csv")]
    if reuse:
        gallery_with_alice(out)  # `build --out` rebuilds an existing gallery
        out.chmod(LOOSE)
        report.mkdir()
        for p in [*reports, png]:
            loose(p)
    rc, _, err = cli("gallery", "build", src, "--out", out, "--report", report, "--json")
    assert rc == 0, err
    assert {p.name: mode(p) for p in [out, *reports]} == {p.name: PRIVATE_MODE for p in [out, *reports]}
    assert "notes.jpg" in reports[0].read_text()
    rc, _, err = cli("gallery", "calibrate", out, "--roc-png", png)
    assert rc == 0, err
    assert mode(png) == PRIVATE_MODE and png.read_bytes().startswith(b"\x89PNG")


def test_identify_report_is_private(tmp_path: Path, data_dir: Path, reuse: bool, stills_gallery: Path, cli) -> None:
    stills = data_dir / "face_recognition_examples" / "stills"
    probes = tmp_path / "probes"
    for name, photo in (("barack_obama", "obama_small.jpg"), ("joe_biden", "biden.jpg")):
        (probes / name).mkdir(parents=True)
        (probes / name / photo).symlink_to(stills / photo)
    report = tmp_path / "report"
    files = [report / n for n in ("predictions.csv", "per_identity.csv", "failed.csv", "confusion.png", "scores.png")]
    if reuse:
        report.mkdir()
        for p in files:
            loose(p)
    rc, out, err = cli("eval", "identify", "--gallery", stills_gallery, "--probes", probes, "--report", report,
                       "--json")
    assert rc == 0, err
    assert json.loads(out)["probes"] == 2
    assert {p.name: mode(p) for p in files} == {p.name: PRIVATE_MODE for p in files}
    assert "barack_obama" in files[0].read_text()


def test_report_helpers_are_private(tmp_path: Path, reuse: bool) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    csv_path, png, svg = tmp_path / "t.csv", tmp_path / "f.png", tmp_path / "f.svg"
    if reuse:
        for p in (csv_path, png, svg):
            loose(p, b"z" * 100_000)
    write_csv(csv_path, ["identity"], [{"identity": "alice"}])
    fig, ax = plt.subplots()
    ax.plot([0, 1], [0, 1])
    save_figure(fig, png, dpi=50)
    save_figure(fig, svg, dpi=50)
    with pytest.raises(ValueError, match=r"cannot write a plot to .*f\.xyz: unknown format 'xyz' \(use one of"):
        save_figure(fig, tmp_path / "f.xyz", dpi=50)
    assert not (tmp_path / "f.xyz").exists()
    plt.close(fig)
    assert [mode(p) for p in (csv_path, png, svg)] == [PRIVATE_MODE] * 3
    assert csv_path.read_text().split() == ["identity", "alice"]
    assert png.read_bytes().startswith(b"\x89PNG") and b"<svg" in svg.read_bytes()[:1000]


@pytest.fixture(scope="module")
def clip_frames(data_dir: Path) -> list[np.ndarray]:
    """Three real frames of the Hamilton clip (Miranda on screen), RGB."""
    cap = cv2.VideoCapture(str(data_dir / "face_recognition_examples" / "video" / "short_hamilton_clip.mp4"))
    cap.set(cv2.CAP_PROP_POS_FRAMES, 100)
    frames = []
    for _ in range(3):
        ok, bgr = cap.read()
        assert ok
        frames.append(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
    cap.release()
    return frames


def matched(source: str, i: int, image: np.ndarray, end: bool) -> MatchedFrame:
    frame = Frame(source, i, i / 30.0, 0.0, image, live=False)
    track = TrackView(1, (250.0, 60.0, 350.0, 180.0), None, 0, i + 1)
    ended = (EndedTrackSummary(EndedTrack(1, 0, i, 0.0, i / 30.0, i + 1), "lin_manuel_miranda", 0.97),) if end else ()
    return MatchedFrame(TrackedFrame(frame, (track,), (), tuple(e.ended for e in ended)), (), ended)


def test_timeline_csv_and_annotated_video_are_private(tmp_path: Path, reuse: bool,
                                                      clip_frames: list[np.ndarray]) -> None:
    csv_path, video = tmp_path / "timeline.csv", tmp_path / "clip.annotated.mp4"
    if reuse:
        loose(csv_path, b"x" * 100_000)
        loose(video, b"x" * 10_000_000)  # larger than the new video: truncated, not left with old bytes
    timeline, annotator = Timeline(), Annotator(tmp_path, {"clip": 30.0})
    claims = {1: "lin_manuel_miranda"}
    for i, image in enumerate(clip_frames):
        msg = matched("clip", i, image, end=i == len(clip_frames) - 1)
        timeline.observe(msg, claims)
        annotator.observe(msg, claims)
        assert mode(video) == PRIVATE_MODE  # from the first frame on, not only once it is finished
    annotator.source_ended("clip")
    timeline.write(csv_path)
    assert (mode(csv_path), mode(video)) == (PRIVATE_MODE, PRIVATE_MODE)
    assert "lin_manuel_miranda" in csv_path.read_text()
    assert video.stat().st_size < 10_000_000
    cap = cv2.VideoCapture(str(video))
    assert int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == len(clip_frames)
    cap.release()
