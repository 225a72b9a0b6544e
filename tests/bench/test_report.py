"""The summary, the headline figures and the settings a run reports (benchmarks/report.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from trtinfer.benchmarks.options import BenchSettings
from trtinfer.benchmarks.report import HEADLINE_BATCH, add_speedups, settings_record, summary
from trtinfer.benchmarks.results import CaseResult


def _row(backend: str, batch: int, rate: float, kind: str = "ours", precision: str = "fp32", scenario: str = "offline",
         drop: float | None = None, latency_ms: dict[str, float] | None = None, **extra) -> CaseResult:
    return CaseResult(backend, precision, "cpu", batch, scenario, kind=kind, throughput=rate,
                      latency_ms=latency_ms or {"p50": 1.0, "p90": 2.0, "p99": 3.0}, accuracy_drop_points=drop, **extra)


def _records() -> list[CaseResult]:
    b = HEADLINE_BATCH
    return [
        _row("torch-eager", 1, 10.0, kind="baseline", scenario="single-stream"),
        _row("torch-eager", b, 100.0, kind="baseline"),
        _row("onnxruntime", b, 300.0),
        _row("openvino", b, 500.0, precision="int8", drop=2.0),  # faster, but over the headline's allowed drop
        _row("openvino-nncf", b, 400.0, kind="peer", precision="int8"),
        _row("auto", b, 380.0, precision="int8", options={"chosen": "openvino"}),
        _row("auto", 1, 50.0, precision="int8", scenario="server", concurrency=4,
             options={"max_batch": 8, "vs_offline_reference": 0.8}),
        _row("auto", 1, 60.0, precision="int8", scenario="server", concurrency=64, latency_ms={"p99": 40.0}),
        CaseResult("tensorrt", "fp32", "cuda", None, "offline", status="skipped", reason="no GPU"),
    ]


def test_speedups_are_against_eager_at_the_same_batch_and_never_for_the_server():
    records = _records()
    add_speedups(records)
    by = {(r.backend, r.precision, r.scenario, r.concurrency): r.speedup_vs_eager for r in records}
    assert by[("onnxruntime", "fp32", "offline", None)] == pytest.approx(3.0)
    assert by[("torch-eager", "fp32", "single-stream", None)] == 1.0
    assert by[("auto", "int8", "server", 4)] is None and by[("tensorrt", "fp32", "offline", None)] is None


def test_summary_names_the_mlperf_scenarios_and_the_headline():
    s = BenchSettings(Path("m.pth"), concurrency=(4, 64), latency_bound_ms=15.0)
    out = summary(_records(), s)
    assert out["single_stream"] == [{"case": "torch-eager fp32 cpu", "p90_ms": 2.0}]
    # the best batch size of each backend and precision (eager's batch 32 over its batch 1), fastest first
    assert [o["throughput"] for o in out["offline"]] == [500.0, 400.0, 380.0, 300.0, 100.0]
    (server,) = out["server"]
    assert server["best_under_bound"] == {"concurrency": 4, "throughput": 50.0}  # x64 is over the 15 ms bound
    assert [p["concurrency"] for p in server["points"]] == [4, 64]
    h = out["headline"]
    assert h["fastest_ours_cpu_vs_eager"]["case"] == "auto -> openvino int8"  # openvino int8 dropped too much
    assert h["fastest_ours_cpu_vs_eager"]["speedup"] == pytest.approx(3.8)
    assert h["fastest_peer_cpu_vs_eager"]["speedup"] == pytest.approx(4.0)
    (vs_peer,) = h["auto_vs_fastest_peer"]
    assert vs_peer["peer"] == "openvino-nncf int8" and vs_peer["ratio"] == pytest.approx(0.95)
    assert "server_vs_offline" not in h  # only the largest concurrency is reported, and it has no reference


def test_the_settings_record_holds_paths_as_text_and_what_ran():
    s = BenchSettings(Path("m.pth"), artifact_dirs=[Path("a")], build={"eval_data": Path("cifar")},
                      cache_root=Path("cache"))
    record = settings_record(s, 3, {"fp32": (Path("a"), None)}, "random inputs")
    assert record["checkpoint"] == "m.pth" and record["build"] == {"eval_data": "cifar"} and "cache_root" not in record
    assert record["threads"] == 3 and record["artifacts"] == {"fp32": "a"} and record["check_rows"] == "random inputs"
    assert "interleaved" in record["interleaving"]


def test_the_headline_is_against_the_fastest_peer_within_the_allowance_whoever_it_is():
    b = HEADLINE_BATCH
    records = _records() + [
        _row("openvino-benchmark_app", b, 450.0, kind="peer", options={"variant": "throughput", "measured_by": "x"}),
        # the fastest peer of all, but beyond the allowance: never the headline's peer
        _row("openvino-benchmark_app", b, 900.0, kind="peer", precision="int8", drop=1.5,
             options={"variant": "throughput, NNCF IR"}),
    ]
    h = summary(records, BenchSettings(Path("m.pth"), concurrency=(4, 64)))["headline"]
    (auto,) = h["auto_vs_fastest_peer"]  # the INT8 auto row against an FP32 peer: whoever is fastest
    assert auto["peer"] == "openvino-benchmark_app (throughput) fp32" and auto["ratio"] == pytest.approx(380 / 450)
    (top,) = h["fastest_ours_vs_fastest_peer"]  # no peer ran at batch 1: no ratio there
    assert top["batch_size"] == b and top["ours"] == "auto -> openvino int8"
    assert top["peer"] == "openvino-benchmark_app (throughput) fp32" and top["ratio"] == pytest.approx(380 / 450)
    assert top["peer_measured_by"] == "x"
