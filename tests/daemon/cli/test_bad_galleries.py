"""Every way a file can fail to be a usable gallery gives one line naming the file and the reason: from
:meth:`Gallery.open` (a :class:`GalleryError`) and from the real ``facestream`` process (stderr, exit 2,
no traceback), and the file is left as it was."""

from __future__ import annotations

import os
import random
import shutil
import sqlite3
import stat
import subprocess
import sys
from collections.abc import Callable
from contextlib import closing
from pathlib import Path

import numpy as np
import pytest
from cli_helpers import REPO, one_error_line

from models.registry import EMBEDDERS
from pipeline.gallery import Gallery, GalleryError, Identity
from pipeline.gallery.sqlite import APP_ID, SCHEMA_VERSION

DLIB = EMBEDDERS["dlib-resnet-v1"]


def _foreign(path: Path) -> None:
    with closing(sqlite3.connect(path)) as conn:
        conn.executescript("CREATE TABLE invoices (id INTEGER PRIMARY KEY, total REAL); "
                           "INSERT INTO invoices(total) VALUES (9.5);")


def _newer(path: Path) -> None:
    Gallery.create(path, DLIB.model_id, DLIB.dim).close()
    with closing(sqlite3.connect(path)) as conn:
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")


def _marked_but_empty(path: Path) -> None:
    """Our application id on a database without our tables (a half-written or hand-made file)."""
    with closing(sqlite3.connect(path)) as conn:
        conn.executescript(f"PRAGMA application_id = {APP_ID}; CREATE TABLE meta (key TEXT, value TEXT);")


def _truncated(path: Path) -> None:
    """A real gallery cut short after its SQLite header."""
    whole = path.with_name("whole.db")
    Gallery.create(whole, DLIB.model_id, DLIB.dim).close()
    path.write_bytes(whole.read_bytes()[:1024])
    whole.unlink()


# name -> (how to make it, what the one-line error must say)
BAD: dict[str, tuple[Callable[[Path], object], str]] = {
    "missing": (lambda p: None, "does not exist"),
    "directory": (lambda p: p.mkdir(), "is a directory, not a gallery file"),
    "zero_bytes": (lambda p: p.write_bytes(b""), "is an empty file (0 bytes), not a facestream gallery"),
    "random_bytes": (lambda p: p.write_bytes(random.Random(7).randbytes(8192)),
                     "is not a facestream gallery (not an SQLite database)"),
    "text": (lambda p: p.write_text("alice,bob\ncarol,dave\n" * 50), "is not a facestream gallery (not an SQLite"),
    "truncated": (_truncated, "is not a facestream gallery (damaged SQLite file"),
    "foreign_sqlite": (_foreign, "is not a facestream gallery (an SQLite database of another application)"),
    "newer_schema": (_newer, f"has schema {SCHEMA_VERSION + 1}, newer than this facestream supports "
                             f"({SCHEMA_VERSION}); upgrade facestream"),
    "marked_without_tables": (_marked_but_empty, "is damaged: table(s) faces, identities, sources, templates missing"),
}


def state(path: Path) -> object:
    """What must not change: the bytes and mode of a file (another application's file is not tightened), the
    listing of a folder, or that nothing is there."""
    if path.is_dir():
        return sorted(os.listdir(path))
    return (path.read_bytes(), stat.S_IMODE(path.stat().st_mode)) if path.exists() else None


