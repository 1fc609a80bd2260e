"""Benchmarks: `python -m bench` (see docs/reference/benchmarks.md)."""
