"""The layout rules the code keeps (docs/layout.md): no module over 400 lines, no function over 80, at most 8
modules at the top of daemon/, a docstring in every daemon sub-package saying what lives there, and nothing
outside the runner reaching into a stage."""

from __future__ import annotations

import ast
import re
from pathlib import Path

from cli_helpers import REPO

PACKAGES = ("models", "pipeline", "tools", "daemon")


def _modules() -> list[Path]:
    return sorted(p for pkg in PACKAGES for p in (REPO / pkg).rglob("*.py") if "__pycache__" not in p.parts)


def test_no_module_over_400_lines_and_no_function_over_80() -> None:
    long_modules, long_functions = [], []
    for path in _modules():
        text = path.read_text()
        if len(text.splitlines()) > 400:
            long_modules.append(str(path.relative_to(REPO)))
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.end_lineno - node.lineno >= 80:
                long_functions.append(f"{path.relative_to(REPO)}:{node.name}")
    assert long_modules == [] and long_functions == []


def test_daemon_is_rooms_with_a_small_core() -> None:
    top = sorted(p.name for p in (REPO / "daemon").glob("*.py"))
    assert len(top) <= 8, top
    rooms = sorted(p for p in (REPO / "daemon").iterdir() if p.is_dir() and (p / "__init__.py").exists())
    assert {r.name for r in rooms} >= {"cli", "config", "http", "profiles", "sinks", "stores", "bench"}
    for room in rooms:
        doc = ast.get_docstring(ast.parse((room / "__init__.py").read_text()))
        assert doc and len(doc) > 40, f"daemon/{room.name}/__init__.py says nothing of what lives there"


def test_nothing_outside_the_runner_reaches_into_a_stage() -> None:
    private = re.compile(r"\._(match|events|detect|embed|track|stages|queues|sinks|servers)\b|\.(match|events|embed"
                         r"|detect|track)\.(state|gate|observers|frames_\w+|faces_embedded|latency\w*|publish)\b")
    hits = [f"{p.relative_to(REPO)}:{i}" for p in _modules() if p.name != "runner.py"
            for i, line in enumerate(p.read_text().splitlines(), 1) if private.search(line)]
    assert hits == []
