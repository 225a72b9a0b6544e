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


def _run_of_18() -> BenchResults:
    """A run's 18 CPU rows at batch 1 and 32, several at near-identical points (the peers that run the same
    file), and the server scenario of three precisions."""
    rows = [  # backend, precision, kind, variant, chosen, img/s at batch 32, top-1
        ("auto", "int8", "ours", None, "openvino", 7869.0, 0.9120), ("auto", "fp32", "ours", None, "openvino-bf16", 3300.0, 0.9231),
        ("auto", "fp16", "ours", None, "onnxruntime", 3255.0, 0.9233), ("onnxruntime", "fp32", "ours", None, None, 3255.0, 0.9233),
        ("onnxruntime", "fp16", "ours", None, None, 3190.0, 0.9232), ("onnxruntime", "int8", "ours", None, None, 5020.0, 0.9118),
        ("openvino", "fp32", "ours", None, None, 3240.0, 0.9233), ("openvino", "fp16", "ours", None, None, 3236.0, 0.9233),
        ("openvino", "int8", "ours", None, None, 7869.0, 0.9120), ("torch-eager", "fp32", "baseline", None, None, 1460.0, 0.9233),
        ("torchscript", "fp32", "baseline", None, None, 1610.0, 0.9233),
        ("torch-dynamic-quant", "int8", "baseline", None, None, 1455.0, 0.9232),
        ("torch-compile", "fp32", "peer", None, None, 2210.0, 0.9233), ("onnxruntime-bare", "fp32", "peer", "spin", None, 3422.0, 0.9233),
        ("onnxruntime-bare", "fp32", "peer", "no spin", None, 3390.0, 0.9233), ("openvino-nncf", "int8", "peer", None, None, 8100.0, 0.9125),
        ("openvino-benchmark_app", "int8", "peer", "throughput, NNCF IR", None, 9642.0, 0.9125),
        ("openvino-benchmark_app", "fp32", "peer", "throughput", None, 3350.0, 0.9230),
    ]
    cases = []
    for backend, precision, kind, variant, chosen, rate, top1 in rows:
        options = {k: v for k, v in (("variant", variant), ("chosen", chosen)) if v}
        for batch, share in ((1, 0.35), (32, 1.0)):
            cases.append(CaseResult(backend, precision, "cpu", batch, "single-stream" if batch == 1 else "offline",
                                    kind=kind, throughput=rate * share, accuracy=top1, options=dict(options),
                                    latency_ms={"p50": 1000 * batch / (rate * share), "p99": 1500 * batch / (rate * share)}))
    for precision, rate in (("int8", 6100.0), ("fp32", 2900.0), ("fp16", 2850.0)):
        for clients, share in ((1, 0.25), (8, 0.8), (64, 0.95)):
            cases.append(CaseResult("auto", precision, "cpu", 1, "server", concurrency=clients, throughput=rate * share,
                                    latency_ms={"p99": 1000 * clients / (rate * share) + 0.5}))
    return BenchResults(environment={"cpu": {"model": "Intel(R) Xeon(R) Processor", "threads_used": 2}},
                        settings={"latency_bound_ms": 15.0}, cases=cases)


def _drawn_texts(fig) -> list:
    """Every text the figure draws: titles, axis labels, tick labels in view, legend entries, annotations."""
    from matplotlib.text import Text

    fig.canvas.draw()
    texts = [t for t in fig.findobj(Text) if t.get_visible() and t.get_text().strip()]
    drawn = []
    for ax in fig.axes:
        for axis, (lo, hi) in ((ax.xaxis, sorted(ax.get_xlim())), (ax.yaxis, sorted(ax.get_ylim()))):
            for tick in axis.get_major_ticks() + axis.get_minor_ticks():
                if not lo <= tick.get_loc() <= hi:  # ticks outside the view are not drawn
                    drawn.append(tick.label1)
                    drawn.append(tick.label2)
    return [t for t in texts if not any(t is d for d in drawn)]


def test_no_two_texts_of_any_plot_overlap_with_18_rows(tmp_path):
    import matplotlib.pyplot as plt
    from matplotlib.text import Text

    from trtinfer.benchmarks.plots import figures

    figs = figures(_run_of_18())
    assert set(figs) == {"throughput.png", "latency_vs_batch.png", "accuracy_vs_throughput.png", "server.png"}
    for name, fig in figs.items():
        renderer = fig.canvas.get_renderer()
        texts = _drawn_texts(fig)
        boxes = [(t.get_text(), Text.get_window_extent(t, renderer)) for t in texts]  # an annotation's text, not its leader
        assert len(boxes) >= 18 if name != "server.png" else len(boxes) >= 9
        clashes = [(a, b) for i, (a, box_a) in enumerate(boxes) for b, box_b in boxes[i + 1:] if box_a.overlaps(box_b)
                   and box_a.width > 0 and box_b.width > 0]
        assert not clashes, f"{name}: {clashes[:5]}"
        plt.close(fig)
