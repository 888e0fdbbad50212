"""The face index of an analysis (issue 21, items 2 and 3), on one real analysis shared by the module: the
Obama clip and the five talking heads (trimmed to 2 s) each played twice under another name. ``search``
finds Obama in his clip only; the unknown talking heads come out as five groups of two; a group is
enrolled through the normal gallery path; bad input is one line and exit 2."""

from __future__ import annotations

import shutil
import sqlite3
import subprocess
from pathlib import Path

import numpy as np
import pytest
from cli_helpers import one_error_line

HEADS = 5
STILLS = "face_recognition_examples/stills"


@pytest.fixture(scope="module")
def archive(tmp_path_factory, data_dir: Path, stills_gallery: Path, one_torch_thread) -> tuple[Path, dict]:
    from daemon.config import load_settings
    from daemon.profiles.analyze import run_analyze

    clips = tmp_path_factory.mktemp("clips")
    videos = [data_dir / "videos" / "known_identity" / "obama_speech.mp4"]
    for k in range(1, HEADS + 1):
        trimmed = clips / f"head{k}.mp4"
        subprocess.run(["ffmpeg", "-loglevel", "error", "-i", str(data_dir / "videos" / "talking_heads" /
                        f"video_retalking_{k}.mp4"), "-t", "2", "-an", "-c:v", "libx264", "-preset", "ultrafast",
                        str(trimmed)], check=True, timeout=60)
        again = clips / f"replay{k}.mp4"  # the same clip played again under another name
        again.symlink_to(trimmed)
        videos += [trimmed, again]
    out = tmp_path_factory.mktemp("archive") / "analysis"
    settings = load_settings(None, embedder={"runtime": "torch"})
    result = run_analyze(settings, stills_gallery, videos, out)
    assert result["exit_code"] == 0
    return out, result


def _person(video: str) -> str:
    return "head" + video.removeprefix("head").removeprefix("replay")


def test_the_index_has_a_row_per_track_with_its_embedding(archive) -> None:
    from pipeline.face_index import FaceIndex

    out, result = archive
    ix = FaceIndex.open(out)
    assert (out / "faces.index").stat().st_mode & 0o777 == 0o600
    assert ix.meta.model_id == "dlib-resnet-v1@2" and ix.meta.threshold == result["threshold"]
    assert len(ix.rows) == result["index_rows"] == len(ix.vectors) >= 1 + 2 * HEADS
    assert np.allclose(np.linalg.norm(ix.vectors, axis=1), 1.0, atol=1e-4)
    for r in ix.rows:
        assert 0.0 <= r["start_s"] <= r["best_time_s"] <= r["end_s"] and r["best_frame"] >= 0, r
    obama = [r for r in ix.rows if r["video"] == "obama_speech"]
    assert obama and all(r["identity"] == "barack_obama" and r["cluster"] is None for r in obama)


def test_unknown_talking_heads_form_five_groups_of_two(archive) -> None:
    from pipeline.face_groups import compare_methods, purity_completeness
    from pipeline.face_index import FaceIndex

    out, result = archive
    ix = FaceIndex.open(out)
    unknown = [(r, v) for r, v in zip(ix.rows, ix.vectors, strict=True) if r["decision"] == "unknown"]
    truth = [_person(r["video"]) for r, _ in unknown]
    labels = [r["cluster"] for r, _ in unknown]
    purity, completeness = purity_completeness(labels, truth)
    print(f"\nunknown grouping: {len(set(labels))} groups of {len(labels)} appearances, purity {purity:.3f}, "
          f"completeness {completeness:.3f} at threshold {ix.meta.threshold:.4f}")
    for row in compare_methods(np.stack([v for _, v in unknown]), truth, ix.meta.threshold):
        print(row)
    groups = result["unknown_groups"]
    assert [(g["appearances"], g["videos"]) for g in groups] == [(2, 2)] * HEADS
    assert purity == completeness == 1.0
    assert {frozenset(r["video"] for r in rows) for rows in ix.clusters().values()} == {
        frozenset({f"head{k}", f"replay{k}"}) for k in range(1, HEADS + 1)}
    page = (out / "report.html").read_text()
    assert "unknown 1: 2 appearances in 2 videos" in page and page.count('class="unknown-face"') == HEADS
    for g in groups:
        assert (out / g["best_face"]).read_bytes()[:2] == b"\xff\xd8"


