"""``facestream analyze`` on two real clips: every artefact written, the HTML report renders in headless
Chromium with its timeline image loaded (a screenshot is saved beside it)."""

from __future__ import annotations

import csv
import json
import os
import subprocess
from pathlib import Path

import pytest
from http_helpers import CLI, REPO, chromium, chromium_missing

CLIPS = ["face_recognition_examples/video/short_hamilton_clip.mp4", "videos/known_identity/obama_speech.mp4"]


@pytest.fixture(scope="module")
def report(tmp_path_factory, data_dir, stills_gallery) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("analysis") / "report"
    env = {**os.environ, "FACESTREAM_EMBEDDER__RUNTIME": "torch"}
    r = subprocess.run([*CLI, "analyze", *[str(data_dir / c) for c in CLIPS], "--gallery", str(stills_gallery),
                        "--out", str(out), "--json"], cwd=REPO, capture_output=True, text=True, timeout=600, env=env)
    assert r.returncode == 0, r.stderr[-2000:]
    return out, json.loads(r.stdout.strip().splitlines()[-1])


def test_every_artefact_is_written_and_private(report) -> None:
    out, result = report
    assert result["identities"] == ["barack_obama", "lin_manuel_miranda"]
    events = [json.loads(line) for line in (out / "events.jsonl").read_text().splitlines()]
    assert {e["identity"] for e in events if e["topic"] == "face.recognized"} == set(result["identities"])
    rows = list(csv.DictReader((out / "timeline.csv").open()))
    assert {(r["source"], r["identity"]) for r in rows} == {("obama_speech", "barack_obama"),
                                                           ("short_hamilton_clip", "lin_manuel_miranda")}
    for name in ("barack_obama", "lin_manuel_miranda"):
        assert (out / "best" / f"{name}.jpg").read_bytes()[:2] == b"\xff\xd8"  # a JPEG
    assert result["annotated"] == ["obama_speech.annotated.mp4", "short_hamilton_clip.annotated.mp4"]
    assert (out / "timeline.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    for f in [*out.glob("*.*"), *out.glob("best/*")]:
        assert f.stat().st_mode & 0o777 == 0o600, f


def test_the_report_renders_offline_in_headless_chromium(report) -> None:
    why = chromium_missing()
    if why:
        pytest.skip(why)
    out, _ = report
    with chromium() as driver:
        driver.get((out / "report.html").as_uri())
        loaded = driver.execute_script(
            "const i = document.getElementById('timeline'); return i.complete && i.naturalWidth;")
        assert loaded and loaded > 100  # the timeline image loaded (a broken image has naturalWidth 0)
        faces = driver.execute_script("return [...document.querySelectorAll('img.face')].map(i => i.naturalWidth)")
        assert len(faces) == 2 and all(w > 0 for w in faces)
        assert "lin_manuel_miranda" in driver.page_source
        driver.save_screenshot(str(out / "report.png"))
    assert (out / "report.png").stat().st_size > 10_000


def test_an_earlier_analysis_is_never_overwritten_and_bad_videos_fail_in_one_line(report, tmp_path, data_dir) -> None:
    out, _ = report
    before = (out / "events.jsonl").read_bytes()
    for args, message in ((["--out", str(out)], "already holds an analysis"),
                          (["--out", str(tmp_path / "new")], "video file not found: /nonexistent.mp4")):
        video = str(data_dir / CLIPS[0]) if "already" in message else "/nonexistent.mp4"
        r = subprocess.run([*CLI, "analyze", video, *args], cwd=REPO, capture_output=True, text=True, timeout=120)
        lines = r.stderr.strip().splitlines()
        assert r.returncode == 2 and len(lines) == 1 and message in lines[0], r.stderr
    assert (out / "events.jsonl").read_bytes() == before
    assert not (tmp_path / "new").exists()
