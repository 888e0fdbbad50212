"""Gallery file, build, calibration and matchers in-process: bad inputs, opening errors, synthetic units."""

from __future__ import annotations

import csv
import hashlib
import os
import shutil
import sqlite3
import stat
from contextlib import closing
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pipeline.gallery import Gallery, GalleryError, Identity
from pipeline.gallery.calibration import MARGINS, calibrate, trial_scores
from pipeline.gallery.enrol import QualityGates, build, find_conflicts, trimmed_centroid
from pipeline.gallery.photo_list import Source, collect_sources
from pipeline.gallery.sqlite import SCHEMA_VERSION
from pipeline.gallery.stills import NO_FACE, StillEmbedder
from pipeline.images import load_rgb
from pipeline.match import CentroidMatcher, SvmMatcher, decide, interpolate_augment

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def unit(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


def person(name: str, templates: np.ndarray) -> Identity:
    centroid, outlier = trimmed_centroid(templates)
    n = len(templates)
    return Identity(name, centroid, templates, outlier, [f"{name}/{i}.jpg" for i in range(n)],
                    [f"{name}-{i}" for i in range(n)])


def cluster(rng: np.random.Generator, centre: np.ndarray, n: int, noise: float) -> np.ndarray:
    return unit(centre + noise * rng.normal(size=(n, len(centre))))


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# ---- units: centroid, matchers, decision, calibration, sources ----------------------------------


def test_trimmed_centroid_flags_planted_outlier_only() -> None:
    rng = np.random.default_rng(0)
    e1, e2 = np.eye(8)[0], np.eye(8)[1]
    clean = cluster(rng, e1, 5, 0.05)
    vecs = np.vstack([clean, cluster(rng, e2, 1, 0.05)])
    centroid, outlier = trimmed_centroid(vecs)
    assert outlier.tolist() == [False] * 5 + [True]
    assert centroid.dtype == np.float32 and abs(float(np.linalg.norm(centroid)) - 1) < 1e-5
    # The outlier does not pull the centroid: it is the mean direction of the five clean templates.
    assert np.allclose(centroid, unit(clean.mean(0)), atol=1e-5)
    assert float(centroid @ e1) > 0.99
    _, outlier = trimmed_centroid(np.vstack([clean, cluster(rng, e1, 1, 0.05)]))
    assert not outlier.any()
    # Fewer than 3 templates are never judged, however far apart.
    _, outlier = trimmed_centroid(unit(np.eye(8)[:2]))
    assert not outlier.any()


def test_decide_applies_threshold_and_margin() -> None:
    cands = [("alice", 0.95), ("bob", 0.90), ("carol", 0.2)]
    d = decide(cands, threshold=0.9, margin=0.03)
    assert (d.identity, d.score, round(d.margin, 6)) == ("alice", 0.95, 0.05)
    assert d.candidates == cands
    assert decide(cands, threshold=0.96, margin=0.0).identity is None  # below threshold
    rejected = decide(cands, threshold=0.9, margin=0.06)  # top-2 too close
    assert rejected.identity is None and rejected.score == 0.95 and round(rejected.margin, 6) == 0.05
    exact = [("alice", 0.75), ("bob", 0.5)]  # exactly representable: both limits are inclusive
    assert decide(exact, threshold=0.75, margin=0.25).identity == "alice"
    assert decide(exact, threshold=0.75, margin=0.2500001).identity is None
    alone = decide([("alice", 0.5)], threshold=0.5, margin=1.4)  # no runner-up: top-2 counts as -1
    assert alone.identity == "alice" and alone.margin == 1.5
    empty = decide([], 0.0, 0.0)
    assert (empty.identity, empty.score, empty.candidates) == (None, 0.0, [])


def test_centroid_matcher_topk_orders_by_cosine() -> None:
    eye = np.eye(4, dtype=np.float32)
    people = [Identity(n, eye[i], eye[i : i + 1], np.zeros(1, bool), [n], [n]) for i, n in enumerate("abc")]
    m = CentroidMatcher(people)
    q = unit(np.array([[0.4, 0.9, 0.1, 0.0], [0.0, 0.1, 0.3, 0.9]]))
    top = m.topk(q, 5)
    assert [[n for n, _ in row] for row in top] == [["b", "a", "c"], ["c", "b", "a"]]
    for row, qv in zip(top, q, strict=True):
        assert [s for _, s in row] == sorted((s for _, s in row), reverse=True)
        assert np.allclose([s for _, s in row], [qv[ord(n) - ord("a")] for n, _ in row], atol=1e-6)
    assert [len(r) for r in m.topk(q, 1)] == [1, 1]
    assert CentroidMatcher([]).topk(q, 3) == [[], []]


@pytest.mark.parametrize("augment", [False, True])
def test_svm_matcher_ranks_separable_clusters(augment: bool) -> None:
    rng = np.random.default_rng(1)
    eye = np.eye(16)
    people = [person("a", cluster(rng, eye[0], 8, 0.1)), person("b", cluster(rng, eye[1], 5, 0.1)),
              person("single", cluster(rng, eye[2], 1, 0.1))]  # one template: interpolated / noised up
    m = SvmMatcher(people, augment=augment)
    queries = np.vstack([cluster(rng, eye[i], 2, 0.05) for i in range(3)])
    top = m.topk(queries, 3)
    assert [row[0][0] for row in top] == ["a", "a", "b", "b", "single", "single"]
    for row in top:
        assert sorted(n for n, _ in row) == ["a", "b", "single"]
        scores = [s for _, s in row]
        assert scores == sorted(scores, reverse=True) and all(0.0 <= s <= 1.0 for s in scores)
        assert scores[0] > 0.5
    with pytest.raises(ValueError, match="at least 2 identities"):
        SvmMatcher(people[:1])


def test_interpolate_augment_makes_unit_vectors_near_the_class() -> None:
    rng = np.random.default_rng(2)
    one = cluster(rng, np.eye(32)[0], 1, 0.0)
    out = interpolate_augment(one, 4, rng)
    assert out.shape == (4, 32) and np.allclose(np.linalg.norm(out, axis=1), 1, atol=1e-5)
    assert np.array_equal(out[0], one[0]) and (out[1:] @ one[0] > 0.9).all()
    two = unit(np.eye(32)[:2])
    mixed = interpolate_augment(two, 5, rng)[2:]
    assert (mixed[:, :2] > 0.2).all() and np.allclose(mixed[:, 2:], 0)  # on the segment between them
    assert interpolate_augment(two, 2, rng) is two


def test_calibrate_meets_target_far_on_its_own_trials() -> None:
    rng = np.random.default_rng(3)
    people = [person(f"p{k}", cluster(rng, unit(rng.normal(size=32)), 8, 0.12)) for k in range(6)]
    target = 0.05
    fig = calibrate(people, target)
    assert fig["margin"] in MARGINS.tolist() and isinstance(fig["threshold"], float)
    assert fig["far"] <= target and fig["tar"] >= 0.9
    genuine, ok, impostor = trial_scores(people)
    kept = sum(int((~p.outlier).sum()) for p in people)
    assert fig["impostor_trials"] == len(impostor) == kept and fig["genuine_trials"] == len(genuine) == kept
    far = ((impostor[:, 0] >= fig["threshold"]) & (impostor[:, 0] - impostor[:, 1] >= fig["margin"])).mean()
    assert far <= target
    tar = (ok & (genuine[:, 0] >= fig["threshold"]) & (genuine[:, 0] - genuine[:, 1] >= fig["margin"])).mean()
    assert abs(tar - fig["tar"]) < 1e-4
    with pytest.raises(ValueError, match="at least 2 identities"):
        calibrate(people[:1])
    with pytest.raises(ValueError, match="target FAR"):
        calibrate(people, 0.0)
    singles = [person(p.name, p.templates[:1]) for p in people]
    with pytest.raises(ValueError, match="2 or more templates"):
        calibrate(singles)


def test_find_conflicts_flags_mislabelled_template_and_close_pair() -> None:
    rng = np.random.default_rng(4)
    eye = np.eye(16)
    a = person("a", np.vstack([cluster(rng, eye[0], 4, 0.05), cluster(rng, eye[1], 1, 0.05)]))
    b = person("b", cluster(rng, eye[1], 4, 0.05))
    twin = person("twin", cluster(rng, eye[1], 3, 0.05))
    mislabelled, close = find_conflicts([a, b], threshold=0.9)
    assert [(m["path"], m["identity"], m["nearest"]) for m in mislabelled] == [("a/4.jpg", "a", "b")]
    assert close == []
    _, close = find_conflicts([a, b, twin], threshold=0.9)
    assert [(c["a"], c["b"]) for c in close] == [("b", "twin")]


def test_csv_source_role_filter_and_errors(tmp_path: Path, data_dir: Path) -> None:
    lst = tmp_path / "list.csv"
    lst.write_text("filename,identity,role\nx/a.jpg,alice,gallery\nx/b.jpg, alice ,probe\ny/c.jpg,bob,gallery\n")
    assert collect_sources(lst, "gallery") == [Source(tmp_path / "x/a.jpg", "alice"),
                                                Source(tmp_path / "y/c.jpg", "bob")]
    assert [s.identity for s in collect_sources(lst)] == ["alice", "alice", "bob"]
    with pytest.raises(ValueError, match="no rows with role 'nope'"):
        collect_sources(lst, "nope")
    no_id = tmp_path / "no_identity.csv"
    no_id.write_text("filename,name\na.jpg,alice\n")
    with pytest.raises(ValueError, match="CSV needs columns filename,identity"):
        collect_sources(no_id)
    no_role = tmp_path / "no_role.csv"
    no_role.write_text("filename,identity\na.jpg,alice\n")
    with pytest.raises(ValueError, match="no role column"):
        collect_sources(no_role, "gallery")
    latin = tmp_path / "latin1.csv"
    latin.write_bytes("filename,identity\na.jpg,Jos\xe9\n".encode("latin-1"))
    with pytest.raises(ValueError, match="not a UTF-8 CSV"):
        collect_sources(latin)
    with pytest.raises(ValueError, match="neither a folder nor a CSV"):
        collect_sources(tmp_path / "missing.csv")
    with pytest.raises(ValueError, match="--role applies to a CSV"):
        collect_sources(tmp_path, "gallery")
    with pytest.raises(ValueError, match="no identity folders"):
        collect_sources(tmp_path)
    split = data_dir / "lfw" / "identification_split.csv"
    gallery_rows = collect_sources(split, "gallery")
    assert len(gallery_rows) == 790 and len({s.identity for s in gallery_rows}) == 158
    assert all(s.path.is_relative_to(split.parent) for s in gallery_rows)
    assert gallery_rows[0].path.is_file()
    assert len(collect_sources(split, "probe")) == 1751


def test_csv_row_missing_identity_is_a_clear_error(tmp_path: Path) -> None:
    short = tmp_path / "short.csv"
    short.write_text("filename,identity\na.jpg\nb.jpg,bob\n")
    with pytest.raises(ValueError, match=r"short.csv:2: row needs a filename and an identity"):
        collect_sources(short)


# ---- the gallery file ---------------------------------------------------------------------------


def test_opening_foreign_newer_or_other_model_galleries_fails_clearly(tmp_path: Path) -> None:
    text = tmp_path / "notes.db"
    text.write_text("not a database\n" * 200)
    other = tmp_path / "other.sqlite"
    with closing(sqlite3.connect(other)) as conn:
        conn.execute("CREATE TABLE things (x)")
        conn.commit()
    for path in (text, other):
        before = path.read_bytes()
        with pytest.raises(GalleryError, match="is not a facestream gallery"):
            Gallery.open(path)
        with pytest.raises(GalleryError, match="is not a facestream gallery"):
            Gallery.create(path, "m@1", 4)  # never adopts or clobbers a foreign file
        assert path.read_bytes() == before
    with pytest.raises(GalleryError, match="does not exist"):
        Gallery.open(tmp_path / "missing.db")
    with pytest.raises(GalleryError, match="does not exist"):
        Gallery.create(tmp_path / "no_such_folder" / "g.db", "m@1", 4)

    path = tmp_path / "g.db"
    Gallery.create(path, "m@1", 4).close()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    with pytest.raises(GalleryError, match=r"built with model m@1; this run uses other@1"):
        Gallery.open(path, "other@1")
    with pytest.raises(GalleryError, match="built with model m@1"):
        Gallery.create(path, "other@1", 4)
    g = Gallery.open(path, "m@1")
    assert (g.model_id, g.dim, g.version, g.names(), g.threshold) == ("m@1", 4, 0, [], None)
    g.close()
    with closing(sqlite3.connect(path)) as conn:
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    with pytest.raises(GalleryError, match=rf"has schema {SCHEMA_VERSION + 1}, newer than .* upgrade facestream"):
        Gallery.open(path)


@pytest.mark.parametrize("name", ["team#1.db", "what?.db", "50%20off.db", "with space.db"])
def test_gallery_path_with_uri_characters_round_trips(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    g = Gallery.create(path, "m@1", 4)
    g.replace_identities([person("alice", unit(np.eye(4)[:2]))], keep_others=True)
    g.close()
    g = Gallery.open(path, "m@1")
    assert g.names() == ["alice"]
    g.close()
    assert os.listdir(tmp_path) == [name]  # no stray file opened under a truncated name


def test_bad_input_folder_builds_and_reports_each_skipped_file(tmp_path: Path, data_dir: Path, detector,
                                                               dlib_embedder) -> None:
    knn = data_dir / "face_recognition_examples" / "knn_examples" / "train"
    stills = data_dir / "face_recognition_examples" / "stills"
    obama, rose = tmp_path / "src" / "obama", tmp_path / "src" / "rose_leslie"
    obama.mkdir(parents=True)
    rose.mkdir()
    good = (knn / "obama" / "obama.jpg").read_bytes()
    (obama / "a_good.jpg").write_bytes(good)
    shutil.copy(knn / "obama" / "obama2.jpg", obama / "b_good.jpg")
    (obama / "c_copy.jpg").write_bytes(good)
    (obama / "notes.jpg").write_text("this is not an image\n")
    (obama / "empty.jpg").write_bytes(b"")
    (obama / "truncated.jpg").write_bytes(good[: len(good) // 3])
    Image.new("L", (10000, 10000)).save(obama / "huge.png", compress_level=1)
    shutil.copy(data_dir / "images_misc" / "no_faces" / "cat.jpg", obama / "cat.jpg")
    face = load_rgb(stills / "obama-480p.jpg")
    Image.fromarray(np.hstack([face, face])).save(obama / "twins.png")  # two exactly equal faces
    shutil.copy(stills / "two_people.jpg", obama / "two_people.jpg")
    shutil.copy(knn / "rose_leslie" / "img1.jpg", rose / "img1.jpg")
    (rose / "z_obama.jpg").write_bytes(good)  # the same photo filed under another person

    gallery = Gallery.create(tmp_path / "g.db", dlib_embedder.model_id, dlib_embedder.dim)
    engine = StillEmbedder(detector, dlib_embedder, gallery.cache(), policy="dominant")
    result = build(engine, gallery, collect_sources(tmp_path / "src"), QualityGates(), tmp_path / "report",
                   progress=False)

    with (tmp_path / "report" / "skipped.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    reasons = {Path(r["path"]).name: r["reason"] for r in rows}
    assert {Path(r["path"]).name: r["identity"] for r in rows}["z_obama.jpg"] == "rose_leslie"
    assert reasons.keys() == {"c_copy.jpg", "notes.jpg", "empty.jpg", "truncated.jpg", "huge.png", "cat.jpg",
                              "twins.png", "two_people.jpg", "z_obama.jpg"}
    assert reasons["notes.jpg"] == "not an image"
    assert reasons["empty.jpg"] == "empty file"
    assert reasons["truncated.jpg"].startswith("truncated or corrupt")
    assert reasons["huge.png"].startswith("too large")
    assert reasons["cat.jpg"] == NO_FACE
    assert reasons["twins.png"] == reasons["two_people.jpg"] == "2 faces, none clearly dominant"
    assert reasons["c_copy.jpg"] == f"duplicate of {obama / 'a_good.jpg'}"
    assert reasons["z_obama.jpg"] == f"duplicate of {obama / 'a_good.jpg'} (obama)"
    assert result["skipped_files"] == rows
    assert {k: result[k] for k in ("files", "embedded", "from_cache", "enrolled", "identities", "skipped")} == {
        "files": 12, "embedded": 12, "from_cache": 0, "enrolled": 3, "identities": 2, "skipped": 9}
    for name in ("mislabelled.csv", "close_identities.csv"):
        assert (tmp_path / "report" / name).is_file()

    people = {p.name: p for p in Gallery.open(tmp_path / "g.db", dlib_embedder.model_id).identities()}
    assert sorted(people) == ["obama", "rose_leslie"]
    assert people["obama"].paths == [str(obama / "a_good.jpg"), str(obama / "b_good.jpg")]
    assert people["obama"].sha256s == [sha256(obama / "a_good.jpg"), sha256(obama / "b_good.jpg")]
    assert people["obama"].templates.shape == (2, 128) and not people["obama"].outlier.any()
    assert float(people["obama"].templates[0] @ people["obama"].templates[1]) > 0.9
    assert people["rose_leslie"].paths == [str(rose / "img1.jpg")]

    # A rebuild reads every outcome, failures included, from the gallery's cache and reports the same.
    again = build(StillEmbedder(detector, dlib_embedder, gallery.cache(), policy="dominant"), gallery,
                  collect_sources(tmp_path / "src"), QualityGates(), None, progress=False)
    assert (again["embedded"], again["from_cache"], again["skipped_files"]) == (0, 12, rows)
    gallery.close()
