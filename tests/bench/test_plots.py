"""The PNG plots of a run (benchmarks/plots.py), from rows made up here: each plot is written where it has data."""

from __future__ import annotations

from PIL import Image

from trtinfer.benchmarks.plots import write_plots
from trtinfer.benchmarks.results import BenchResults, CaseResult


def _row(backend: str, batch: int, rate: float, scenario: str = "offline", **extra) -> CaseResult:
    return CaseResult(backend, "fp32", "cpu", batch, scenario, throughput=rate,
                      latency_ms={"p50": 1000 * batch / rate, "p99": 2000 * batch / rate}, **extra)


def test_every_plot_with_data_is_written(tmp_path):
    cases = [_row("torch-eager", 1, 50.0, "single-stream", kind="baseline", accuracy=0.9),
             _row("torch-eager", 8, 200.0, kind="baseline", accuracy=0.9),
             _row("onnxruntime", 1, 120.0, "single-stream", accuracy=0.9),
             _row("onnxruntime", 8, 600.0, accuracy=0.9),
             _row("auto", 1, 300.0, "server", concurrency=4), _row("auto", 1, 500.0, "server", concurrency=16),
             CaseResult("tensorrt", "fp32", "cuda", None, "offline", status="skipped", reason="no GPU")]
    results = BenchResults(environment={"cpu": {"model": "CPU A", "threads_used": 2}},
                           settings={"latency_bound_ms": 15.0}, cases=cases)
    written = write_plots(results, tmp_path / "plots")
    names = ["throughput.png", "latency_vs_batch.png", "accuracy_vs_throughput.png", "server.png"]
    assert written == [tmp_path / "plots" / n for n in names]
    for path in written:
        with Image.open(path) as img:
            assert img.format == "PNG" and img.size[0] > 300


def test_plots_without_their_data_are_left_out(tmp_path):
    results = BenchResults(environment={}, settings={}, cases=[_row("torch-eager", 8, 200.0, kind="baseline")])
    assert [p.name for p in write_plots(results, tmp_path)] == ["throughput.png", "latency_vs_batch.png"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["latency_vs_batch.png", "throughput.png"]
