"""Offline commands: gallery build/enrol/calibrate, evaluation, benchmarks."""
