"""``trtinfer bench`` for real: short runs of every CPU backend on a briefly trained ResNet-18 and the
shared CIFAR rows, the files it writes, the correctness check, the cache and ``--compare``.
No assertion here is about speed: figures come from the command itself, not from tests."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image

from trtinfer.benchmarks.cases import ALL_BACKENDS
from trtinfer.cli import main
from trtinfer.manifest import ONNX_NAME, Manifest

pytest_plugins = ["conftest_trained"]

QUICK = ["--input-size", "32", "--normalize", "cifar10", "--batch-sizes", "1,4", "--seconds", "0.05", "--warmup", "1", "--warmup-seconds", "0.05",
         "--max-windows", "3", "--concurrency", "1,4", "--threads", "2",
         "--max-accuracy-drop", "2"]  # 100 eval images: one image is a whole point
CPU_BACKENDS = {"auto", "onnxruntime", "openvino", "onnxruntime-bare", "openvino-nncf", "torch-eager", "torchscript",
                "torch-dynamic-quant", "torch-compile", "torch-int8"}
#: The INT8 the bench builds for itself uses NNCF's default method: trying each method on the 2,000-row slice (the
#: build's default, a third of the bench's build time) is the build's own work, tested by
#: tests/builders/test_build_precision.py::test_fp32_fp16_int8_in_one_call; the cache code is the same either way.
INT8_METHOD = ["--calib-method", "performance"]
#: The full run leaves out benchmark_app (a process per window: about 50 runs here); it runs for real in
#: test_openvino_benchmark_app_rows_come_from_its_own_report.
FIXTURE_BACKENDS = ",".join(b for b in ALL_BACKENDS if b != "openvino-benchmark_app")


@pytest.fixture(scope="module")
def bench_cache(tmp_path_factory) -> Iterator[Path]:
    """The artifact cache every bench run in this module shares (XDG_CACHE_HOME), restored afterwards."""
    cache = tmp_path_factory.mktemp("bench-cache")
    before = os.environ.get("XDG_CACHE_HOME")
    os.environ["XDG_CACHE_HOME"] = str(cache)
    yield cache
    if before is None:
        os.environ.pop("XDG_CACHE_HOME", None)
    else:
        os.environ["XDG_CACHE_HOME"] = before


@pytest.fixture(scope="module")
def fp32_artifact(trained_model, bench_cache, tmp_path_factory) -> Path:
    """The bench's cached FP32 artifact of the trained model: the full run's when it ran, else built by a
    bench run of its own (FP32 only, a few seconds)."""
    def cached() -> Path | None:
        return next((p.parent for p in bench_cache.rglob("manifest.json") if p.parent.name.endswith("fp32")), None)

    if cached() is None:
        code = main(["bench", str(trained_model.state_path), *QUICK, "--precisions", "fp32", "--backends", "onnxruntime",
                     "--scenarios", "offline", "--out", str(tmp_path_factory.mktemp("bench-fp32")), "-q"])
        assert code == 0
    found = cached()
    assert found is not None
    return found


# The full run (about 150 s on 2 cores: every backend, cold builds, torch.compile) and the tests that read it are
# marked long: outside the default run, which stays under 10 minutes; CI runs them after it (README's test command).
@pytest.fixture(scope="module")
def first_run(trained_model, cifar_root, bench_cache, tmp_path_factory):
    """One full default run (every backend that applies), cold: it builds FP32, FP16 and INT8."""
    out = tmp_path_factory.mktemp("bench-out")
    code = main(["bench", str(trained_model.state_path), "--eval-data", str(cifar_root), "--eval-samples", "100",
                 *QUICK, *INT8_METHOD, "--backends", FIXTURE_BACKENDS, "--out", str(out), "-q"])
    assert code == 0
    return out


def _cases(out: Path) -> list[dict]:
    return json.loads((out / "results.json").read_text())["cases"]


# Peers that generate code for this CPU: where that code computes something else, the bench must say so and
# not time it. torch.compile (torch 2.14.1) answered NaN with inductor held to AVX2 (ATEN_CPU_CAPABILITY=avx2,
# scripts/test_variants.sh) on an AMX Xeon; natively it is exact.
CODEGEN_PEERS = {"torch-compile"}


@pytest.mark.long
def test_every_cpu_backend_runs_checked_and_timed(first_run):
    cases = _cases(first_run)
    ran = {c["backend"] for c in cases if c["status"] in ("ok", "unstable")}
    skipped = {c["backend"]: c["reason"] for c in cases if c["status"] == "skipped"}
    refused = {c["backend"]: c["reason"] for c in cases if c["status"] == "failed"}
    # torch-int8 (torchao PT2E) may be missing or broken for this torch: then skipped with the reason
    assert CPU_BACKENDS - {"torch-int8"} - CODEGEN_PEERS <= ran
    assert "torch-int8" in ran or skipped["torch-int8"]
    for peer in CODEGEN_PEERS:
        assert peer in ran or "computes something else" in refused[peer]
    assert set(refused) <= CODEGEN_PEERS, refused
    for backend in ("tensorrt", "ort-cuda", "ort-tensorrt", "torch-cuda", "torch-tensorrt"):
        assert skipped[backend]  # no GPU here: a row with the reason, not a crash
    assert set(skipped) <= set(ALL_BACKENDS)
    for c in cases:
        if c["status"] in ("ok", "unstable"):
            assert c["throughput"] > 0 and set(c["latency_ms"]) >= {"min", "mean", "p50", "p90", "p95", "p99",
                                                                      "max", "std"}
            assert c["accuracy"] is not None and c["correctness"]["passed"] is True
            if c["scenario"] != "server":
                assert c["speedup_vs_eager"] > 0
    precisions = {(c["backend"], c["precision"]) for c in cases if c["status"] in ("ok", "unstable")}
    assert {("onnxruntime", p) for p in ("fp32", "fp16", "int8")} <= precisions
    assert {("openvino", p) for p in ("fp32", "fp16", "int8")} <= precisions
    auto = [c for c in cases if c["backend"] == "auto" and c["status"] in ("ok", "unstable")]
    assert auto and all(c["options"]["chosen"] in ("onnxruntime", "openvino", "openvino-bf16") for c in auto)
    servers = [c for c in cases if c["scenario"] == "server"]
    assert {c["concurrency"] for c in servers} == {1, 4}
    assert {c["batch_size"] for c in cases if c["scenario"] == "single-stream"} == {1}
    dq = next(c for c in cases if c["backend"] == "torch-dynamic-quant" and c["status"] != "skipped")
    assert "convolutions stay FP32" in dq["note"] and dq["options"]["implementation"]


@pytest.mark.long
def test_results_files_and_plots(first_run):
    data = json.loads((first_run / "results.json").read_text())
    assert data["schema"] == "trtinfer-bench" and data["schema_version"] == 1
    env = data["environment"]
    assert env["cpu"]["threads_used"] == 2 and "flags" in env["cpu"] and env["libraries"]["onnxruntime-gpu"]
    assert "interleaved" in data["settings"]["interleaving"]
    assert data["summary"]["offline"] and data["summary"]["single_stream"] and data["summary"]["server"]
    # what load(backend="auto") gets against the fastest peer within the headline's accuracy allowance, whoever it is
    vs_peer = {(a["case"].split()[-1], a["batch_size"]): a for a in data["summary"]["headline"]["auto_vs_fastest_peer"]}
    int8 = vs_peer[("int8", 4)]
    ours = next(c for c in data["cases"] if c["backend"] == "auto" and c["precision"] == "int8" and c["batch_size"] == 4
                and c["scenario"] != "server")
    peer = max((c for c in data["cases"] if c["kind"] == "peer" and c["batch_size"] == 4 and c["device"] == "cpu"
                and c["status"] in ("ok", "unstable") and c["scenario"] != "server"
                and (c["accuracy_drop_points"] is None or c["accuracy_drop_points"] <= 0.5)), key=lambda c: c["throughput"])
    variant = f" ({peer['options']['variant']})" if peer["options"].get("variant") else ""
    assert int8["peer"] == f"{peer['backend']}{variant} {peer['precision']}"
    assert int8["ratio"] == pytest.approx(ours["throughput"] / peer["throughput"])
    top = {t["batch_size"]: t for t in data["summary"]["headline"]["fastest_ours_vs_fastest_peer"]}
    assert top[4]["peer"] == int8["peer"]
    assert (first_run / "results.csv").read_text().startswith("backend,")
    for name in ("throughput.png", "latency_vs_batch.png", "accuracy_vs_throughput.png", "server.png"):
        with Image.open(first_run / name) as img:
            assert img.format == "PNG" and img.size[0] > 300


@pytest.mark.long
def test_second_run_reuses_the_cached_artifacts(first_run, trained_model, cifar_root, bench_cache, capsys):
    built = sorted(p for p in bench_cache.rglob("manifest.json"))
    stamps = [p.stat().st_mtime_ns for p in built]
    assert len(built) == 3
    code = main(["bench", str(trained_model.state_path), "--eval-data", str(cifar_root), "--eval-samples", "100",
                 *QUICK, *INT8_METHOD, "--backends", "auto,torch-eager", "--scenarios", "offline"])
    assert code == 0
    err = capsys.readouterr().err
    assert "reusing cached artifacts" in err and "exporting ONNX" not in err
    assert [p.stat().st_mtime_ns for p in built] == stamps


def test_a_backend_computing_something_else_fails_and_is_not_timed(trained_model, fp32_artifact, cifar_root, tmp_path):
    """An artifact whose model.onnx is another network (its classifier rows rotated by one class),
    re-hashed into its manifest so that load() accepts it: the check against eager FP32 must catch it."""
    import torch

    from trtinfer.builders.export.onnx_export import export_onnx
    from trtinfer.builders.source.archs import build_model, match_arch

    fp32 = fp32_artifact
    wrong = Path(shutil.copytree(fp32, tmp_path / "wrong-fp32"))
    state = torch.load(trained_model.state_path, weights_only=True)
    state["fc.weight"] = torch.roll(state["fc.weight"], 1, dims=0)
    state["fc.bias"] = torch.roll(state["fc.bias"], 1, dims=0)
    export_onnx(build_model(match_arch(state), state), wrong / ONNX_NAME, trained_model.input_size)
    manifest = Manifest.read(wrong)
    manifest.record_file(wrong, ONNX_NAME)
    manifest.write(wrong)
    out = tmp_path / "out"
    code = main(["bench", str(trained_model.state_path), str(wrong), "--eval-data", str(cifar_root),
                 "--eval-samples", "50", *QUICK, "--backends", "onnxruntime,openvino,torch-eager",
                 "--scenarios", "offline", "--out", str(out), "-q"])
    assert code == 0
    cases = _cases(out)
    ours = [c for c in cases if c["backend"] in ("onnxruntime", "openvino")]
    assert ours and all(c["status"] == "failed" and "computes something else" in c["reason"] for c in ours)
    assert all(c["throughput"] is None for c in ours)  # never timed
    assert any(c["backend"] == "torch-eager" and c["throughput"] for c in cases)


def test_mismatched_checkpoint_and_bad_options_are_one_line(trained_model, fp32_artifact, tmp_path, capsys):
    fp32 = fp32_artifact
    other = tmp_path / "other.pth"
    import torch

    state = torch.load(trained_model.state_path, weights_only=True)
    state["fc.bias"] = state["fc.bias"] + 1.0
    torch.save(state, other)
    code = main(["bench", str(other), str(fp32), *QUICK])
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert code == 1 and len(errors) == 1 and "was built from checkpoint sha256" in errors[0]
    code = main(["bench", str(trained_model.state_path), "--backends", "tensorflow"])
    err = capsys.readouterr().err
    assert code == 1 and "unknown backend(s) tensorflow" in err and "torch-eager" in err
    code = main(["bench", str(trained_model.state_path), "--scenarios", "burst"])
    assert code == 1 and "unknown scenario" in capsys.readouterr().err
    code = main(["bench", str(trained_model.state_path), "--batch-sizes", "0,8"])
    assert code == 1 and "--batch-sizes" in capsys.readouterr().err
    code = main(["bench", str(trained_model.state_path), "--threads", "100000"])
    assert code == 1 and "--threads" in capsys.readouterr().err
    (tmp_path / "file").write_text("x")
    code = main(["bench", str(trained_model.state_path), "--out", str(tmp_path / "file")])
    assert code == 1 and "is a file" in capsys.readouterr().err


def test_openvino_benchmark_app_rows_come_from_its_own_report(trained_model, fp32_artifact, cifar_root, tmp_path):
    """OpenVINO's own benchmark_app on our FP32 artifact, both hints, for real: checked on the same file
    compiled here the same way, timed by its report."""
    from trtinfer.benchmarks.openvino_peers import find_benchmark_app

    if find_benchmark_app() is None:
        pytest.skip("benchmark_app is not installed")
    fp32 = fp32_artifact
    code = main(["bench", str(trained_model.state_path), str(fp32), "--eval-data", str(cifar_root),
                 "--eval-samples", "50", *QUICK, "--batch-sizes", "4", "--iterations", "4", "--precisions", "fp32",
                 "--backends", "openvino-benchmark_app,torch-eager", "--scenarios", "offline", "--out", str(tmp_path), "-q"])
    assert code == 0
    rows = [c for c in _cases(tmp_path) if c["backend"] == "openvino-benchmark_app"]
    assert {c["options"]["hint"] for c in rows} == {"throughput", "latency"}
    for c in rows:
        assert c["status"] in ("ok", "unstable"), c["reason"]
        assert c["correctness"]["passed"] and c["accuracy"] is not None
        assert c["throughput"] > 0 and len(c["windows"]) >= 3 and set(c["latency_ms"]) == {"p50", "mean", "min", "max"}
        assert c["options"]["measured_by"].startswith("benchmark_app") and c["options"]["requests"] >= 1
        assert c["options"]["inference_precision"] in ("f32", "bf16", "f16")


def test_without_eval_data_it_says_no_accuracy_ran(trained_model, fp32_artifact, capsys, tmp_path):
    fp32 = fp32_artifact
    code = main(["bench", str(trained_model.state_path), str(fp32), *QUICK, "--backends", "onnxruntime,torch-eager",
                 "--scenarios", "offline", "--out", str(tmp_path)])
    out = capsys.readouterr().out
    assert code == 0 and "no accuracy ran" in out
    cases = _cases(tmp_path)
    assert all(c["accuracy"] is None for c in cases)


@pytest.mark.long
def test_compare_prints_ratios_and_flags_regressions(first_run, tmp_path, capsys):
    same = main(["bench", "--compare", str(first_run / "results.json"), str(first_run / "results.json")])
    assert same == 0 and "within noise" in capsys.readouterr().out
    data = json.loads((first_run / "results.json").read_text())
    for c in data["cases"]:
        if c["throughput"]:
            c["throughput"] *= 0.5
    slower = tmp_path / "slower.json"
    slower.write_text(json.dumps(data))
    code = main(["bench", "--compare", str(first_run / "results.json"), str(slower)])
    captured = capsys.readouterr()
    assert code == 1 and "regression" in captured.out and "regression(s) beyond noise" in captured.err


def test_device_cuda_on_a_host_without_one_skips_every_row_with_its_reason(trained_model, fp32_artifact, tmp_path):
    fp32 = fp32_artifact
    code = main(["bench", str(trained_model.state_path), str(fp32), *QUICK, "--device", "cuda", "--precisions", "fp32",
                 "--out", str(tmp_path), "-q"])
    assert code == 0
    cases = _cases(tmp_path)
    assert cases and all(c["status"] == "skipped" and c["reason"] for c in cases)
    auto = next(c for c in cases if c["backend"] == "auto")
    assert "outside --device cuda" in auto["reason"]
