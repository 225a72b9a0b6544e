"""The CPU-backend benchmark script runs end to end (a real, tiny run; its numbers are not asserted)."""

from __future__ import annotations

from trtinfer.benchmarks.cpu_backends import main


def test_cpu_backends_benchmark_runs(tiny_artifact, capsys):
    assert main([str(tiny_artifact), "--batch", "4", "--rounds", "1", "--calls", "1", "--threads", "1"]) == 0
    out = capsys.readouterr().out
    assert "onnxruntime fp32" in out and "img/s" in out
