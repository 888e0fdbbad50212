"""Helpers of the command-line tests: where the repository is, photos linked into identity folders, and the
one-line error every bad input must give."""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def link_photos(root: Path, source: Path, spec: dict[str, list[str]]) -> Path:
    for name, files in spec.items():
        (root / name).mkdir(parents=True, exist_ok=True)
        for f in files:
            (root / name / f).symlink_to(source / name / f)
    return root


def one_error_line(stderr: str, *needles: str) -> str:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("facestream: error: "), stderr
    assert all(n in lines[0] for n in needles), lines[0]
    return lines[0]