@pytest.fixture(scope="module")
def bad(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("bad_galleries")
    out = {}
    for name, (make, _) in BAD.items():
        out[name] = root / f"{name}.db"
        make(out[name])
        if out[name].is_file():
            out[name].chmod(0o644)
    return out


@pytest.fixture(scope="module")
def env(tmp_path_factory) -> dict[str, str]:
    """A clean environment for the console script: cache out of $HOME, one CPU thread."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("FACESTREAM_")}
    return {**base, "XDG_CACHE_HOME": str(tmp_path_factory.mktemp("xdg_cache")), "OMP_NUM_THREADS": "1",
            "FACESTREAM_EMBEDDER__RUNTIME": "torch"}


def facestream(env: dict[str, str], *argv: object) -> subprocess.CompletedProcess[str]:
    """The installed ``facestream`` console script (its entry point, run in-process, where it is not on PATH)."""
    script = shutil.which("facestream", path=str(Path(sys.executable).parent)) or shutil.which("facestream")
    cmd = [script] if script else [sys.executable, "-c", "import sys; from daemon.cli import main; "
                                                         "sys.exit(main(sys.argv[1:]))"]
    return subprocess.run([*cmd, *map(str, argv)], cwd=REPO, env=env, capture_output=True, text=True, timeout=120)


def assert_one_line_failure(proc: subprocess.CompletedProcess[str], path: Path, reason: str) -> None:
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    assert proc.stdout == ""
    assert "Traceback" not in proc.stderr
    one_error_line(proc.stderr, str(path), reason)


@pytest.mark.parametrize("name", list(BAD))
def test_open_and_create_refuse_with_one_line(bad: dict[str, Path], name: str) -> None:
    path, reason = bad[name], BAD[name][1]
    before = state(path)
    for attempt in (lambda: Gallery.open(path), lambda: Gallery.open(path, DLIB.model_id)):
        with pytest.raises(GalleryError) as err:
            attempt()
        msg = str(err.value)
        assert str(path) in msg and reason in msg and "\n" not in msg, msg
    if name != "missing":  # a missing file is what create makes; anything else there is never adopted
        with pytest.raises(GalleryError) as err:
            Gallery.create(path, DLIB.model_id, DLIB.dim)
        assert reason in str(err.value), str(err.value)
    assert state(path) == before


# list and info on every kind; the commands that would write on a few.
CLI_CASES = [(name, cmd) for name in BAD for cmd in ("list", "info")] + [
    (name, cmd) for name in ("zero_bytes", "random_bytes", "foreign_sqlite") for cmd in ("export", "remove", "add")]


@pytest.mark.parametrize(("name", "command"), CLI_CASES)
def test_cli_gallery_commands_fail_with_one_line(bad: dict[str, Path], env: dict[str, str], tmp_path: Path,
                                                 data_dir: Path, name: str, command: str) -> None:
    path, reason = bad[name], BAD[name][1]
    before = state(path)
    photo = data_dir / "face_recognition_examples" / "stills" / "biden.jpg"
    argv = {"list": ["list"], "info": ["info"], "export": ["export", "--out", tmp_path / "out"],
            "remove": ["remove", "someone"], "add": ["add", "someone", photo]}[command]
    proc = facestream(env, "gallery", *argv, "--gallery", path)
    assert_one_line_failure(proc, path, reason)
    assert state(path) == before
    assert not list(tmp_path.iterdir())  # nothing exported


def test_cli_calibrate_and_identify_name_the_bad_file(bad: dict[str, Path], env: dict[str, str],
                                                      data_dir: Path) -> None:
    for name in ("zero_bytes", "foreign_sqlite", "newer_schema", "directory"):
        path, reason = bad[name], BAD[name][1]
        assert_one_line_failure(facestream(env, "gallery", "calibrate", path), path, reason)
        assert_one_line_failure(facestream(env, "eval", "identify", "--gallery", path, "--probes",
                                           data_dir / "five_celebrity" / "val"), path, reason)


@pytest.fixture(scope="module")
def other_models(tmp_path_factory) -> dict[str, Path]:
    """Galleries of the dlib model, of a model this facestream does not have, and of an older dlib version,
    each with one identity so every command gets as far as the model."""
    root = tmp_path_factory.mktemp("other_models")
    out = {}
    for key, model_id, dim in (("dlib", DLIB.model_id, DLIB.dim), ("unknown", "arcface-r100@3", 512),
                               ("older", "dlib-resnet-v1@1", DLIB.dim)):
        g = Gallery.create(root / f"{key}.db", model_id, dim)
        v = np.zeros((2, dim), np.float32)
        v[:, 0] = 1.0
        g.replace_identities([Identity("alice", v[0], v, np.zeros(2, bool), ["a1.jpg", "a2.jpg"], ["s1", "s2"])],
                             keep_others=True)
        g.close()
        out[key] = root / f"{key}.db"
    return out


def test_another_models_gallery_fails_with_one_line(other_models: dict[str, Path], env: dict[str, str],
                                                    tmp_path: Path, data_dir: Path) -> None:
    dlib = other_models["dlib"]
    before = state(dlib)
    with pytest.raises(GalleryError, match=rf"gallery {dlib} was built with model {DLIB.model_id}; this run uses "
                                           "facenet-vggface2@1 \\(pass --model to match"):
        Gallery.open(dlib, EMBEDDERS["facenet-vggface2"].model_id)
    # Rebuilding it with another model is refused before anything is embedded or written.
    src = tmp_path / "src" / "alice"
    src.mkdir(parents=True)
    (src / "1.jpg").symlink_to(data_dir / "face_recognition_examples" / "stills" / "biden.jpg")
    proc = facestream(env, "gallery", "build", tmp_path / "src", "--out", dlib, "--model", "facenet-vggface2")
    assert_one_line_failure(proc, dlib, f"was built with model {DLIB.model_id}; this run uses facenet-vggface2@1")
    assert state(dlib) == before

    photo = data_dir / "face_recognition_examples" / "stills" / "biden.jpg"
    probes = data_dir / "five_celebrity" / "val"
    unknown = "was built with model arcface-r100@3, which this facestream does not have"
    older = f"was built with dlib-resnet-v1@1; this facestream embeds with {DLIB.model_id}"
    for key, reason in (("unknown", unknown), ("older", older)):
        path = other_models[key]
        before = state(path)
        assert_one_line_failure(facestream(env, "gallery", "add", "bob", photo, "--gallery", path), path, reason)
        assert_one_line_failure(facestream(env, "eval", "identify", "--gallery", path, "--probes", probes),
                                path, reason)
        assert state(path) == before
        # Listing needs no model: another model's gallery can still be inspected.
        proc = facestream(env, "gallery", "list", "--gallery", path)
        assert proc.returncode == 0 and proc.stdout.split()[0] == "alice", proc.stderr