def test_search_finds_obama_in_his_clip_only_and_nobody_absent(archive, data_dir, cli) -> None:
    import json

    out, _ = archive
    rc, stdout, _ = cli("search", "--photo", data_dir / STILLS / "obama.jpg", "--index", out, "--json")
    hits = json.loads(stdout)["appearances"]
    assert rc == 0 and hits and hits[0]["video"] == "obama_speech", hits
    assert not [h for h in hits if h["video"] != "obama_speech"]
    rc, stdout, _ = cli("search", "--photo", data_dir / STILLS / "biden.jpg", "--index", out, "--json")
    assert rc == 0 and json.loads(stdout)["appearances"] == []


def test_search_can_decide_at_another_gallerys_threshold(archive, data_dir, stills_gallery, cli) -> None:
    import json

    out, result = archive
    rc, stdout, _ = cli("search", "--photo", data_dir / STILLS / "obama2.jpg", "--photo", data_dir / STILLS /
                        "obama.jpg", "--index", out, "--gallery", stills_gallery, "--top", "1", "--json")
    found = json.loads(stdout)
    assert rc == 0 and found["threshold_source"].startswith(f"gallery {stills_gallery}")
    assert found["threshold"] == pytest.approx(result["threshold"], abs=1e-6)  # the gallery the analysis used
    assert [h["video"] for h in found["appearances"]] == ["obama_speech"]


def test_search_refuses_bad_input_in_one_line(archive, data_dir, cli, tmp_path) -> None:
    out, _ = archive
    obama = data_dir / STILLS / "obama.jpg"
    rc, _, err = cli("search", "--photo", obama, "--index", tmp_path / "none")
    assert rc == 2 and one_error_line(err, "no face index at")
    other = tmp_path / "other"
    other.mkdir()
    shutil.copy(out / "faces.index", other / "faces.index")
    with sqlite3.connect(other / "faces.index") as conn:
        conn.execute("""UPDATE meta SET value = '"facenet-vggface2@1"' WHERE key = 'model_id'""")
    rc, _, err = cli("search", "--photo", obama, "--index", out, other)
    assert rc == 2 and one_error_line(err, "different embedders")
    rc, _, err = cli("search", "--photo", obama, "--index", out, "--model", "facenet-vggface2")
    assert rc == 2 and one_error_line(err, "was made with dlib-resnet-v1@2")
    rc, _, err = cli("search", "--photo", data_dir / "images_misc" / "no_faces" / "cat.jpg", "--index", out)
    assert rc == 2 and one_error_line(err, "cat.jpg", "no face")


def test_a_group_is_enrolled_through_the_gallery_gates(archive, stills_gallery, cli, tmp_path) -> None:
    import json

    out, result = archive
    gallery = tmp_path / "g.db"
    shutil.copy(stills_gallery, gallery)
    group = result["unknown_groups"][0]
    rc, stdout, _ = cli("gallery", "add", "--gallery", gallery, "--from-index", out, "--cluster", group["group"],
                        "--name", "first_stranger", "--json")
    assert rc == 0 and json.loads(stdout)["added"] >= 1
    rc, stdout, _ = cli("gallery", "list", "--gallery", gallery, "--json")
    assert "first_stranger" in stdout
    rc, _, err = cli("gallery", "add", "--gallery", gallery, "--from-index", out, "--cluster", "unknown-99",
                     "--name", "nobody")
    assert rc == 2 and one_error_line(err, "no group 'unknown-99'")


def test_a_stored_hnsw_index_answers_as_the_exact_search(archive, tmp_path) -> None:
    from pipeline.face_index import FaceIndex, write_hnsw

    ix = FaceIndex.open(archive[0])
    shutil.copy(archive[0] / "faces.index", tmp_path / "faces.index")
    assert write_hnsw(tmp_path, ix.vectors, faiss_from=1) is not None
    big = FaceIndex.open(tmp_path)
    assert big.hnsw is not None and (tmp_path / "faces.hnsw").stat().st_mode & 0o777 == 0o600
    for q in ix.vectors:
        _, s_exact = ix.search(q, 3)
        _, s_approx = big.search(q, 3)
        assert s_approx[0] == pytest.approx(s_exact[0], abs=1e-5)  # copies tie at 1.0: either row is right
