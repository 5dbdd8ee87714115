"""Runnable benchmarks: `make bench` runs them all; each is also `python -m benchmarks.NAME`."""
