"""The gallery on a real PostgreSQL server: every write one transaction that bumps the version (a write that
fails half-way leaves nothing), the calibration kept with the gallery, erasing a person leaves no row of
theirs; and bad input (a password in a command-line URL, a wrong password, another application's database, a
newer schema) is one line, exit 2, nothing written."""

from __future__ import annotations

import numpy as np
import pytest
from cli_helpers import one_error_line
from pg_helpers import PASSWORD, rows_naming

from models.registry import EMBEDDERS
from pipeline.gallery import Gallery, GalleryError, Identity
from pipeline.gallery.cache import CachedFace
from pipeline.gallery.calibration import recalibrate
from pipeline.gallery.postgres import SCHEMA_VERSION, TABLES

DLIB = EMBEDDERS["dlib-resnet-v1"]


def person(name: str, rng: np.random.Generator, n: int = 3, shared: str | None = None) -> Identity:
    v = rng.normal(size=(n, DLIB.dim)).astype(np.float32)
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    c = v.mean(0)
    shas = [f"{name}-{i}" for i in range(n)] + ([shared] if shared else [])
    if shared:
        v = np.vstack([v, v[:1]])
    return Identity(name, (c / np.linalg.norm(c)).astype(np.float32), v, np.zeros(len(v), bool),
                    [f"/photos/{name}/{i}.jpg" for i in range(len(v))], shas,
                    [{"prob": 0.99, "face_px": 120.0, "blur": 40.0}] * len(v))


def test_writes_are_one_transaction_each_and_erase_leaves_no_row(pg) -> None:
    url = pg.new_db("gal_writes")
    rng = np.random.default_rng(1)
    g = Gallery.create(url, DLIB.model_id, DLIB.dim)
    assert (g.version, g.counts()) == (0, (0, 0, 0))
    g.replace_identities([person("alice", rng), person("bob", rng, shared="group-photo")], keep_others=True,
                         sources={"alice": {"alice-0", "alice-offered-not-enrolled"}})
    g.cache().put_many([(s, "ctx", CachedFace(np.ones(DLIB.dim, np.float32), None, {"prob": 0.9}))
                        for s in ["alice-0", "alice-offered-not-enrolled", "bob-0", "group-photo"]])
    assert g.version == 1 and g.counts() == (2, 7, 0)
    cal = recalibrate(g, 0.01)  # completes the write: stored, no second version
    assert g.version == 1 and g.threshold == cal["threshold"] and g.calibration["method"] == cal["method"]

    # A write that fails half-way (templates and paths of different lengths) leaves the gallery as it was.
    broken = person("carol", rng)
    broken.paths = broken.paths[:1]
    with pytest.raises(ValueError):
        g.replace_identities([broken], keep_others=False)
    assert g.names() == ["alice", "bob"] and g.version == 1 and g.counts() == (2, 7, 0)
    with pytest.raises(GalleryError, match="too like"):
        g.replace_identities([person("ALICE", rng)], keep_others=True)
    assert g.version == 1

    again = Gallery.open(url, DLIB.model_id)  # another connection (another host) sees the same gallery
    assert again.calibration == g.calibration and again.names() == ["alice", "bob"]
    assert [np.array_equal(a.templates, b.templates) for a, b in zip(again.identities(), g.identities(),
                                                                     strict=True)] == [True, True]
    assert again.rename("bob", "robert") == "robert" and g.version == 2

    shas = [*g.identities()[0].sha256s, "alice-offered-not-enrolled"]
    assert rows_naming(pg, "gal_writes", "alice", shas)["gallery_faces"] == 2
    assert g.remove("alice") == 3 and g.version == 3
    assert rows_naming(pg, "gal_writes", "alice", shas) == dict.fromkeys(TABLES, 0)
    assert g.cache().get("group-photo", "ctx") is not None  # robert's photo stays
    with pytest.raises(GalleryError, match="no identity named 'alice'"):
        g.remove("alice")
    g.close()
    again.close()


def _build(cli, tmp_path, data_dir, url: str, env_pw: str | None = None):
    return cli("gallery", "build", data_dir / "face_recognition_examples" / "knn_examples" / "train",
               "--out", url, "--report", tmp_path / "report")


def _facestream_tables(pg, db: str) -> list[tuple]:
    return pg.sql("SELECT tablename FROM pg_catalog.pg_tables WHERE schemaname = 'facestream' ORDER BY 1", db)


