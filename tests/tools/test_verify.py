"""Verification metrics, the pairs reader, and an accuracy regression on real LFW pairs."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from pipeline.score_metrics import best_threshold, kfold_accuracy, roc_figures
from tools.verify import read_pairs, run_verify

# 200 LFW DevTest pairs with 10-fold threshold tuning. The full 1000-pair run scores ~0.985; a
# working pipeline scores >= 0.97 on this slice, a broken alignment or normalisation far less.
LFW_SLICE_MIN_ACCURACY = 0.965


def test_best_threshold_and_metrics_on_known_scores() -> None:
    scores = np.array([0.1, 0.2, 0.3, 0.7, 0.8, 0.9])
    same = np.array([0, 0, 0, 1, 1, 1])
    assert best_threshold(scores, same) == pytest.approx(0.5)
    roc = roc_figures(scores, same)
    assert roc["auc"] == 1.0 and roc["eer"] == 0.0 and roc["tar_at_far"] == 1.0
    noisy = np.array([0.1, 0.6, 0.3, 0.4, 0.8, 0.9])
    assert roc_figures(noisy, same)["auc"] == pytest.approx(8 / 9)
    acc, _ = kfold_accuracy(np.tile(scores, 5), np.tile(same, 5), folds=10)
    assert acc == 1.0


def test_pairs_reader_rejects_bad_csvs(tmp_path: Path) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("a,b,c\n1,2,3\n")
    with pytest.raises(ValueError, match="lacks column"):
        read_pairs(bad)
    bad.write_text("img_a,img_b,same\nx.jpg,y.jpg,maybe\n")
    with pytest.raises(ValueError, match=r"bad.csv:2: 'same' must be 0 or 1"):
        read_pairs(bad)
    with pytest.raises(ValueError, match="cannot read pairs file"):
        read_pairs(tmp_path / "none.csv")


def test_lfw_accuracy_regression(data_dir: Path, tmp_path: Path, detector, dlib_embedder, one_torch_thread) -> None:
    from pipeline.gallery.stills import StillEmbedder

    rows = list(csv.DictReader((data_dir / "lfw" / "pairs_devtest.csv").open()))
    subset = rows[:100] + rows[500:600]  # DevTest lists 500 same pairs, then 500 different ones
    assert {r["same"] for r in subset} == {"0", "1"}
    pairs = tmp_path / "pairs.csv"
    with pairs.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["img_a", "img_b", "same"])
        w.writeheader()
        for r in subset:
            w.writerow({k: str(data_dir / "lfw" / r[k]) if k != "same" else r[k] for k in w.fieldnames})
    engine = StillEmbedder(detector, dlib_embedder, policy="center")
    result = run_verify(engine, str(pairs), roc_png=str(tmp_path / "roc.png"))
    assert result["pairs"] == 200
    assert result["failed_detections"] <= 2
    assert result["accuracy"] >= LFW_SLICE_MIN_ACCURACY, result
    assert result["auc"] >= 0.99, result
    assert (tmp_path / "roc.png").stat().st_size > 1000


def test_cli_verify_json_and_one_line_errors(data_dir: Path, tmp_path: Path, monkeypatch, capsys,
                                             one_torch_thread) -> None:
    imgs = data_dir / "face_recognition_examples" / "test_images"
    pairs = tmp_path / "p.csv"
    lines = ["img_a,img_b,same"]
    names = ["obama.jpg", "obama2.jpg", "obama3.jpg"]
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            lines.append(f"{imgs / a},{imgs / b},1")
        lines.append(f"{imgs / a},{imgs / 'biden.jpg'},0")
    lines += lines[1:]  # 12 pairs so 10-fold tuning has something in every fold
    pairs.write_text("\n".join(lines) + "\n")
    env_cache = {"XDG_CACHE_HOME": str(tmp_path / "cache"), "PATH": "/usr/bin:/bin"}
    cmd = [sys.executable, "-m", "daemon"]
    out = subprocess.run([*cmd, "eval", "verify", "--pairs", str(pairs), "--json"], capture_output=True,
                         text=True, env=env_cache, timeout=300)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    for key in ("accuracy", "auc", "eer", "tar_at_far_1e-3", "threshold", "failed_detections", "pairs"):
        assert key in result
    assert result["accuracy"] == 1.0 and result["pairs"] == 12
    # The second run, in this process (a fresh interpreter costs ~6 s), embeds nothing: all from the disk cache.
    from daemon.cli import main

    monkeypatch.setenv("XDG_CACHE_HOME", env_cache["XDG_CACHE_HOME"])
    capsys.readouterr()
    assert main(["eval", "verify", "--pairs", str(pairs), "--json"]) == 0
    again = json.loads(capsys.readouterr().out)
    assert again["embedded"] == 0 and again["from_cache"] == 4
    assert main(["eval", "verify", "--pairs", str(tmp_path / "nope.csv")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("facestream: error: cannot read pairs file")
