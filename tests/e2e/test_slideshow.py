"""A daemon run over a slideshow of LFW photos: enrolled people and strangers, one after another.

The gallery is a dozen LFW identities as `gallery build` leaves it (too small for leave-identity-out
calibration, so it runs at the size-aware threshold). Every enrolled person shown must be named, and
nobody may be named while a stranger is shown (background faces included)."""

from __future__ import annotations

import csv
import json
import random
from pathlib import Path

import cv2
import numpy as np
import pytest

from daemon.config import load_settings
from daemon.profiles import build_daemon

GALLERY = 12
SHOWN_ENROLLED = 8
SHOWN_STRANGERS = 8
FPS = 10
SECONDS_EACH = 2


@pytest.fixture(scope="module")
def slideshow(data_dir: Path, tmp_path_factory) -> dict:
    root = data_dir / "lfw"
    rows = list(csv.DictReader((root / "identification_split.csv").open()))
    names = sorted({r["identity"] for r in rows})
    enrolled = sorted(random.Random(3).sample(names, GALLERY))
    out = tmp_path_factory.mktemp("slideshow")
    gallery_csv = out / "gallery.csv"
    with gallery_csv.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["filename", "identity"])
        for r in rows:
            if r["identity"] in enrolled and r["role"] == "gallery":
                w.writerow([str((root / r["filename"]).resolve()), r["identity"]])
    first_probe = {}
    for r in rows:
        if r["role"] == "probe":
            first_probe.setdefault(r["identity"], root / r["filename"])
    split = set(names)
    others = sorted(d.name for d in (root / "deepfunneled").iterdir() if d.is_dir() and d.name not in split)
    strangers = random.Random(5).sample(others, SHOWN_STRANGERS)
    shown = [(n, first_probe[n], True) for n in enrolled[:SHOWN_ENROLLED]]
    shown += [(n, sorted((root / "deepfunneled" / n).glob("*.jpg"))[0], False) for n in strangers]
    random.Random(9).shuffle(shown)
    video = out / "slideshow.mp4"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"mp4v"), FPS, (640, 360))
    for _, path, _ in shown:
        photo = cv2.resize(cv2.imread(str(path)), (360, 360), interpolation=cv2.INTER_CUBIC)
        canvas = np.full((360, 640, 3), 96, np.uint8)
        canvas[:, 140:500] = photo
        for _ in range(FPS * SECONDS_EACH):
            writer.write(canvas)
    writer.release()
    return {"gallery_csv": gallery_csv, "video": video, "shown": shown, "dir": out}


def test_slideshow_names_every_enrolled_person_and_no_stranger(slideshow, one_torch_thread, monkeypatch,
                                                               capsys) -> None:
    from daemon.cli import main

    monkeypatch.setenv("FACESTREAM_EMBEDDER__RUNTIME", "torch")
    monkeypatch.setenv("XDG_CACHE_HOME", str(slideshow["dir"] / "cache"))
    db = slideshow["dir"] / "g.db"
    assert main(["gallery", "build", str(slideshow["gallery_csv"]), "--out", str(db), "--json"]) == 0
    built = json.loads(capsys.readouterr().out)
    assert built["identities"] == GALLERY and "identities at target FAR" in built["calibration"]
    events_path = slideshow["dir"] / "events.jsonl"
    settings = load_settings(None, sources=[str(slideshow["video"])], embedder={"runtime": "torch"},
                             sinks={"jsonl": str(events_path), "zmq": None})
    assert build_daemon(settings, db)[0].run(install_signals=False) == 0
    events = [json.loads(line) for line in events_path.read_text().splitlines()]
    named: dict[int, set[str]] = {}
    for e in events:
        if e["topic"] == "face.recognized":
            named.setdefault(e["frame"] // (FPS * SECONDS_EACH), set()).add(e["identity"])
    for i, (name, path, is_enrolled) in enumerate(slideshow["shown"]):
        if is_enrolled:
            assert named.get(i) == {name}, f"slide {i} ({path.name}): expected {name}, named {named.get(i)}"
        else:
            assert not named.get(i), f"slide {i} shows stranger {name} ({path.name}) but named {named[i]}"
