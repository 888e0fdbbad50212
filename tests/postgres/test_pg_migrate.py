"""``gallery migrate`` SQLite -> PostgreSQL -> SQLite on part of the LFW identification split: ``eval identify``
gives the same figures at each step (the full split's figures are in docs/postgres.md: top-1 0.990), the
templates, calibration and cache arrive as stored, and a
destination that holds people is refused without a write."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np

IDENTITIES = 4  # the first ones of the split, their gallery photos (5 each) and PROBES probes each
PROBES = 2
STRANGERS = 2  # probes of the next identities, not enrolled (open-set figures)


def _subset(data_dir: Path, out: Path) -> Path:
    split = data_dir / "lfw" / "identification_split.csv"
    with split.open(newline="") as f:
        rows = list(csv.DictReader(f))
    names = list(dict.fromkeys(r["identity"] for r in rows))
    keep, strangers = names[:IDENTITIES], names[IDENTITIES:IDENTITIES + STRANGERS]
    chosen, probes = [], {n: 0 for n in keep + strangers}
    for r in rows:
        n = r["identity"]
        if n in keep and r["role"] == "gallery":
            chosen.append((r, "gallery"))
        elif n in probes and r["role"] == "probe" and probes[n] < (PROBES if n in keep else 1):
            probes[n] += 1
            chosen.append((r, "probe" if n in keep else "stranger"))
    with out.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["filename", "identity", "role"])
        w.writerows([str(split.parent / r["filename"]), r["identity"], role] for r, role in chosen)
    return out


def _identify(cli, gallery: str | Path, probes: Path) -> dict:
    strangers = probes.with_name("strangers.csv")
    if not strangers.exists():
        with probes.open(newline="") as f, strangers.open("w", newline="") as g:
            w = csv.writer(g)
            w.writerows(r for r in csv.reader(f) if r[2] in ("role", "stranger"))
    rc, out, err = cli("eval", "identify", "--gallery", gallery, "--probes", probes, "--role", "probe",
                       "--unknown-probes", strangers, "--json")
    assert rc == 0, err
    result = json.loads(out.strip().splitlines()[-1])
    result.pop("operating_point")
    return result


def test_migrate_sqlite_to_postgres_and_back_keeps_the_identify_figures(pg, cli, tmp_path, data_dir,
                                                                        one_torch_thread) -> None:
    from pipeline.gallery import Gallery

    split = _subset(data_dir, tmp_path / "split.csv")
    first = tmp_path / "lfw.db"
    rc, out, err = cli("gallery", "build", split, "--role", "gallery", "--out", first, "--json")
    assert rc == 0, err
    built = json.loads(out)
    before = _identify(cli, first, split)
    assert before["known_probes"] == IDENTITIES * PROBES and before["unknown_probes"] == STRANGERS, before
    assert before["top1"] >= 0.8, before

    url = pg.new_db("lfw_migrate")
    rc, out, err = cli("gallery", "migrate", first, url, "--json")
    assert rc == 0, err
    moved = json.loads(out)
    assert (moved["identities"], moved["templates"]) == (built["identities"], built["enrolled"])
    assert moved["cached_embeddings"] >= built["files"] and moved["threshold"] == built["threshold"]
    in_pg = _identify(cli, url, split)

    back = tmp_path / "back.db"
    rc, out, err = cli("gallery", "migrate", url, back, "--json")
    assert rc == 0, err
    again = _identify(cli, back, split)
    print(f"\neval identify on {before['known_probes']} LFW probes of {IDENTITIES} identities: SQLite {before} | "
          f"PostgreSQL {in_pg} | SQLite again {again}")
    assert before == in_pg == again

    a, b = Gallery.open(first), Gallery.open(back)
    for x, y in zip(a.identities(), b.identities(), strict=True):
        assert x.name == y.name and np.array_equal(x.centroid, y.centroid) and np.array_equal(x.templates, y.templates)
        assert x.paths == y.paths and x.sha256s == y.sha256s and np.array_equal(x.outlier, y.outlier)
    assert (a.calibration, a.sources()) == (b.calibration, b.sources())
    a.close()
    b.close()

    in_db = Gallery.open(url)
    try:  # the cache came along whole: a rebuild in the database would embed nothing again
        cached = {(sha, ctx): (f.reason, None if f.vec is None else f.vec.tobytes(), f.info)
                  for sha, ctx, f in in_db.cache().rows()}
        assert len(cached) >= built["files"]
        a = Gallery.open(first)
        assert cached == {(sha, ctx): (f.reason, None if f.vec is None else f.vec.tobytes(), f.info)
                          for sha, ctx, f in a.cache().rows()}
        a.close()
    finally:
        in_db.close()

    revision = pg.sql("SELECT value FROM facestream.gallery_meta WHERE key = 'revision'", "lfw_migrate")
    rc, _, err = cli("gallery", "migrate", back, url)
    assert rc == 2 and f"already holds a gallery of {IDENTITIES} identities" in err, err
    assert pg.sql("SELECT value FROM facestream.gallery_meta WHERE key = 'revision'", "lfw_migrate") == revision
