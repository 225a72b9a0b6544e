"""`trtinfer doctor`: run for real (in a subprocess), and the probes' failure handling."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

from gpu_env import gpu_skip_reason, tensorrt_skip_reason
from trtinfer import doctor as doc
from trtinfer.runtime.backends.tensorrt import devices
from trtinfer.runtime.backends.tensorrt import loader as tensorrt_loader

REPO = Path(__file__).resolve().parents[1]
COMPONENTS = ["OS", "Python", "CPU", "GPU", "NVIDIA driver", "CUDA runtime", "TensorRT", "cuda-python", "ONNX Runtime",
              "torch", "torchvision", "ModelOpt"]
STAGES = ["load checkpoint", "export", "FP16", "INT8", "engine build", "GPU runtime", "CPU runtime"]




NO_GPU = gpu_skip_reason() is not None
NO_TRT = tensorrt_skip_reason() is not None


def trtinfer(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "trtinfer.cli", *args], capture_output=True, text=True,
                          cwd=REPO, timeout=120)


@pytest.fixture(scope="module")
def report_json() -> dict:
    result = trtinfer("doctor", "--json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_doctor_table_runs(tmp_path):
    result = trtinfer("doctor")
    assert result.returncode == 0, result.stderr
    for word in COMPONENTS + STAGES:
        assert word in result.stdout, f"{word!r} missing from the doctor table"


def test_doctor_json_lists_everything(report_json):
    names = [f["name"] for f in report_json["findings"]]
    assert names[:3] == ["OS", "Python", "CPU"] and set(COMPONENTS) <= set(names)
    assert [s["name"] for s in report_json["stages"]] == STAGES
    assert set(report_json["capabilities"]) == set(doc.CAPABILITIES)
    for stage in report_json["stages"]:
        assert isinstance(stage["ready"], bool) and stage["reason"]


@pytest.mark.skipif(not NO_GPU, reason="this host has a GPU")
def test_doctor_explains_a_host_without_gpu(report_json):
    findings = {f["name"]: f for f in report_json["findings"]}
    assert findings["GPU"]["ok"] is False and "GPU" in findings["GPU"]["detail"]
    stages = {s["name"]: s for s in report_json["stages"]}
    engine = stages["engine build"]
    assert engine["ready"] is False
    assert "GPU" in engine["reason"] and "--from-onnx" in engine["reason"]
    assert stages["GPU runtime"]["ready"] is False
    assert report_json["capabilities"]["gpu"]["ready"] is False
    assert report_json["capabilities"]["tensorrt"]["ready"] is False
    if NO_TRT and importlib.util.find_spec("tensorrt") is None:
        assert findings["TensorRT"]["ok"] is False and "not installed" in findings["TensorRT"]["detail"]


@pytest.mark.skipif(importlib.util.find_spec("onnxruntime") is None, reason="ONNX Runtime is not installed")
def test_cpu_stages_ready_here(report_json):
    stages = {s["name"]: s for s in report_json["stages"]}
    assert stages["CPU runtime"]["ready"] is True
    findings = {f["name"]: f for f in report_json["findings"]}
    assert "CPUExecutionProvider" in findings["ORT providers"]["value"]
    assert trtinfer("doctor", "--require", "cpu-runtime").returncode == 0


@pytest.mark.skipif(not NO_GPU, reason="this host has a GPU")
def test_require_gpu_fails_with_one_line():
    result = trtinfer("doctor", "--require", "gpu", "--require", "cpu-runtime")
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: required capability missing: gpu:")
    assert "cpu-runtime" not in lines[0]
    assert "Traceback" not in result.stderr
    data = json.loads(trtinfer("doctor", "--json", "--require", "tensorrt").stdout)
    assert data["required"]["tensorrt"]["ready"] is False


def test_require_rejects_unknown_capability():
    result = trtinfer("doctor", "--require", "quantum")
    assert result.returncode == 2 and "quantum" in result.stderr


def test_collect_survives_broken_probes(monkeypatch):
    def boom(*args, **kwargs):
        raise RuntimeError("probe exploded")

    monkeypatch.setattr(devices, "gpu_count", boom)
    monkeypatch.setattr(devices, "cuda_versions", boom)
    monkeypatch.setattr(tensorrt_loader, "trt_version", boom)
    monkeypatch.setattr(tensorrt_loader, "tensorrt_available", boom)
    monkeypatch.setattr(doc, "_cpu", boom)
    report = doc.collect()
    findings = {f.name: f for f in report.findings}
    assert findings["GPU"].ok is False and "probe exploded" in findings["GPU"].detail
    assert findings["TensorRT"].ok is False and "probe exploded" in findings["TensorRT"].detail
    assert findings["CPU"].value == "unknown"
    assert {s.name: s.ready for s in report.stages}["engine build"] is False
    assert doc.missing_requirements(report, ["gpu"])[0].startswith("gpu: ")


def test_with_gpu_and_tensorrt_everything_gpu_is_ready(monkeypatch):
    """What doctor says on a GPU host, with the probes stood in."""
    gpu = {"name": "NVIDIA H100 80GB HBM3", "compute_capability": "9.0", "driver": "12.4", "memory_mib": 81000}
    monkeypatch.setattr(devices, "gpu_count", lambda: 1)
    monkeypatch.setattr(devices, "gpu_info", lambda device=0: dict(gpu, device=device))
    monkeypatch.setattr(devices, "cuda_versions", lambda: {"driver": "12.4", "runtime": "12.6"})
    monkeypatch.setattr(tensorrt_loader, "trt_version", lambda: "10.16.1.11")
    monkeypatch.setattr(doc, "_nvidia_driver", lambda: "550.54.15")
    report = doc.collect()
    findings = {f.name: f for f in report.findings}
    assert findings["GPU"].ok and "NVIDIA H100" in findings["GPU"].value and "sm 9.0" in findings["GPU"].value
    assert findings["NVIDIA driver"].value == "550.54.15 (supports CUDA 12.4)"
    assert findings["TensorRT"].ok and findings["TensorRT"].value.startswith("10.16.1.11")
    stages = {s.name: s for s in report.stages}
    assert stages["engine build"].ready and "NVIDIA H100" in stages["engine build"].reason
    assert report.capability("gpu")[0] and report.capability("tensorrt")[0] and report.capability("engine")[0]
    assert doc.missing_requirements(report, ["gpu", "tensorrt", "engine"]) == []


def test_doctor_reports_the_cpu_isa_flags(report_json):
    from trtinfer.cpu_info import ISA_FLAGS, cpu_info, parse_cpuinfo

    findings = {f["name"]: f for f in report_json["findings"]}
    isa = findings["CPU ISA"]
    for name in cpu_info().flag_names():
        assert name in isa["value"]
    assert "INT8" in isa["detail"] and "BF16" in isa["detail"]
    model, flags = parse_cpuinfo("processor : 0\nmodel name : Test CPU\nflags : fpu avx2 avx512f avx512_vnni amx_int8\n")
    assert model == "Test CPU" and {"avx2", "avx512_vnni", "amx_int8"} <= flags
    assert set(ISA_FLAGS) >= {"avx512_vnni", "avx512_bf16", "amx_int8", "amx_bf16"}


def test_an_isa_ceiling_removes_the_flags_above_it(monkeypatch):
    """ONEDNN_MAX_CPU_ISA=AVX2 (what scripts/test_variants.sh sets) holds the kernels to AVX2: BF16, VNNI and
    AMX are not used, so nothing may choose them by the CPU's flags alone (bfloat16 training autocast)."""
    from trtinfer import cpu_info as ci

    monkeypatch.setattr(ci, "_read", lambda path: "model name : Test CPU\nflags : fpu avx2 fma avx512f avx512_vnni "
                                                  "avx512_bf16 amx_tile amx_int8 amx_bf16\n" if path == "/proc/cpuinfo" else None)
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA", raising=False)
    monkeypatch.delenv("DNNL_MAX_CPU_ISA", raising=False)
    full = ci.cpu_info()
    assert full.has_bf16 and full.has_int8_dot and full.isa_ceiling is None and not full.capped_flags
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "avx2")
    held = ci.cpu_info()
    assert held.flags == ["avx2", "fma"] and not held.has_bf16 and not held.has_int8_dot
    assert held.isa_ceiling == "AVX2" and "amx_bf16" in held.capped_flags
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX512_CORE_VNNI")
    assert ci.cpu_info().has_int8_dot and not ci.cpu_info().has_bf16
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "DEFAULT")
    assert ci.cpu_info().has_bf16

    from trtinfer.training.trainer import training_precision

    import torch

    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")
    assert training_precision("auto", torch.device("cpu")).autocast is None


def test_doctor_says_what_this_cpu_gets(report_json):
    """The build's target and quantizer and the executions load() will time, as this machine decides them."""
    from trtinfer.execution import CPU_EXECUTIONS

    choice = {f["name"]: f for f in report_json["findings"]}["CPU choice"]
    assert "build --target" in choice["value"] and "INT8 by" in choice["value"]
    for e in CPU_EXECUTIONS:
        why = e.unavailable_reason()
        if why is None:
            assert e.name in choice["value"]
        else:
            assert f"{e.name}: {why}" in choice["detail"]
