"""Benchmark scripts, imported as ``trtinfer.benchmarks``; run them with ``python -m``."""
