"""``python -m daemon``: the ``facestream`` console script."""

from daemon.cli.startup import main

main()
