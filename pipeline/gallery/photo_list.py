"""Which photo shows whom: a folder per identity, or a ``filename,identity[,role]`` CSV.

Names that will be enrolled follow the name rule (``pipeline/names.py``) and must not collide with each
other; an evaluation's probe labels are only compared, never stored, so they are taken as they are.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

from pipeline.names import BadName, clean_name, clip, collisions


@dataclass(frozen=True)
class Source:
    path: Path
    identity: str


def collect_sources(src: str | Path, role: str | None = None, strict: bool = True) -> list[Source]:
    """A folder of identity folders, or a CSV ``filename,identity[,role]`` (paths relative to it). Names that
    will be enrolled follow the name rule (``strict``); probes' labels are only compared, never stored."""
    name_of = clean_name if strict else str
    src = Path(src)
    if src.is_dir():
        if role:
            raise ValueError("--role applies to a CSV source, not a folder")
        out = []
        for d in sorted(p for p in src.iterdir() if p.is_dir() and not p.name.startswith(".")):
            try:
                name = name_of(d.name)
            except BadName as exc:
                raise ValueError(f"{src}: folder {clip(d.name)!r}: {exc}") from None
            out += [Source(f, name) for f in sorted(d.rglob("*")) if f.is_file() and not f.name.startswith(".")]
        if not out:
            raise ValueError(f"{src}: no identity folders with files in them")
        if strict:
            _refuse_collisions(src, out)
        return out
    if not src.is_file():
        raise ValueError(f"{src} is neither a folder nor a CSV file")
    try:
        with src.open(newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            cols = set(reader.fieldnames or [])
            if not {"filename", "identity"} <= cols:
                raise ValueError(f"{src}: CSV needs columns filename,identity[,role]")
            if role and "role" not in cols:
                raise ValueError(f"{src}: --role {role} given but the CSV has no role column")
            out = []
            for r in reader:
                if role and (r.get("role") or "").strip() != role:
                    continue
                name, ident = (r.get("filename") or "").strip(), (r.get("identity") or "").strip()
                if not name or not ident:
                    raise ValueError(f"{src}:{reader.line_num}: row needs a filename and an identity")
                try:
                    ident = name_of(ident)
                except BadName as exc:
                    raise ValueError(f"{src}:{reader.line_num}: {exc}") from None
                out.append(Source(src.parent / name, ident))
    except UnicodeDecodeError:
        raise ValueError(f"{src}: not a UTF-8 CSV file") from None
    if not out:
        raise ValueError(f"{src}: no rows" + (f" with role {role!r}" if role else ""))
    if strict:
        _refuse_collisions(src, out)
    return out


def _refuse_collisions(src: Path, sources: list[Source]) -> None:
    """Two spellings of one name (``JOE_BIDEN`` and ``joe_biden``) would enrol one person twice."""
    if clash := collisions(dict.fromkeys(s.identity for s in sources)):
        a, b = clash[0]
        raise ValueError(f"{src}: identity names {clip(a)!r} and {clip(b)!r} are too alike (the same after case "
                         "folding and look-alike characters): use one name for one person")


def holdout(sources: list[Source], n: int, seed: int) -> tuple[list[Source], list[str]]:
    """Withhold ``n`` identities chosen by ``seed`` (open-set evaluation: they become strangers)."""
    import random

    names = sorted({s.identity for s in sources})
    if not 0 < n < len(names):
        raise ValueError(f"--holdout must be between 1 and {len(names) - 1}, got {n}")
    out = sorted(random.Random(seed).sample(names, n))
    gone = set(out)
    return [s for s in sources if s.identity not in gone], out
