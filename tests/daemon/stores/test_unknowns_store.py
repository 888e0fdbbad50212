"""The unknown-visitors store on its own (no models): incremental grouping, best faces only, expiry and erasure
that leave no bytes behind, a foreign file refused; and the ``[unknowns]`` settings."""

from __future__ import annotations

import time

import numpy as np
import pytest

from daemon.config import ConfigError, load_settings
from daemon.config.unknowns import UnknownsConfig
from daemon.stores.unknowns import SqliteUnknowns, open_unknowns


def _near(v: np.ndarray, rng: np.random.Generator, spread: float) -> np.ndarray:
    w = v + rng.normal(0, spread, v.shape)
    return (w / np.linalg.norm(w)).astype(np.float32)


def test_grouping_best_faces_expiry_and_erasure_leave_no_bytes(tmp_path) -> None:
    rng = np.random.default_rng(7)
    a, b = (_near(np.zeros(128), rng, 1.0) for _ in range(2))
    path = tmp_path / "g.db.unknowns.db"
    store = SqliteUnknowns(path, max_faces=2)
    old = time.time() - 10 * 86400
    faces = [bytes([i]) * 3000 + b"face-of-a-%d" % i for i in range(3)]
    first = store.assign(_near(a, rng, 0.01), 0.9, "cam1", old, 0.5, faces[0])
    again = [store.assign(_near(a, rng, 0.01), 0.9, src, time.time(), q, f)
             for src, q, f in (("cam2", 0.9, faces[1]), ("cam1", 0.7, faces[2]))]
    ids = {x[0] for x in again}
    assert first[2] == 1 and [x[2] for x in again] == [2, 3]  # appearances of the visitor so far
    other, _, _ = store.assign(_near(b, rng, 0.01), 0.9, "cam1", time.time(), 0.8, b"b" * 3000)
    assert ids == {first[0]} and other != first[0]
    v = store.visitor(first[0])
    assert v is not None and (v["count"], v["cameras"]) == (3, ["cam1", "cam2"]) and len(v["faces"]) == 2
    assert [store.face(first[0], n) for n in v["faces"]] == [faces[1], faces[2]]  # the best two, best first
    store.close()
    assert faces[0] not in path.read_bytes()  # the third face's JPEG was overwritten, not left in a free page
    assert path.stat().st_mode & 0o777 == 0o600

    store = SqliteUnknowns(path, max_faces=2)  # the centroids come back from the file
    assert store.assign(_near(a, rng, 0.01), 0.9, "cam3", time.time(), 0.1, None)[0] == first[0]
    assert store.assign(np.ones(512, np.float32), 0.9, "cam1", time.time(), 0.1, None)[2] == 1  # another model's
    assert store.matching(a, 0.9) == [first[0]] and store.matching(b, 0.9) == [other]
    assert store.expire(time.time() - 7 * 86400) == 1 and store.visitor(first[0])["count"] == 3
    assert store.delete(first[0]) and not store.delete(first[0]) and store.visitor(first[0]) is None
    assert other in [x["id"] for x in store.visitors()] and len(store.visitors()) == 2
    store.close()
    raw = path.read_bytes()
    assert all(f not in raw for f in faces) and b"b" * 3000 in raw


def test_a_foreign_file_or_a_database_url_is_refused_in_one_line(tmp_path) -> None:
    from pipeline.gallery import Gallery

    Gallery.create(tmp_path / "gallery.db", "dlib-resnet-v1@2", 128).close()
    before = (tmp_path / "gallery.db").read_bytes()
    with pytest.raises(ValueError, match="not an unknown-visitors store") as exc:
        SqliteUnknowns(tmp_path / "gallery.db")
    assert (tmp_path / "gallery.db").read_bytes() == before
    assert "\n" not in str(exc.value)
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(ValueError, match="not SQLite"):
        SqliteUnknowns(tmp_path / "notes.txt")
    with pytest.raises(ValueError, match="not in PostgreSQL"):
        open_unknowns("postgresql://db.example/site")


def test_settings_default_on_beside_a_file_off_for_a_database_and_checked() -> None:
    assert UnknownsConfig().active(gallery_is_url=False) and not UnknownsConfig().active(gallery_is_url=True)
    assert not UnknownsConfig(enabled=False).active(gallery_is_url=False)
    with pytest.raises(ValueError, match=r"set unknowns\.path to a file"):
        UnknownsConfig(enabled=True).active(gallery_is_url=True)
    with pytest.raises(ConfigError, match=r"unknowns\.keep_days"):
        load_settings(None, unknowns={"keep_days": 0})
    with pytest.raises(ConfigError, match=r"unknowns\.size"):
        load_settings(None, unknowns={"size": 3})
    s = load_settings(None, unknowns={"path": "visitors.db"}, paths={"state_dir": "/srv/fs"})
    assert str(s.unknowns.path) == "/srv/fs/visitors.db"


@pytest.mark.parametrize("gallery, message", [
    (["--gallery", "postgresql://127.0.0.1:9/site"], "set unknowns.path to a file, or unknowns.enabled = false"),
    ([], "unknown visitors need a gallery"),
])
def test_run_refuses_unknowns_it_cannot_keep_in_one_line_before_any_file(tmp_path, cli, gallery, message) -> None:
    config = tmp_path / "c.toml"
    config.write_text("[unknowns]\nenabled = true\n")
    rc, out, err = cli("run", "--config", config, *gallery, "--source", tmp_path / "none.mp4", "--zmq", "",
                       "--events-jsonl", tmp_path / "e.jsonl")
    assert rc == 2 and out == "" and message in err and len(err.strip().splitlines()) == 1, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.toml"]
