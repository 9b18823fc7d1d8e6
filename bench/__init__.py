"""Benchmarks: each runs tubeflow and a baseline in the same run and reports the ratio (see docs/benchmarks.md)."""
