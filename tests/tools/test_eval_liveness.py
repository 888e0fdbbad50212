"""``facestream eval liveness``: APCER/BPCER recomputed here from the per-item scores it prints, the metric
helpers on known scores, and one-line exit-2 errors for bad label files."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import numpy as np
import pytest
from cli_helpers import REPO

from tools.eval_liveness import read_labels, stratified_halves
from tools.liveness_metrics import apcer, bpcer, threshold_for_apcer

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture
def cli(monkeypatch, tmp_path_factory):
    """Run ``facestream ARGS...`` in-process with the cache out of $HOME; returns (status, stdout, stderr)."""
    import structlog

    from daemon.cli import main

    for key in [k for k in os.environ if k.startswith("FACESTREAM_")]:
        monkeypatch.delenv(key)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path_factory.getbasetemp() / "liveness_cache"))
    saved = structlog.get_config()

    def run(*argv: object) -> tuple[int, str, str]:
        out, err = io.StringIO(), io.StringIO()
        with redirect_stdout(out), redirect_stderr(err):
            rc = main([str(a) for a in argv])
        return rc, out.getvalue(), err.getvalue()

    yield run
    structlog.configure(**saved)


def test_metrics_on_known_scores() -> None:
    attacks = np.array([0.1, 0.2, 0.3, 0.6, 0.9])
    lives = np.array([0.4, 0.7, 0.8, 0.95])
    assert (apcer(attacks, 0.5).errors, apcer(attacks, 0.5).total) == (2, 5)
    assert bpcer(lives, 0.5).rate == 0.25
    assert apcer(attacks, 0.9).errors == 1  # a score equal to the threshold is accepted as live
    # APCER <= 0.2 allows one of five attacks through: refuse 0.6, halfway to the next score above it (0.7).
    t = threshold_for_apcer(attacks, 0.2, np.concatenate([attacks, lives]))
    assert t == pytest.approx(0.65) and apcer(attacks, t).rate == 0.2 and bpcer(lives, t).errors == 1
    assert threshold_for_apcer(attacks, 0.0, lives) == pytest.approx(0.925)  # above every attack
    assert bpcer(np.array([]), 0.5).rate is None


def _write(csv: Path, rows: list[str]) -> Path:
    csv.write_text("filename,label,kind\n" + "\n".join(rows) + "\n")
    return csv


def test_label_reader_refuses_bad_files(tmp_path: Path, data_dir: Path) -> None:
    t1 = data_dir / "liveness" / "models" / "samples" / "image_T1.jpg"
    with pytest.raises(ValueError, match=r"bad.csv:3: label must be live or attack, got 'real'"):
        read_labels(_write(tmp_path / "bad.csv", [f"{t1},live,photo", f"{t1},real,photo"]))
    with pytest.raises(ValueError, match=r"bad.csv:2: file not found: .*nope.jpg"):
        read_labels(_write(tmp_path / "bad.csv", ["nope.jpg,attack,print"]))
    (tmp_path / "cols.csv").write_text("file,label\nx.jpg,live\n")
    with pytest.raises(ValueError, match="lacks column"):
        read_labels(tmp_path / "cols.csv")
    with pytest.raises(ValueError, match="cannot read labels file"):
        read_labels(tmp_path / "none.csv")
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(ValueError, match="neither an image nor a video"):
        read_labels(_write(tmp_path / "bad.csv", ["notes.txt,live,photo"]))
    items = read_labels(_write(tmp_path / "ok.csv", [f"{t1},LIVE,"]))
    assert items[0].live and items[0].kind == "image"  # kind defaults from the file type


def test_stratified_halves_split_every_group(tmp_path: Path, data_dir: Path) -> None:
    from tools.eval_liveness import ItemScore, LabelledItem

    t1 = data_dir / "liveness" / "models" / "samples" / "image_T1.jpg"
    res = [ItemScore(LabelledItem(str(i), t1, i % 2 == 0, "a" if i < 10 else "b"), 0.5, 1, 1) for i in range(20)]
    tune, test = stratified_halves(res)
    assert sorted(tune + test) == list(range(20)) and len(tune) == 8 and len(test) == 12
    assert stratified_halves(res) == (tune, test)  # fixed seed


def test_eval_liveness_rates_match_the_printed_scores(cli, tmp_path: Path, data_dir: Path) -> None:
    live = data_dir / "liveness"
    rows = [f"{live}/models/samples/image_T1.jpg,live,camera_photo",
            f"{live}/models/samples/image_F1.jpg,attack,print",
            f"{live}/models/samples/image_F2.jpg,attack,print"]
    rows += [f"{live}/celeba_spoof_sample/Live/{n}.jpg,live,web_photo" for n in (1, 10, 100)]
    rows += [f"{live}/celeba_spoof_sample/Spoof/{n}.jpg,attack,mixed" for n in (1, 10, 100)]
    rows += [f"{live}/replay/attack_zubair.webm,attack,screen_replay_video"]
    labels = _write(tmp_path / "labels.csv", rows)
    roc = tmp_path / "roc.png"
    rc, out, err = cli("eval", "liveness", "--labels", labels, "--weights-dir", live / "models", "--video-frames", 3,
                       "--json", "--roc-png", roc)
    assert rc == 0, err
    r = json.loads(out)
    assert r["labels_items"] == 10 and len(r["scores"]) == 10 and r["threshold"] == 0.5
    by_file = {Path(s["file"]).name: s for s in r["scores"]}
    assert by_file["attack_zubair.webm"]["frames"] == 3 and 1 <= by_file["attack_zubair.webm"]["faces"] <= 3
    assert by_file["image_T1.jpg"]["score"] >= 0.5 > by_file["image_F1.jpg"]["score"]
    scored = [s for s in r["scores"] if s["score"] is not None]
    assert r["scored"] == len(scored) and r["unscored"]["live"] + r["unscored"]["attack"] == 10 - len(scored)
    # APCER / BPCER recomputed from the printed per-item scores, overall and per kind.
    att = [s["score"] for s in scored if s["label"] == "attack"]
    liv = [s["score"] for s in scored if s["label"] == "live"]
    at = r["at_threshold"]
    assert at["apcer"]["errors"] == sum(x >= 0.5 for x in att) and at["apcer"]["n"] == len(att)
    assert at["bpcer"]["errors"] == sum(x < 0.5 for x in liv) and at["bpcer"]["n"] == len(liv)
    for key, v in at["per_kind"].items():
        label, kind = key.split("/")
        group = [s["score"] for s in scored if s["label"] == label and s["kind"] == kind]
        metric, wrong = ("apcer", [x >= 0.5 for x in group]) if label == "attack" else ("bpcer", [x < 0.5 for x in
                                                                                                group])
        assert v[metric]["n"] == len(group) and v[metric]["errors"] == sum(wrong), key
    t = r["at_target_apcer"]["threshold"]
    assert sum(x >= t for x in att) / len(att) <= 0.10  # the reported threshold reaches the target
    assert r["at_target_apcer"]["bpcer"]["errors"] == sum(x < t for x in liv)
    assert (roc.stat().st_mode & 0o777) == 0o600 and roc.stat().st_size > 1000
    # --threshold moves the operating point, and the counts follow it.
    rc, out, err = cli("eval", "liveness", "--labels", labels, "--weights-dir", live / "models", "--video-frames", 3,
                       "--json", "--threshold", 0.05)
    again = json.loads(out)
    assert again["threshold_source"] == "--threshold"
    assert again["at_threshold"]["apcer"]["errors"] == sum(x >= 0.05 for x in att)


def test_bad_labels_exit_2_in_one_line(cli, tmp_path: Path, data_dir: Path) -> None:
    t1 = data_dir / "liveness" / "models" / "samples" / "image_T1.jpg"
    bad = _write(tmp_path / "bad.csv", [f"{t1},live,photo", f"{t1},spoof,photo"])
    rc, out, err = cli("eval", "liveness", "--labels", bad)
    assert rc == 2 and out == ""
    assert err == f"facestream: error: {bad}:3: label must be live or attack, got 'spoof'\n"
    missing = _write(tmp_path / "missing.csv", ["gone.jpg,live,photo"])
    rc, _, err = cli("eval", "liveness", "--labels", missing)
    assert rc == 2 and err.count("\n") == 1 and "missing.csv:2: file not found" in err
    rc, _, err = cli("eval", "liveness", "--labels", _write(tmp_path / "ok.csv", [f"{t1},live,photo"]),
                     "--weights-dir", tmp_path)
    assert rc == 2 and err.count("\n") == 1 and "not found (expected SHA-256 " in err
    # The installed entry point's exit status as a process sees it.
    proc = subprocess.run([sys.executable, "-m", "daemon", "eval", "liveness", "--labels", str(bad)], cwd=REPO,
                          capture_output=True, text=True, timeout=120,
                          env={**os.environ, "XDG_CACHE_HOME": str(tmp_path / "cache")})
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "label must be live or attack" in proc.stderr
