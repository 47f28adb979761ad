"""Benchmarks: `make bench` (python -m bench). Ratios against reference encoders in one run."""
