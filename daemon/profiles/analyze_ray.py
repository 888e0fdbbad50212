"""``analyze --ray ADDRESS``: the jobs of ``analyze_jobs`` as Ray tasks (extra ``[cluster]``).

``ADDRESS`` is ``auto`` (the cluster this machine belongs to, or ``RAY_ADDRESS``), ``local`` / ``local:N``
(a cluster of this machine alone, of N CPUs, started and stopped with the command) or a running cluster's
``HOST:PORT`` (or ``ray://HOST:PORT``). One task per video, one CPU each; the gallery and the settings are put
in the object store once and every task is handed the same reference. A worker that dies mid-task (killed,
out of memory, its node lost) is Ray's to retry (``max_retries``): the retry analyses the video from its
start and only a finished attempt's part reaches the driver, so the merged report is complete and has no
duplicate. Tasks tell a small actor when they start and how far they are, which drives the progress bar
and logs a retry (a second start of the same video).
"""

from __future__ import annotations

import logging
import socket
from typing import Any

from daemon.config import Settings
from daemon.profiles.analyze_jobs import GalleryPayload, Progress, VideoJob, VideoPart, analyse_part, failed_part

MAX_RETRIES = 3  # attempts after the first, for a worker lost mid-task (not for a video that fails)


class _Tracker:
    """An actor (0 CPUs): the tasks' reports, drained by the driver."""

    def __init__(self) -> None:
        self.reports: list[tuple[str, int, Any]] = []

    def report(self, kind: str, index: int, value: Any) -> None:
        self.reports.append((kind, index, value))

    def drain(self) -> list[tuple[str, int, Any]]:
        out, self.reports = self.reports, []
        return out


def analyze_video(settings: Settings, gallery: GalleryPayload | None, job: VideoJob, tracker: Any) -> VideoPart:
    """The task (its name is the worker's process title while it runs: ``ray::analyze_video``)."""
    import ray

    from daemon.logs import configure_logging

    configure_logging(settings.log_level, settings.log_format)

    def report(kind: str, index: int, value: Any) -> None:
        ref = tracker.report.remote(kind, index, value)
        if kind == "start":  # waited for: once work begins the driver knows of this attempt, so a loss is a retry
            ray.get(ref, timeout=30)

    return analyse_part(settings, gallery, job, report)


def parse_address(address: str) -> tuple[str, int | None]:
    """``(address for ray.init, CPUs of a local cluster)``; a malformed one is a one-line error."""
    text = address.strip()
    if text == "auto":
        return "auto", None
    if text == "local" or text.startswith("local:"):
        n = text.partition(":")[2]
        if n and (not n.isdigit() or int(n) < 1):
            raise ValueError(f"--ray local:N needs a CPU count of 1 or more, got {address!r}")
        return "local", int(n) if n else None
    host, _, port = text.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(f"--ray must be auto, local, local:N or HOST:PORT of a running Ray cluster, got {address!r}")
    return text, None


def _reachable(address: str) -> None:
    """A cluster address is tried first with a plain connection: Ray itself retries an absent one for minutes."""
    host, _, port = address.removeprefix("ray://").rpartition(":")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=3.0).close()
    except OSError as exc:
        raise ValueError(f"--ray {address}: no Ray cluster reachable there ({exc.strerror or exc})") from None


class RaySession:
    """A connection to a cluster (or a local one this command started), closed with :meth:`close`."""

    def __init__(self, address: str, num_cpus: int | None) -> None:
        import ray

        self.ray = ray
        self.address = address
        opts: dict[str, Any] = {"log_to_driver": False, "logging_level": logging.WARNING}
        if address == "local":
            opts.update(num_cpus=num_cpus, include_dashboard=False)
        try:
            ray.init(address=address, **opts)
        except (ConnectionError, RuntimeError) as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ValueError(f"--ray {address}: cannot connect ({first})") from None

    def describe(self) -> str:
        nodes = [n for n in self.ray.nodes() if n.get("Alive")]
        cpus = int(self.ray.cluster_resources().get("CPU", 0))
        where = "a local Ray cluster" if self.address == "local" else f"the Ray cluster at {self.address}"
        return f"{where} ({len(nodes)} node{'s' if len(nodes) != 1 else ''}, {cpus} CPUs)"

    def run(self, settings: Settings, gallery: GalleryPayload | None, jobs: list[VideoJob],
            progress: Progress) -> dict[int, VideoPart]:
        ray = self.ray
        task = ray.remote(num_cpus=1, max_retries=MAX_RETRIES, retry_exceptions=False)(analyze_video)
        tracker = ray.remote(num_cpus=0)(_Tracker).remote()
        settings_ref, gallery_ref = ray.put(settings), ray.put(gallery)  # once, whatever the number of tasks
        refs = {task.remote(settings_ref, gallery_ref, j, tracker): j for j in jobs}
        parts: dict[int, VideoPart] = {}
        pending = list(refs)

        def drain() -> None:
            for report in ray.get(tracker.drain.remote()):
                progress.report(*report)

        while pending:
            ready, pending = ray.wait(pending, num_returns=1, timeout=0.5)
            drain()
            for ref in ready:
                job = refs[ref]
                try:
                    parts[job.index] = ray.get(ref)
                except ray.exceptions.RayTaskError as exc:  # the task raised: the video's own failure
                    parts[job.index] = failed_part(job, exc.cause if exc.cause is not None else exc)
                except ray.exceptions.RayError as exc:  # workers lost on every attempt, a node gone
                    first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
                    parts[job.index] = failed_part(job, f"lost after {MAX_RETRIES + 1} attempts "
                                                        f"({type(exc).__name__}: {first})")
                progress.finished(job.index)
        drain()
        ray.kill(tracker)
        return parts

    def close(self) -> None:
        self.ray.shutdown()


def connect(address: str) -> RaySession:
    """Connect, or a one-line reason: Ray not installed, a malformed or unreachable address."""
    where, num_cpus = parse_address(address)
    try:
        import ray  # noqa: F401
    except ImportError:
        raise RuntimeError("--ray needs Ray: pip install 'facestream[cluster]'") from None
    if where not in ("auto", "local"):
        _reachable(where)
    return RaySession(where, num_cpus)