def test_bad_locations_are_one_line_exit_2_and_nothing_written(pg, cli, tmp_path, data_dir, monkeypatch) -> None:
    url = pg.new_db("gal_bad")
    with_pw = url.replace("fs@", f"fs_pw:{PASSWORD}@")
    rc, out, err = cli("gallery", "info", "--gallery", with_pw)
    assert rc == 2 and PASSWORD not in err
    one_error_line(err, "holds a password", "PGPASSFILE")
    rc, _, err = _build(cli, tmp_path, data_dir, with_pw)
    assert rc == 2 and PASSWORD not in err and _facestream_tables(pg, "gal_bad") == []

    pw_url = url.replace("fs@", "fs_pw@")
    monkeypatch.setenv("PGPASSWORD", "wrong")
    rc, _, err = _build(cli, tmp_path, data_dir, pw_url)
    assert rc == 2
    one_error_line(err, "gal_bad", "password authentication failed")
    assert _facestream_tables(pg, "gal_bad") == [] and not (tmp_path / "report").exists()
    passfile = tmp_path / "pgpass"
    passfile.write_text(f"127.0.0.1:{pg.port}:*:fs_pw:{PASSWORD}\n")
    passfile.chmod(0o600)
    monkeypatch.delenv("PGPASSWORD")
    monkeypatch.setenv("PGPASSFILE", str(passfile))
    Gallery.create(pw_url, DLIB.model_id, DLIB.dim).close()  # the right password, from the file
    rc, out, err = cli("gallery", "info", "--gallery", pw_url, "--json")
    assert rc == 0 and '"identities": 0' in out, err

    foreign = pg.new_db("gal_foreign")
    pg.sql("CREATE TABLE invoices (id SERIAL PRIMARY KEY, total NUMERIC); INSERT INTO invoices(total) VALUES (9.5)",
           "gal_foreign")
    for argv in (["gallery", "info", "--gallery", foreign],
                 ["gallery", "build", data_dir / "five_celebrity" / "train", "--out", foreign]):
        rc, _, err = cli(*argv)
        assert rc == 2
        one_error_line(err, "gal_foreign", "a database of another application")
    assert _facestream_tables(pg, "gal_foreign") == []
    assert pg.sql("SELECT count(*) FROM invoices", "gal_foreign") == [(1,)]

    newer = pg.new_db("gal_newer")
    g = Gallery.create(newer, DLIB.model_id, DLIB.dim)
    g.replace_identities([person("alice", np.random.default_rng(2))], keep_others=True)
    g.close()
    pg.sql("UPDATE facestream.stores SET schema_version = schema_version + 1 WHERE kind = 'gallery'", "gal_newer")
    before = pg.sql("SELECT key, value FROM facestream.gallery_meta ORDER BY key", "gal_newer")
    for argv in (["gallery", "remove", "alice", "--gallery", newer], ["gallery", "list", "--gallery", newer]):
        rc, _, err = cli(*argv)
        assert rc == 2
        one_error_line(err, "gal_newer", f"has schema {SCHEMA_VERSION + 1}, newer than this facestream supports "
                       f"({SCHEMA_VERSION})")
    assert pg.sql("SELECT key, value FROM facestream.gallery_meta ORDER BY key", "gal_newer") == before
    assert pg.sql("SELECT count(*) FROM facestream.gallery_identities", "gal_newer") == [(1,)]


def test_negatives_merge_and_split_are_one_transaction_each_and_schema_1_is_upgraded(pg) -> None:
    from pipeline.gallery.negatives import reject
    from pipeline.gallery.regroup import merge, split

    url = pg.new_db("gal_fix")
    rng = np.random.default_rng(2)
    g = Gallery.create(url, DLIB.model_id, DLIB.dim)
    g.replace_identities([person(n, rng, 4) for n in ("alice", "bob", "carol")], keep_others=True)
    recalibrate(g, 0.01)
    alice = g.identities()[0]
    near = alice.centroid + 0.02 * rng.normal(size=DLIB.dim).astype(np.float32)
    r = reject(g, "alice", near, "test")
    assert r["negatives"] == 1 and g.version == 2 and g.info()["own_thresholds"]["alice"] == r["threshold"]
    assert merge(g, "alice", "bob", 0.01)["templates"] == 8 and g.names() == ["alice", "carol"] and g.version == 3
    with pytest.raises(GalleryError, match="already exists"):
        split(g, "alice", [5], "carol", 0.01)
    assert g.version == 3 and g.counts()[1] == 12
    split(g, "alice", [5, 6, 7, 8], "bob", 0.01)
    assert g.names() == ["alice", "bob", "carol"] and g.version == 4 and set(g.negatives()) == {"alice"}
    assert g.remove("alice") == 4 and rows_naming(pg, "gal_fix", "alice", [])["gallery_negatives"] == 0
    # A gallery written by schema 1 (no negatives table) is upgraded when opened.
    g.close()
    pg.sql("DROP TABLE facestream.gallery_negatives", "gal_fix")
    pg.sql("UPDATE facestream.stores SET schema_version = 1 WHERE kind = 'gallery'", "gal_fix")
    g = Gallery.open(url)
    assert g.negatives() == {} and pg.sql("SELECT schema_version FROM facestream.stores WHERE kind = 'gallery'",
                                          "gal_fix") == [(2,)]
    g.close()
