"""Identity names: the one rule every entry point applies (CLI, CSV, folder names, video enrolment, the API),
the key two names collide on, and the file names derived from a name.

A name ends up in SQL rows, JSON events, CSV cells, HTML and file names (``best/<name>.jpg``), so the rule is
narrow: after Unicode NFKC normalisation (``ｊｏｅ`` is ``joe``), 1-64 characters, a letter or digit first,
then letters, digits, spaces, ``.``, ``_``, ``'`` and ``-``: no path separators, control characters or escape
sequences. Two names collide when they read the same to a person: equal after case folding, look-alike
characters mapped to one (Unicode's confusables, as shipped by ``confusable_homoglyphs``: a Cyrillic ``а`` is
a Latin ``a``) and ``_``, ``-``, ``.`` and spaces taken as one separator; ``JOE_BIDEN`` beside ``joe_biden``
would let one person's events be read as the other's.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import re
import unicodedata
from collections.abc import Iterable
from pathlib import Path

MAX_CHARS = 64
RULE = (f"1-{MAX_CHARS} characters, a letter or digit first, then letters, digits, spaces, '.', '_', ''' or '-'")
_NAME = re.compile(rf"^[^\W_][\w .'\-]{{0,{MAX_CHARS - 1}}}$")
_SEPARATORS = re.compile(r"[\s_.\-']+")
_FILE_SAFE = re.compile(r"[^A-Za-z0-9._-]+")


class BadName(ValueError):
    """A name the rule refuses, or one that collides with a name already in use; the message is one line."""


def clip(text: str, n: int = 100) -> str:
    """At most ``n`` characters of something a user sent, for a message."""
    return text if len(text) <= n else text[:n] + "..."


def clean_name(raw: str) -> str:
    """The name as stored (NFKC, trimmed), or :class:`BadName` saying why not."""
    if not isinstance(raw, str):
        raise BadName(f"an identity name must be text, not {type(raw).__name__}")
    name = unicodedata.normalize("NFKC", raw).strip()
    if not _NAME.match(name):
        raise BadName(f"bad identity name {clip(raw)!r}: {RULE}")
    return name


def is_valid(name: str) -> bool:
    """True when ``name`` is exactly as the rule would store it (an old gallery may hold names that are not)."""
    try:
        return clean_name(name) == name
    except BadName:
        return False


@functools.cache
def _lookalikes() -> dict[str, str]:
    """Each confusable character mapped to the smallest code point of its group of look-alikes."""
    import confusable_homoglyphs

    data = json.loads((Path(confusable_homoglyphs.__file__).parent / "confusables.json").read_text("utf-8"))
    parent: dict[str, str] = {}

    def find(c: str) -> str:
        parent.setdefault(c, c)
        while parent[c] != c:
            parent[c] = parent[parent[c]]
            c = parent[c]
        return c

    for char, glyphs in data.items():
        for g in glyphs:
            other = g["c"].replace("\u200e", "").replace("\u200f", "")
            if len(char) == 1 and len(other) == 1:
                a, b = find(char), find(other)
                if a != b:
                    parent[max(a, b)] = min(a, b)
    return {c: find(c) for c in parent if find(c) != c}


def name_key(name: str) -> str:
    """What two names are compared on: case folded, look-alikes mapped, separators unified."""
    folded = unicodedata.normalize("NFKC", name).casefold()
    table = _lookalikes()
    mapped = "".join(table.get(c, c) for c in folded)
    return _SEPARATORS.sub("_", mapped).strip("_")


def check_new_name(raw: str, existing: Iterable[str], same: str | None = None) -> str:
    """``raw`` cleaned, refused when it collides with a name in ``existing`` other than itself (an exact match
    is the same person; ``same`` is a name being renamed, which may keep its own key)."""
    name = clean_name(raw)
    key = name_key(name)
    for other in existing:
        if other in (name, same):
            continue
        if name_key(other) == key:
            raise BadName(f"identity name {clip(name)!r} is too like the existing {clip(other)!r} (the same after "
                          "case folding and look-alike characters): use that name, or one that differs")
    return name


def collisions(names: Iterable[str]) -> list[tuple[str, str]]:
    """Pairs of distinct names in ``names`` that collide, first seen first."""
    seen: dict[str, str] = {}
    out = []
    for n in names:
        k = name_key(n)
        if k in seen and seen[k] != n:
            out.append((seen[k], n))
        seen.setdefault(k, n)
    return out


def file_stem(name: str) -> str:
    """A file name for ``name`` that is one path component of safe ASCII: letters, digits, ``.``, ``_``, ``-``,
    never starting with a dot; a name that had to be changed gets a hash of the original so two names never
    share a file."""
    stem = _FILE_SAFE.sub("_", unicodedata.normalize("NFKC", name)).strip("._")[:64] or "identity"
    if stem != name:
        stem += "-" + hashlib.sha256(name.encode("utf-8", "surrogatepass")).hexdigest()[:8]
    return stem


def inside(folder: Path, relative: str | os.PathLike[str]) -> Path:
    """``folder / relative``, or a ValueError when it would resolve outside ``folder`` (symlinks included)."""
    base = Path(folder).resolve()
    target = (base / relative).resolve()
    if target != base and base not in target.parents:
        raise ValueError(f"refusing to write {clip(str(relative))!r}: it resolves outside {base}")
    return target
