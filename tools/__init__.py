"""Offline commands: evaluation, benchmarks, galleries."""
