"""Streaming stages: sources, detect, track, align, embed, match, events."""
