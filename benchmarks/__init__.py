"""Benchmarks: run with `python -m benchmarks.<name>`; each prints ratios, not just seconds."""
