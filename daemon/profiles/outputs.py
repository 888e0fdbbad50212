"""Video-analysis outputs: a per-identity timeline CSV and an annotated MP4 per source."""

from __future__ import annotations

import contextlib
from collections import defaultdict
from pathlib import Path

import cv2

from pipeline.csv_files import write_dicts
from pipeline.private_files import open_private, tighten
from pipeline.types import MatchedFrame


class Timeline:
    """Collects the tracks that claimed an identity; appearances closer than ``gap_s`` merge."""

    def __init__(self, gap_s: float = 1.0, path: Path | None = None) -> None:
        self.gap_s = gap_s
        self.path = path  # written when the daemon closes it
        self.spans: dict[tuple[str, str], list[tuple[float, float]]] = defaultdict(list)

    def observe(self, msg: MatchedFrame, claims: dict[int, str | None]) -> None:
        for e in msg.ended:
            if e.identity is not None:
                self.spans[(msg.tracked.frame.source_id, e.identity)].append((e.ended.first_time, e.ended.last_time))

    def source_ended(self, source_id: str) -> None:
        pass

    def rows(self) -> list[dict]:
        out = []
        for (src, ident), spans in sorted(self.spans.items()):
            merged: list[list[float]] = []
            for a, b in sorted(spans):
                if merged and a - merged[-1][1] <= self.gap_s:
                    merged[-1][1] = max(merged[-1][1], b)
                else:
                    merged.append([a, b])
            out.append({"source": src, "identity": ident, "first_seen_s": round(merged[0][0], 3),
                        "last_seen_s": round(merged[-1][1], 3),
                        "seconds_on_screen": round(sum(b - a for a, b in merged), 3), "appearances": len(merged)})
        return out

    def close(self) -> None:
        if self.path is not None:
            self.write(self.path)

    def write(self, path: Path) -> None:
        """The CSV names people: created, or truncated and tightened, mode 0600; formulas escaped."""
        write_dicts(path, ["source", "identity", "first_seen_s", "last_seen_s", "seconds_on_screen", "appearances"],
                    self.rows())


class Annotator:
    """Writes ``DIR/<source>.annotated.mp4`` with each track's box and claimed name."""

    def __init__(self, out_dir: Path, fps: dict[str, float]) -> None:
        if not out_dir.is_dir():
            raise ValueError(f"annotated video folder {out_dir} does not exist")
        self.out_dir = out_dir
        self.fps = fps
        self.writers: dict[str, cv2.VideoWriter] = {}
        self.paths: dict[str, Path] = {}

    def observe(self, msg: MatchedFrame, claims: dict[int, str | None]) -> None:
        frame = msg.tracked.frame
        img = cv2.cvtColor(frame.image, cv2.COLOR_RGB2BGR)
        for v in msg.tracked.tracks:
            name = claims.get(v.track_id)
            color = (0, 200, 0) if name else (0, 165, 255)
            x1, y1, x2, y2 = (round(c) for c in v.box)
            cv2.rectangle(img, (x1, y1), (x2, y2), color, 2)
            cv2.putText(img, f"#{v.track_id} {name or 'unknown'}", (x1, max(12, y1 - 6)), cv2.FONT_HERSHEY_SIMPLEX,
                        0.5, color, 1, cv2.LINE_AA)
        w = self.writers.get(frame.source_id)
        if w is None:
            path = self.out_dir / f"{frame.source_id}.annotated.mp4"
            # OpenCV creates the file 0666 less the umask and keeps an existing file's mode; the video shows
            # faces with names on them, so it is made (or tightened to) 0600 before the writer truncates it.
            open_private(path, "wb").close()
            w = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), self.fps.get(frame.source_id, 25.0),
                                (img.shape[1], img.shape[0]))
            self.paths[frame.source_id] = path
            self.writers[frame.source_id] = w
        w.write(img)

    def source_ended(self, source_id: str) -> None:
        w = self.writers.pop(source_id, None)
        if w is not None:
            w.release()
            with contextlib.suppress(FileNotFoundError):
                tighten(self.paths.pop(source_id))  # in case the muxer replaced the file it was given

    def close(self) -> None:
        for sid in list(self.writers):
            self.source_ended(sid)
