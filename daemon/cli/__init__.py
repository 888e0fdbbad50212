"""The ``facestream`` command line: the parser and its commands, one module per command group (``models``,
``evaluate``, ``gallery``, ``run``, ``bench``, ``profiles``, ``keys``), how results are printed (``printing``),
and the console script's first step (``startup``). Importing this package is cheap: the console script
installs its signal handlers before anything heavy loads."""

from __future__ import annotations


def main(argv: list[str] | None = None) -> int:
    from daemon.cli.parser import main as run

    return run(argv)
