"""OpenVINO's own benchmark_app as a peer (benchmarks/openvino_peers.py): its report parsed from captured
output of real runs (ResNet-18 at 32x32 on an AMX Xeon: one that ran, one OpenVINO could not compile under
its default bf16), and one real run on a tiny ONNX model through the case the bench times."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from trtinfer.benchmarks import openvino_peers as OV

DATA = Path(__file__).parent / "data"


def test_the_report_of_a_real_run_is_parsed():
    report = OV.parse_report((DATA / "benchmark_app_throughput_fp32.txt").read_text())
    assert report.iterations == 8 and report.duration_ms == pytest.approx(96.54)
    assert report.throughput == pytest.approx(2651.84)
    assert report.throughput == pytest.approx(32 * report.iterations / (report.duration_ms / 1e3), rel=1e-3)
    assert report.latency_ms == {"p50": 18.36, "mean": 23.74, "min": 15.90, "max": 51.72}
    assert (report.requests, report.streams, report.inference_precision) == (2, 2, "bf16")


def test_times_in_microseconds_are_read_as_ms():
    report = OV.parse_report((DATA / "benchmark_app_tiny_us.txt").read_text())  # a tiny model's run
    assert report.latency_ms == pytest.approx({"p50": 0.09962, "mean": 0.23441, "min": 0.06924, "max": 0.66827})
    assert report.duration_ms == pytest.approx(1.12) and report.iterations == 4


def test_a_compile_failure_is_openvino_s_message_on_one_line():
    output = (DATA / "benchmark_app_int8_no_implementation.txt").read_text()
    line = OV.error_line(output)
    assert "\n" not in line and "Exception from" not in line and "Traceback" not in line
    assert line.startswith("Check '!implementations.empty()' failed at") and "No suitable implementations" in line
    with pytest.raises(ValueError, match="no iterations line"):
        OV.parse_report(output)


def test_window_settings_follow_the_bench_seconds():
    probes = []
    w = OV.AppWorkload(lambda **kw: probes.append(kw) or OV.AppReport(4, 40.0, 400.0, {}), batch=4)
    assert w.window_args(0.02) == {"iterations": OV.MIN_ITERATIONS} and probes == [{"iterations": OV.MIN_ITERATIONS}]
    assert w.rate == pytest.approx(100.0)  # 4 iterations in 40 ms: probed once, outside the windows
    assert w.window_args(2.0) == {"seconds": 2}  # -t takes whole seconds
    assert w.window_args(0.02) == {"iterations": OV.MIN_ITERATIONS}  # a quick run: the fewest honest
    assert w.window_args(0.5) == {"iterations": 50} and len(probes) == 1  # the probe's rate times the window
    w.calls = 7
    assert w.window_args(2.0) == {"iterations": 7}  # --iterations


def _tiny_onnx(path: Path) -> Path:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    weights = [numpy_helper.from_array(rng.standard_normal(shape).astype(np.float32), name)
               for name, shape in (("w", (4, 3, 3, 3)), ("fc", (4, 10)))]
    nodes = [helper.make_node("Conv", ["input", "w"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c"], ["r"]), helper.make_node("GlobalAveragePool", ["r"], ["p"]),
             helper.make_node("Flatten", ["p"], ["f"]), helper.make_node("MatMul", ["f", "fc"], ["logits"])]
    graph = helper.make_graph(nodes, "tiny", [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, 8, 8])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 10])], weights)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


def test_a_real_benchmark_app_run_times_the_file_the_check_ran(tmp_path):
    pytest.importorskip("openvino")
    if OV.find_benchmark_app() is None:
        pytest.skip("benchmark_app is not installed")
    case = OV.BenchmarkAppCase(_tiny_onnx(tmp_path / "tiny.onnx"), "fp32", 1, "throughput", (2,))
    try:
        case.open()
        x = np.random.default_rng(1).standard_normal((2, 3, 8, 8)).astype(np.float32)
        assert case.infer(x).shape == (2, 10)  # compiled here, static shape, benchmark_app's configuration
        assert case.info.options["inference_precision"] in ("f32", "bf16", "f16")
        workload = case.workload(x)
        workload.warmup(1, 0.0)
        window = workload.window(0.01)
        report = workload.reports[-1]
        assert report.iterations >= OV.MIN_ITERATIONS and window.items == 2 * report.iterations
        assert window.throughput == pytest.approx(report.throughput)
        latency = workload.latency_ms()  # in ms, whatever unit benchmark_app printed (us for a tiny model)
        assert set(latency) == {"p50", "mean", "min", "max"} and 0 < latency["min"] <= latency["p50"] <= latency["max"]
        assert workload.settings()["requests"] >= 1
    finally:
        case.close()
    with pytest.raises(OV.BenchmarkAppFailed) as failed:
        OV.run_benchmark_app(OV.benchmark_app_command(case.exe or "benchmark_app", tmp_path / "missing.onnx", [1, 3, 8, 8],
                                                      "latency", tmp_path / "none.json", iterations=1))
    assert "\n" not in str(failed.value) and str(failed.value)
