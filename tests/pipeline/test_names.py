"""The one identity-name rule (pipeline/names.py) at every entry point: CSV, folders, ``gallery rename``, the
API; look-alike names refused; names from before the rule still open; file names derived from a name never
leave their folder (a hypothesis test over arbitrary strings)."""

from __future__ import annotations

import contextlib
import csv
import io
import sqlite3
import tempfile
from pathlib import Path

import numpy as np
import pytest
import requests
from http_helpers import Served
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from daemon.cli import main as cli
from pipeline.csv_files import write_rows
from pipeline.gallery import Gallery, GalleryError, Identity
from pipeline.gallery.photo_list import collect_sources
from pipeline.names import BadName, check_new_name, clean_name, file_stem, inside, name_key

TRAVERSAL = ["../../../escaped_lin", "a/b", "a\\b", "..", "new\nline", "\x1b[31mred", "nul\x00", "=cmd|calc", "",
             " ", "x" * 65, "-dash", "\u202egnp.exe", "zero\u200bwidth"]


def _synthetic_gallery(path: Path, names: list[str]) -> Path:
    """A gallery of unit vectors (no torch): enough for names, renames and calibration."""
    from models.registry import model_id_for

    rng = np.random.default_rng(0)
    g = Gallery.create(path, model_id_for("dlib-resnet-v1", False), 128)
    people = []
    for n in names:
        vecs = rng.normal(size=(2, 128)).astype(np.float32)
        vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
        c = vecs.mean(0)
        people.append(Identity(n, c / np.linalg.norm(c), vecs, np.zeros(2, bool), [f"/photos/{n}/{i}.jpg" for i in
                                                                                    range(2)], [f"{n}{i}" for i in
                                                                                                range(2)]))
    g.replace_identities(people, keep_others=False)
    g.close()
    return path


@pytest.mark.parametrize("raw", TRAVERSAL)
def test_names_that_could_steer_a_file_or_a_terminal_are_refused_in_one_line(raw: str) -> None:
    with pytest.raises(BadName) as exc:
        clean_name(raw)
    assert "\n" not in str(exc.value) and len(str(exc.value)) < 300


def test_look_alike_and_case_variants_collide_and_fullwidth_is_normalised() -> None:
    assert clean_name("ｊｏｅ") == "joe"
    assert name_key("аdmin") == name_key("admin")  # Cyrillic а
    assert name_key("JOE_BIDEN") == name_key("joe_biden") == name_key("Joe Biden")
    assert name_key("bob") != name_key("rob")
    for new in ("аdmin", "ADMIN", "Admin"):
        with pytest.raises(BadName, match="too like the existing 'admin'"):
            check_new_name(new, ["admin", "joe"])
    assert check_new_name("admin", ["admin"]) == "admin"  # the same person: more photos of them
    assert check_new_name("Admin", ["admin"], same="admin") == "Admin"  # renaming oneself


def test_csv_and_folder_sources_refuse_bad_and_colliding_names(tmp_path: Path) -> None:
    for bad in ("../../../escaped_lin", "JOE_BIDEN"):
        lst = tmp_path / f"list{len(bad)}.csv"
        lst.write_text(f"filename,identity\na.jpg,joe_biden\nb.jpg,{bad}\n")
        with pytest.raises(ValueError) as exc:
            collect_sources(lst)
        assert "\n" not in str(exc.value) and ("bad identity name" in str(exc.value) or "too alike" in str(exc.value))
    folders = tmp_path / "folders"
    (folders / "a\x1b[2Jb").mkdir(parents=True)
    (folders / "a\x1b[2Jb" / "p.jpg").write_bytes(b"x")
    with pytest.raises(ValueError, match="bad identity name"):
        collect_sources(folders)
    # Probes' labels are compared, never stored: an evaluation CSV may keep any label.
    lst = tmp_path / "probes.csv"
    lst.write_text("filename,identity\na.jpg,=odd label\n")
    assert collect_sources(lst, strict=False)[0].identity == "=odd label"


