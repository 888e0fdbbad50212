"""``analyze --workers N`` and ``analyze --ray ADDRESS`` (issue 21, item 1) against a one-process run of the
same clips (Hamilton and Obama, trimmed to 2 s): the same events minus wall-clock fields, timeline and face
index. A pool of two: a video that fails on a worker is reported with its reason and the exit code while
the others are analysed. A real two-node Ray cluster on 127.0.0.1 (``ray start`` subprocesses, its own
token and temp dir, stopped by pid): a worker killed with SIGKILL mid-task is retried and logged, the
report complete with no duplicate, the lost part folder swept. An unreachable ``--ray`` address is one
line and exit 2."""

from __future__ import annotations

import csv
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from cli_helpers import REPO, one_error_line
from daemon_helpers import free_port

CLIPS = {"hamilton": ("face_recognition_examples/video/short_hamilton_clip.mp4", "3"),
         "obama": ("videos/known_identity/obama_speech.mp4", "0")}
WALL_CLOCK = ("event_id", "time", "epoch")
CLI = [sys.executable, "-c", "import sys; from daemon.cli import main; sys.exit(main(sys.argv[1:]))"]
ENV = {"FACESTREAM_EMBEDDER__RUNTIME": "torch", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
       "PYTHONPATH": str(REPO), "RAY_USAGE_STATS_ENABLED": "0"}


def _ray(*args: str, env: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "ray.scripts.scripts", *args], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


def _pids_of(marker: str) -> set[int]:
    """Live processes whose command line names our cluster's temp dir, and their children (workers, agents)."""
    found: set[int] = set()
    parents: dict[int, int] = {}
    for d in filter(str.isdigit, os.listdir("/proc")):
        try:
            cmd = Path(f"/proc/{d}/cmdline").read_bytes().decode(errors="replace")
            state, ppid = Path(f"/proc/{d}/stat").read_text().rsplit(")", 1)[1].split()[:2]
        except (OSError, ValueError):
            continue
        if state == "Z":  # a zombie is gone already
            continue
        parents[int(d)] = int(ppid)
        if marker in cmd and int(d) != os.getpid():
            found.add(int(d))
    return found | {p for p, pp in parents.items() if pp in found}


@pytest.fixture(scope="module")
def clips(tmp_path_factory, data_dir: Path) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("clips")
    out = {}
    for name, (rel, start) in CLIPS.items():
        out[name] = folder / f"{name}.mp4"
        subprocess.run(["ffmpeg", "-loglevel", "error", "-ss", start, "-i", str(data_dir / rel), "-t", "2", "-an",
                        "-c:v", "libx264", "-preset", "ultrafast", str(out[name])], check=True, timeout=60)
    out["broken"] = folder / "broken.mp4"
    out["broken"].write_bytes(b"not a video at all\n" * 100)
    return out


@pytest.fixture(scope="module")
def ray_cluster():
    """A head and a second node of one CPU each on 127.0.0.1, its own temp dir; started while the module's
    local reference run works (the fixtures below ask for it first), stopped by pid (``ray stop`` would stop
    every Ray on the machine)."""
    temp = tempfile.mkdtemp(prefix="fsray", dir="/tmp")  # short: Ray's socket paths must fit 107 bytes
    port = free_port()
    # Token authentication with a token of this cluster's own (Ray reads ~/.ray/auth_token otherwise, and a
    # joining node does not unless told to): the head, the node and the driver share it.
    env = {**os.environ, **ENV, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32)}
    head = _ray("start", "--head", f"--port={port}", "--num-cpus=1", "--node-ip-address=127.0.0.1",
                f"--temp-dir={temp}", "--include-dashboard=false", f"--dashboard-port={free_port()}",
                f"--dashboard-agent-listen-port={free_port()}",
                "--disable-usage-stats", env=env)
    state = {"head": head, "temp": temp, "address": f"127.0.0.1:{port}", "env": env}
    yield state
    for pid in _pids_of(temp):  # a test cluster keeps nothing: no grace period
        os.kill(pid, signal.SIGKILL)
    shutil.rmtree(temp, ignore_errors=True)


def _joined(cluster: dict) -> str:
    """The head up, then the second node joined (once)."""
    if "node" not in cluster:
        out, _ = cluster["head"].communicate(timeout=120)
        assert cluster["head"].returncode == 0, out[-2000:]
        node = _ray("start", f"--address={cluster['address']}", "--num-cpus=1", "--node-ip-address=127.0.0.1",
                    f"--dashboard-agent-listen-port={free_port()}", env=cluster["env"])
        out, _ = node.communicate(timeout=120)
        assert node.returncode == 0, out[-2000:]
        cluster["node"] = node
    return cluster["address"]


@pytest.fixture(scope="module")
def local_run(ray_cluster, clips, tmp_path_factory, stills_gallery: Path, one_torch_thread) -> Path:
    """The reference: both clips in one daemon in this process, as ``analyze`` without options runs them."""
    from daemon.config import load_settings
    from daemon.profiles.analyze import run_analyze

    out = tmp_path_factory.mktemp("local") / "analysis"
    result = run_analyze(load_settings(None, embedder={"runtime": "torch"}), stills_gallery,
                         [clips["hamilton"], clips["obama"]], out)
    assert result["exit_code"] == 0 and result["identities"] == ["barack_obama", "lin_manuel_miranda"], result
    return out


