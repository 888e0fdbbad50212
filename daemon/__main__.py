"""``python -m daemon``: the ``facestream`` console script."""

from daemon.startup import main

main()
