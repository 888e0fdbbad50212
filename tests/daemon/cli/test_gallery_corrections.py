"""Corrections of who is who from the command line: merge and split on a small LFW gallery (the round trip
leaves ``eval identify`` as it was), "not this person" from an event log, a gallery of schema 1 upgraded on
open, and bad input as one line and exit 2 with the gallery unchanged."""

from __future__ import annotations

import csv
import json
import random
import shutil
import sqlite3
from pathlib import Path

import pytest
from cli_helpers import one_error_line

IDENTITIES = 4


@pytest.fixture(scope="module")
def lfw_small(data_dir: Path, tmp_path_factory) -> dict[str, Path]:
    root = data_dir / "lfw"
    rows = list(csv.DictReader((root / "identification_split.csv").open()))
    chosen = set(random.Random(5).sample(sorted({r["identity"] for r in rows}), IDENTITIES))
    out = tmp_path_factory.mktemp("corrections")
    probes: dict[str, list[dict]] = {}
    for r in rows:
        if r["identity"] in chosen and r["role"] == "probe":
            probes.setdefault(r["identity"], []).append(r)

    def write(name: str, items: list[dict]) -> Path:
        with (out / name).open("w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["filename", "identity"])
            w.writerows([str((root / r["filename"]).resolve()), r["identity"]] for r in items)
        return out / name

    return {"gallery": write("gallery.csv", [r for r in rows if r["identity"] in chosen and r["role"] == "gallery"]),
            "probes": write("probes.csv", [r for n in sorted(probes) for r in probes[n][:1]]), "dir": out}


def _json(result: tuple[int, str, str]) -> dict | list:
    rc, out, err = result
    assert rc == 0, err
    return json.loads(out)


def test_merge_then_split_back_leaves_eval_identify_as_before(cli, lfw_small, one_torch_thread) -> None:
    db = lfw_small["dir"] / "g.db"
    _json(cli("gallery", "build", lfw_small["gallery"], "--out", db, "--json"))
    identify = ("eval", "identify", "--gallery", db, "--probes", lfw_small["probes"], "--json")
    before, info = _json(cli(*identify)), _json(cli("gallery", "info", "--gallery", db, "--json"))
    rows = _json(cli("gallery", "list", "--gallery", db, "--templates", "--json"))
    a, b = sorted({r["identity"] for r in rows})[:2]
    n_a = sum(r["identity"] == a for r in rows)
    n_b = sum(r["identity"] == b for r in rows)
    merged = _json(cli("gallery", "merge", a, b, "--gallery", db, "--json"))
    assert merged["templates"] == n_a + n_b and merged["moved"] == n_b
    now = _json(cli("gallery", "list", "--gallery", db, "--templates", "--json"))
    assert b not in {r["identity"] for r in now}
    assert [r["template"] for r in now if r["identity"] == a] == list(range(1, n_a + n_b + 1))
    moved = ",".join(str(i) for i in range(n_a + 1, n_a + n_b + 1))
    split = _json(cli("gallery", "split", a, "--templates", moved, "--name", b, "--gallery", db, "--json"))
    assert (split["templates"], split["left"]) == (n_b, n_a)
    assert _json(cli("gallery", "list", "--gallery", db, "--templates", "--json")) == rows
    after = _json(cli(*identify))
    assert after == before, (before, after)
    again = _json(cli("gallery", "info", "--gallery", db, "--json"))
    assert again["calibration"] == info["calibration"] and again["version"] == info["version"] + 2


def test_bad_corrections_are_one_line_exit_2_and_change_nothing(cli, lfw_small, hamilton_run) -> None:
    db = lfw_small["dir"] / "g.db"
    if not db.exists():
        pytest.skip("needs the gallery of the test above")
    info = _json(cli("gallery", "info", "--gallery", db, "--json"))
    a, b = sorted({r["identity"] for r in _json(cli("gallery", "list", "--gallery", db, "--json"))})[:2]
    log = hamilton_run[1].with_name("a.jsonl")
    unknown = next(i for i, e in enumerate(hamilton_run[0], 1) if e["topic"] == "face.unknown")
    for argv, message in [
        (("merge", a, a), "into itself"), (("merge", a, "Nobody_Here"), "no identity named 'Nobody_Here'"),
        (("split", a, "--templates", "99", "--name", "New_One"), "no template 99"),
        (("split", a, "--templates", "1,x", "--name", "New_One"), "give positions like 3,4"),
        (("split", a, "--templates", "1", "--name", b), "already exists"),
        (("reject", "--event", str(unknown), "--events-jsonl", log, "--photo", log), "named nobody"),
        (("reject", "--event", "feedface", "--events-jsonl", log, "--photo", log), "no event 'feedface'"),
    ]:
        rc, _, err = cli("gallery", *argv, "--gallery", db)
        assert rc == 2 and message in one_error_line(err), (argv, err)
    assert _json(cli("gallery", "info", "--gallery", db, "--json")) == info


def test_reject_from_the_event_log_raises_the_identitys_own_threshold(cli, hamilton_run, stills_gallery, data_dir,
                                                                     tmp_path, one_torch_thread) -> None:
    events, timeline = hamilton_run
    db = tmp_path / "g.db"
    shutil.copy(stills_gallery, db)
    line, event = next((i, e) for i, e in enumerate(events, 1) if e["topic"] == "face.recognized")
    photo = {"lin_manuel_miranda": "lin-manuel-miranda.png", "alex_lacamoire": "alex-lacamoire.png",
             "barack_obama": "obama.jpg", "joe_biden": "biden.jpg"}[event["identity"]]
    before = _json(cli("gallery", "info", "--gallery", db, "--json"))
    assert before["own_thresholds"] == {} and before["negatives"] == {}
    # The person's own enrolled photo: it scores like them, so the rise stops at their bound (not locked out).
    r = _json(cli("gallery", "reject", "--event", event["event_id"], "--events-jsonl", timeline.with_name("a.jsonl"),
                  "--photo", data_dir / "face_recognition_examples" / "stills" / photo, "--gallery", db, "--json"))
    assert r["line"] == line and r["identity"] == event["identity"] and r["bounded"] and r["score"] > 0.99
    assert r["threshold"] == pytest.approx(r["bound"])
    assert r["gallery_threshold"] < r["threshold"] <= r["gallery_threshold"] + 0.02001
    info = _json(cli("gallery", "info", "--gallery", db, "--json"))
    assert info["own_thresholds"] == {event["identity"]: r["threshold"]} and info["negatives"] == {event["identity"]: 1}
    assert info["version"] == before["version"] + 1 and info["threshold"] == before["threshold"]
    # The matcher's rule: between the gallery's threshold and theirs, nobody is named (not the second best).
    from pipeline.gallery import Gallery
    from pipeline.gallery.operating_point import gallery_point
    from pipeline.match import decide

    g = Gallery.open(db)
    point = gallery_point(g, g.identities(), "centroid", 0.01)
    g.close()
    who, other = event["identity"], next(n for n in info_names(cli, db) if n != event["identity"])
    between = (info["threshold"] + r["threshold"]) / 2
    assert decide([(who, between), (other, between - 0.5)], point.threshold, point.margin, point.own).identity is None
    assert decide([(who, r["threshold"]), (other, 0.0)], point.threshold, point.margin, point.own).identity == who
    assert decide([(other, between), (who, between - 0.5)], point.threshold, point.margin, point.own).identity == other
    # Removing the person removes their negatives too.
    assert cli("gallery", "remove", event["identity"], "--gallery", db)[0] == 0
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT COUNT(*) FROM negatives").fetchone()[0] == 0


def test_a_schema_1_gallery_is_upgraded_on_open(stills_gallery, tmp_path) -> None:
    from pipeline.gallery import Gallery
    from pipeline.gallery.sqlite import SCHEMA_VERSION

    db = tmp_path / "old.db"
    shutil.copy(stills_gallery, db)
    with sqlite3.connect(db) as conn:
        conn.executescript("DROP TABLE negatives; PRAGMA user_version = 1;")
    g = Gallery.open(db)
    assert g.negatives() == {} and len(g.names()) == 4
    g.close()
    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 2
        assert conn.execute("SELECT COUNT(*) FROM negatives").fetchone()[0] == 0


def info_names(cli, db: Path) -> list[str]:
    return [r["identity"] for r in _json(cli("gallery", "list", "--gallery", db, "--json"))]
