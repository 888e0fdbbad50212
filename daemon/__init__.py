"""The facestream command line, configuration and wiring."""

__version__ = "0.1.0"
