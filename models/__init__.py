"""Detector and embedder families, weight loaders, export and runtimes."""
