"""``gallery add --video``: a person enrolled from a clip alone is then recognised; a crowd is refused."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from cli_helpers import REPO
from daemon_helpers import run_daemon

CLI = [sys.executable, "-c", "import sys; from daemon.cli import main; sys.exit(main(sys.argv[1:]))"]
HAMILTON = Path("face_recognition_examples/video/short_hamilton_clip.mp4")


def _facestream(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    env = {"FACESTREAM_EMBEDDER__RUNTIME": "torch", "XDG_CACHE_HOME": str(tmp_path / "cache")}
    return subprocess.run([*CLI, *args], cwd=REPO, capture_output=True, text=True, timeout=600,
                          env={**os.environ, **env})


def _first_frames(src: Path, frames: int, out: Path) -> Path:
    """The clip's first ``frames`` frames (the refusals need no more; decoding the rest cost 10-15 s a test)."""
    cut = subprocess.run(["ffmpeg", "-v", "error", "-y", "-i", str(src), "-frames:v", str(frames), "-an",
                          "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", str(out)],
                         capture_output=True, text=True)
    assert cut.returncode == 0, cut.stderr
    return out


def test_miranda_enrolled_from_her_close_up_is_recognised_in_the_full_clip(tmp_path, data_dir) -> None:
    clip = tmp_path / "miranda.mp4"  # the close-up, frames 82-210, cut with ffmpeg
    cut = subprocess.run(["ffmpeg", "-v", "error", "-y", "-i", str(data_dir / HAMILTON), "-vf",
                          r"select=between(n\,82\,210),setpts=N/FRAME_RATE/TB", "-an", "-c:v", "libx264",
                          "-pix_fmt", "yuv420p", str(clip)], capture_output=True, text=True)
    assert cut.returncode == 0, cut.stderr
    gallery = tmp_path / "from_video.db"
    out = _facestream(tmp_path, "gallery", "add", "--gallery", str(gallery), "--name", "lin_manuel_miranda",
                      "--video", str(clip), "--json")
    assert out.returncode == 0, out.stderr[-2000:]
    r = json.loads(out.stdout.strip().splitlines()[-1])
    assert r["identity"] == "lin_manuel_miranda" and 3 <= r["added"] <= 8
    assert len(set(r["faces_taken"])) == len(r["faces_taken"]) and max(r["faces_taken"]) <= 128
    assert (gallery.stat().st_mode & 0o777) == 0o600
    events = run_daemon(tmp_path, data_dir / HAMILTON, gallery, "video_gallery")
    named = [e for e in events if e["topic"] == "face.recognized"]
    assert {e["identity"] for e in named} == {"lin_manuel_miranda"}
    assert any(82 <= e["frame"] <= 210 for e in named), named


def _in_process(monkeypatch, capsys, tmp_path: Path, *args: str) -> tuple[int, str]:
    """A refusal runs in this process: a fresh interpreter costs ~6 s of imports and model loading."""
    from daemon.cli import main

    monkeypatch.setenv("FACESTREAM_EMBEDDER__RUNTIME", "torch")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    capsys.readouterr()
    code = main(list(args))
    return code, capsys.readouterr().err


def test_a_clip_of_a_crowd_is_refused_with_its_reason(tmp_path, data_dir, one_torch_thread, monkeypatch,
                                                      capsys) -> None:
    gallery = tmp_path / "crowd.db"
    crowd = _first_frames(data_dir / "videos" / "multi_face" / "facenet_pytorch_crowd.mp4", 25, tmp_path / "crowd.mp4")
    code, err = _in_process(monkeypatch, capsys, tmp_path, "gallery", "add", "--gallery", str(gallery), "--name",
                            "someone", "--video", str(crowd))
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "people" in lines[0] and "one person" in lines[0], err
    assert not gallery.exists()  # nothing written


def test_a_clip_without_faces_is_refused(tmp_path, data_dir, one_torch_thread, monkeypatch, capsys) -> None:
    dog = _first_frames(data_dir / "videos" / "no_faces" / "dog.mp4", 60, tmp_path / "dog.mp4")
    code, err = _in_process(monkeypatch, capsys, tmp_path, "gallery", "add", "--gallery", str(tmp_path / "g.db"),
                            "--name", "rex", "--video", str(dog))
    assert code == 2 and "no face" in err, err