def test_gallery_build_of_a_traversal_csv_exits_2_and_writes_no_gallery(tmp_path: Path, capsys) -> None:
    lst = tmp_path / "list.csv"
    lst.write_text("filename,identity\nphoto.jpg,../../../escaped_lin\n")
    assert cli(["gallery", "build", str(lst), "--out", str(tmp_path / "g.db")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "bad identity name" in err[0]
    assert not (tmp_path / "g.db").exists()


def test_rename_refuses_bad_and_look_alike_names_and_an_old_bad_name_opens_with_a_hint(tmp_path: Path,
                                                                                        capsys) -> None:
    g = _synthetic_gallery(tmp_path / "g.db", ["admin", "joe_biden"])
    for new in ("../../../escaped", "ADMIN", "аdmin"):
        assert cli(["gallery", "rename", "joe_biden", new, "--gallery", str(g)]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("facestream: error: "), err
    with sqlite3.connect(g) as conn:  # a name stored before the rule
        conn.execute("UPDATE identities SET name = '../../../escaped_lin' WHERE name = 'admin'")
    assert Gallery.open(g).bad_names() == ["../../../escaped_lin"]
    assert cli(["gallery", "list", "--gallery", str(g)]) == 0
    out = capsys.readouterr()
    assert "../../../escaped_lin" in out.out and "rename it with 'facestream gallery rename" in out.err
    assert cli(["gallery", "rename", "../../../escaped_lin", "lin_manuel_miranda", "--gallery", str(g)]) == 0
    assert Gallery.open(g).bad_names() == []


_NAMES = st.one_of(
    st.text(max_size=80),
    st.from_regex(r"[A-Za-z0-9ÀÉçßø][A-Za-z0-9ÀÉçßø ._'\-]{0,70}", fullmatch=True),
    st.text(alphabet=st.characters(categories=["L", "N", "Zs", "Pd", "Po", "Cc", "Cf", "Sm"]), min_size=1,
            max_size=70),
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(raw=_NAMES)
def test_every_string_is_refused_in_one_line_or_round_trips_without_leaving_its_folder(raw: str, capsys) -> None:
    try:
        name = clean_name(raw)
    except BadName as exc:
        assert "\n" not in str(exc) and len(str(exc)) < 400
        return
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        # CSV: written by our writer, read back by the gallery builder's reader
        write_rows(folder / "list.csv", ["filename", "identity"], [["a.jpg", name]])
        assert [s.identity for s in collect_sources(folder / "list.csv")] == [name]
        with (folder / "list.csv").open(newline="", encoding="utf-8") as f:
            assert list(csv.reader(f))[1][1] == name
        # every file name derived from it: one component, inside its folder
        stem = file_stem(name)
        assert stem and "/" not in stem and "\\" not in stem and not stem.startswith(".")
        assert stem.isascii() and inside(folder, f"best/{stem}.jpg").parent == (folder / "best").resolve()
        # the CLI: rename into it and back, the gallery stores it as given
        g = _synthetic_gallery(folder / "g.db", ["someone_else_entirely"])
        rc = cli(["gallery", "rename", "someone_else_entirely", name, "--gallery", str(g)])
        capsys.readouterr()
        assert rc == 0, name
        assert Gallery.open(g).names() == [name]


@pytest.fixture(scope="module")
def names_api(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("names_api")
    g = _synthetic_gallery(tmp / "g.db", ["person_zero"])
    s = Served(["serve", "--gallery", str(g)], tmp / "serve.log")
    s.gallery = g
    yield s
    s.stop()


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(raw=_NAMES)
def test_the_api_applies_the_same_rule_and_round_trips_what_it_accepts(names_api, raw: str) -> None:
    current = names_api.get("/v1/identities").json()["identities"][0]["name"]
    r = names_api.request("PATCH", f"/v1/identities/{requests.utils.quote(current, safe='')}", json={"name": raw})
    try:
        name = clean_name(raw)
    except BadName:
        assert r.status_code == 422 and "\n" not in r.json()["error"]["message"], r.text
        return
    assert r.status_code == 200, r.text
    assert r.json()["to"] == name
    assert [p["name"] for p in names_api.get("/v1/identities").json()["identities"]] == [name]
    with contextlib.closing(Gallery.open(names_api.gallery)) as g:
        assert g.names() == [name]


def test_a_low_level_write_of_a_bad_name_is_refused_too(tmp_path: Path) -> None:
    g = Gallery.open(_synthetic_gallery(tmp_path / "g.db", ["ok_name"]))
    bad = Identity("../x", np.ones(128, np.float32) / np.sqrt(128), np.zeros((0, 128), np.float32), np.zeros(0, bool),
                   [], [])
    with pytest.raises(GalleryError, match="bad identity name"):
        g.replace_identities([bad], keep_others=True)
    shout = Identity("OK_NAME", bad.centroid, bad.templates, bad.outlier, [], [])
    with pytest.raises(GalleryError, match="too like"):
        g.replace_identities([shout], keep_others=True)
    assert g.names() == ["ok_name"]


def test_csv_cells_that_spreadsheets_would_run_are_escaped(tmp_path: Path) -> None:
    from daemon.profiles.attendance import write_report_csv
    from daemon.profiles.outputs import Timeline

    write_rows(tmp_path / "a.csv", ["name", "score"], [["=HYPERLINK(\"http://x\")", -0.5], ["+1", 1], ["@x", 2],
                                                       ["-2+3", 3], ["plain", 4], ["\tx", 5]])
    rows = list(csv.reader(io.StringIO((tmp_path / "a.csv").read_text())))
    assert [r[0] for r in rows[1:]] == ["'=HYPERLINK(\"http://x\")", "'+1", "'@x", "'-2+3", "plain", "'\tx"]
    assert rows[1][1] == "-0.5"  # numbers stay numbers
    t = Timeline()
    t.spans[("cam", "=1+1")].append((0.0, 1.0))
    t.write(tmp_path / "t.csv")
    assert "'=1+1" in (tmp_path / "t.csv").read_text()
    report = {"date": "2026-12-02", "present": [], "unexpected": [], "absent": ["@SUM(A1)"]}
    write_report_csv(report, tmp_path / "r.csv")
    assert "'@SUM(A1)" in (tmp_path / "r.csv").read_text()