def _events(out: Path) -> dict[str, list[dict]]:
    """Each video's events in order, without wall-clock fields (``stats`` are the daemon's, not a video's)."""
    by_source: dict[str, list[dict]] = {}
    for line in (out / "events.jsonl").read_text().splitlines():
        e = json.loads(line)
        if e["topic"] != "stats":
            by_source.setdefault(e["source"], []).append({k: v for k, v in e.items() if k not in WALL_CLOCK})
    return by_source


def _index(out: Path) -> list[tuple]:
    from pipeline.face_index import FaceIndex

    ix = FaceIndex.open(out)
    return sorted((r["video"], r["track_id"], r["start_s"], r["end_s"], r["decision"], r["identity"], r["cluster"],
                   r["face_file"]) for r in ix.rows)


def assert_same_analysis(local: Path, other: Path, sources: list[str]) -> None:
    a, b = _events(local), _events(other)
    assert sorted(a) == sorted(sources) and {s: b[s] for s in sources} == a
    assert all(a[s] for s in sources)
    assert (other / "timeline.csv").read_text() == (local / "timeline.csv").read_text()
    assert list(csv.DictReader((other / "timeline.csv").open()))  # somebody was recognised
    assert _index(other) == _index(local)
    lines = (other / "events.jsonl").read_text().splitlines()
    ids = [json.loads(line)["event_id"] for line in lines]
    assert len(ids) == len(set(ids))  # no event written twice
    order = [json.loads(line).get("source") for line in lines]
    firsts = [order.index(s) for s in sources]
    assert firsts == sorted(firsts)  # video by video, in the order given
    for f in [*other.glob("*.*"), *other.glob("best/*"), *other.glob("faces/*")]:
        assert f.stat().st_mode & 0o777 == 0o600, f
    names = [sorted(p.name for p in o.glob("*.annotated.mp4")) for o in (local, other)]
    assert names[0] == names[1] == sorted(f"{s}.annotated.mp4" for s in sources)


def test_a_pool_of_two_gives_the_one_process_result_and_reports_a_broken_video(local_run, clips, tmp_path,
                                                                              stills_gallery) -> None:
    from daemon.config import load_settings
    from daemon.profiles.analyze_driver import run_jobs

    out = tmp_path / "pool"
    result = run_jobs(load_settings(None, embedder={"runtime": "torch"}), stills_gallery,
                      [clips["hamilton"], clips["obama"], clips["broken"]], out, workers=2)
    assert result["backend"] == "local pool of 2" and result["exit_code"] == 1  # a video not analysed
    [failed] = result["failed"]
    assert failed["video"] == "broken" and "cannot open" in failed["reason"] and "\n" not in failed["reason"]
    assert "broken" in (out / "report.html").read_text()
    assert_same_analysis(local_run, out, ["hamilton", "obama"])


def _kill_first_task(proc: subprocess.Popen, title: str = "ray::analyze_video") -> int | None:
    """SIGKILL the first worker seen running a video (its process title) once it is mid-task: its part folder
    exists (made after the task has told the driver it started, long before it ends); return its pid."""
    while proc.poll() is None:
        for d in filter(str.isdigit, os.listdir("/proc")):
            try:
                running = Path(f"/proc/{d}/cmdline").read_bytes().startswith(title.encode())
            except OSError:
                continue
            if running and any(Path(tempfile.gettempdir()).glob(f"facestream-part-{d}-*")):
                os.kill(int(d), signal.SIGKILL)
                return int(d)
        time.sleep(0.05)
    return None


def test_on_two_nodes_a_worker_killed_mid_task_is_retried(local_run, ray_cluster, clips, tmp_path,
                                                           stills_gallery) -> None:
    address = _joined(ray_cluster)
    out = tmp_path / "ray"
    proc = subprocess.Popen([*CLI, "analyze", str(clips["hamilton"]), str(clips["obama"]), "--gallery",
                             str(stills_gallery), "--out", str(out), "--ray", address, "--json"],
                            cwd=REPO, env=ray_cluster["env"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    killed = _kill_first_task(proc)
    stdout, stderr = proc.communicate(timeout=300)
    assert killed is not None and proc.returncode == 0, stderr[-3000:]
    result = json.loads(stdout.strip().splitlines()[-1])
    assert "2 nodes, 2 CPUs" in result["backend"] and result["failed"] == []
    [(retried, count)] = result["retries"].items()
    assert retried in ("hamilton", "obama") and count == 1
    assert "analyze_job_retried" in stderr and retried in stderr
    assert_same_analysis(local_run, out, ["hamilton", "obama"])
    assert not list(Path(tempfile.gettempdir()).glob(f"facestream-part-{killed}-*"))  # swept by the retry


def test_an_unreachable_ray_address_is_one_line(cli, clips, tmp_path, stills_gallery) -> None:
    port = free_port()  # nothing listens there
    rc, _, err = cli("analyze", clips["obama"], "--gallery", stills_gallery, "--out", tmp_path / "x",
                     "--ray", f"127.0.0.1:{port}")
    assert rc == 2
    one_error_line(err, f"--ray 127.0.0.1:{port}", "no Ray cluster reachable")
    assert not (tmp_path / "x").exists()
    rc, _, err = cli("analyze", clips["obama"], "--out", tmp_path / "y", "--ray", "local:0")
    assert rc == 2 and "CPU count" in one_error_line(err)
