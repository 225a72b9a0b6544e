"""scripts/gpu_check.sh, the one command that proves the GPU path on a GPU host, checked here without one.

- On a host without a GPU it stops at once with exit 2 and the report line "no GPU: ...; nothing
  GPU-specific was proven". Which host the suite runs on does not matter: a stand-in ``nvidia-smi``
  put first on PATH plays the host without a GPU (printing nothing, or failing as it does without a
  driver).
- The verdicts (scripts/gpu_check_report.py): a pytest phase that selects no test, or skips any,
  fails, so the check cannot pass vacuously; a full report of a passing and a failing run is built
  from junit XML written here.
- The inspector dump (scripts/gpu_inspector_dump.py) runs its whole flow against the TensorRT
  build-side stand-in (tests/fakes/tensorrt_build.py): that checks our flow and files, not
  TensorRT's JSON; the real JSON comes only from a GPU host's run.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fakes import tensorrt_build
from fakes.tensorrt_build import DYNAMIC_UNKNOWN, FAKE_FP16_ENGINE, FP16_ENGINE, inspector_json

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "scripts" / "gpu_check.sh"


def _load(name: str):
    spec = importlib.util.spec_from_file_location(name, REPO / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


report = _load("gpu_check_report")
dump = _load("gpu_inspector_dump")


# -- the whole script on a host without a GPU -----------------------------------------------------------------
STAND_INS = {
    # nvidia-smi there but listing nothing
    "lists-none": ("#!/bin/sh\n# stand-in for nvidia-smi (tests/test_gpu_check.py): lists no GPU\nexit 0\n",
                   "no GPU: nvidia-smi lists no GPU"),
    # what nvidia-smi says where the kernel driver is not loaded
    "fails": ("#!/bin/sh\n# stand-in for nvidia-smi (tests/test_gpu_check.py): the driver is not loaded\n"
              "echo \"NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver.\"\nexit 9\n",
              "no GPU: nvidia-smi failed (exit 9): NVIDIA-SMI has failed because it couldn't communicate"),
}


@pytest.mark.parametrize("stand_in", sorted(STAND_INS))
def test_without_a_gpu_it_stops_at_once_with_exit_2(stand_in, tmp_path):
    """About a second: no venv is set up or installed into (the existing .venv's Python, or python3, only
    records versions and runs `trtinfer doctor`), and no phase runs."""
    script, line = STAND_INS[stand_in]
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "nvidia-smi").write_text(script)
    (bin_dir / "nvidia-smi").chmod(0o755)
    out = tmp_path / "report"
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "TRTINFER_GPU_CHECK_DIR": str(out)}
    started = time.perf_counter()
    result = subprocess.run(["bash", str(SCRIPT)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    seconds = time.perf_counter() - started
    assert result.returncode == 2, result.stdout + result.stderr
    text = (out / "report.md").read_text()
    assert line in text and "nothing GPU-specific was proven" in text
    assert text.splitlines()[0] == "# trtinfer GPU check: NO GPU"
    summary = json.loads((out / "summary.json").read_text())
    assert summary["result"] == "no-gpu" and summary["exit_code"] == 2 and summary["phases"] == []
    assert line.removeprefix("no GPU: ").split(" (")[0] in summary["no_gpu_reason"]
    assert json.loads((out / "versions.json").read_text())["Python"]
    assert not (out / "phases.tsv").exists() and not list(out.glob("*.xml")) and not (out / "setup.log").exists()
    assert "installing" not in result.stderr
    assert seconds < 60, f"the no-GPU path took {seconds:.1f} s"


# -- junit counts and verdicts -----------------------------------------------------------------------------------
def _junit(path: Path, cases: list[tuple[str, str | None, str]]) -> Path:
    """cases: (name, None | "failure" | "error" | "skipped", message) as pytest writes them (xunit2)."""
    body = []
    for name, outcome, message in cases:
        inner = f'<{outcome} message="{message}" type="x">{message}</{outcome}>' if outcome else ""
        body.append(f'<testcase classname="tests.runtime.test_cuda" name="{name}" time="0.1">{inner}</testcase>')
    path.write_text('<?xml version="1.0" encoding="utf-8"?><testsuites><testsuite name="pytest" errors="0" '
                    f'failures="0" skipped="0" tests="{len(cases)}">{"".join(body)}</testsuite></testsuites>')
    return path


def _judge(tmp_path, cases, rc=0, log="", limit=150):
    (tmp_path / "cuda-layer.log").write_text(log)
    counts = report.read_junit(_junit(tmp_path / "cuda-layer.xml", cases)) if cases is not None else None
    return report.judge_pytest(report.CUDA_LAYER, report.PhaseRun(rc, 12, limit), counts, tmp_path, "GPU X")


def test_zero_tests_selected_fails(tmp_path):
    verdict = _judge(tmp_path, [], rc=5, log="===== no tests ran in 0.01s =====\n")
    assert not verdict.ok and "selected no tests" in verdict.line and "nothing was proven" in verdict.line


def test_every_test_skipped_fails(tmp_path):
    cases = [("test_gpu_pinned_device_round_trip", "skipped", "GPU test: no NVIDIA GPU on this machine"),
             ("test_gpu_graph_capture_and_replay", "skipped", "GPU test: no NVIDIA GPU on this machine")]
    verdict = _judge(tmp_path, cases)
    assert not verdict.ok
    assert "all 2 tests were skipped, so nothing was proven" in verdict.line and "no NVIDIA GPU" in verdict.line


def test_one_skip_under_gpu_fails_and_is_named(tmp_path):
    cases = [("test_gpu_pinned_device_round_trip", None, ""),
             ("test_gpu_device_arrays_zero_copy", "skipped", "torch has no CUDA here")]
    verdict = _judge(tmp_path, cases)
    assert not verdict.ok
    assert "1 skipped under -m gpu, so not proven: test_gpu_device_arrays_zero_copy (torch has no CUDA here)" \
        in verdict.line


def test_failures_and_errors_fail(tmp_path):
    cases = [("test_gpu_pinned_device_round_trip", "failure", "AssertionError: 3 != 4"),
             ("test_gpu_misaligned_slices", "error", "fixture failed"), ("test_gpu_graph_capture_and_replay", None, "")]
    verdict = _judge(tmp_path, cases, rc=1)
    assert not verdict.ok and verdict.run["failed"] == 2 and verdict.run["passed"] == 1
    assert "AssertionError: 3 != 4" in verdict.line and "test_gpu_misaligned_slices (fixture failed)" in verdict.line


def test_no_junit_or_a_timeout_fails(tmp_path):
    verdict = _judge(tmp_path, None, rc=1, log="!!!!! _pytest.outcomes.Exit: the GPU suite was asked for (-m gpu) "
                                               "but an NVIDIA GPU is present but CUDA cannot use it !!!!!\n")
    assert not verdict.ok and "no junit XML" in verdict.line and "CUDA cannot use it" in verdict.line
    passed = [("test_gpu_pinned_device_round_trip", None, "")]
    verdict = _judge(tmp_path, passed, rc=124)
    assert not verdict.ok and "stopped by its 150 s limit" in verdict.line


def test_a_nonzero_exit_fails_even_when_every_test_passed(tmp_path):
    verdict = _judge(tmp_path, [("test_gpu_pinned_device_round_trip", None, "")], rc=3, log="INTERNALERROR> boom\n")
    assert not verdict.ok and "pytest exited 3" in verdict.line


def test_a_pass_says_what_it_proved(tmp_path):
    cases = [("test_gpu_pinned_device_round_trip", None, ""), ("test_gpu_equals_onnxruntime[0]", None, ""),
             ("test_gpu_equals_onnxruntime[192]", None, ""), ("test_gpu_something_new", None, "")]
    verdict = _judge(tmp_path, cases)
    assert verdict.ok
    assert verdict.line == ("PASS  CUDA layer and runtime: 4 tests ran, 0 skipped, 0 failed in 12 s on GPU X: "
                            "pinned/device copies round-trip; TensorRT runtime equals ONNX Runtime at batch 0 to 192; "
                            "test_gpu_something_new")


# -- whole reports from a phase folder ------------------------------------------------------------------------
def _doctor(ready: bool) -> dict:
    gpu = {"ready": ready, "reason": "0: NVIDIA H100 80GB HBM3 (sm 9.0, 81559 MiB)" if ready else "no NVIDIA GPU"}
    return {"findings": [{"name": "NVIDIA driver", "value": "580.159.04 (supports CUDA 13.0)"},
                         {"name": "CUDA runtime", "value": "13.0"}],
            "required": {"gpu": gpu, "tensorrt": {"ready": True, "reason": "TensorRT 10.13.0 (import ok)"}}}


def _phase_folder(where: Path, good: bool) -> Path:
    where.mkdir()
    (where / "nvidia-smi.csv").write_text("name, driver_version, compute_cap\nNVIDIA H100 80GB HBM3, 580.159.04, 9.0\n")
    versions = {"OS": "Ubuntu 24.04", "Python": "3.12.3", "torch": "torch 2.11.0"}
    (where / "versions.json").write_text(json.dumps(versions))
    (where / "doctor.json").write_text(json.dumps(_doctor(good)))
    ok = [(name, None, "") for name in report.CUDA_LAYER.proves]
    _junit(where / "cuda-layer.xml", ok)
    build = [(name, None, "") for name in report.ENGINE_BUILD.proves]
    if not good:
        build[0] = ("test_gpu_engine_matches_onnxruntime[fp32]", "skipped", "CIFAR-10 rows not found under /x")
    _junit(where / "engine-build.xml", build)
    reading = {"ok": True, "tensorrt": "10.13.0", "profile": "1:8:32", "problems": [],
               "files": {"no_context": dump.NO_CONTEXT, "with_context": dump.WITH_CONTEXT},
               "with_context": dump.read_inspector_json(inspector_json(FP16_ENGINE)),
               "no_context": dump.read_inspector_json(inspector_json(FP16_ENGINE, dynamic_unknown=True))}
    (where / report.READING_FILE).write_text(json.dumps(reading))
    rows = [("setup", 0, 1, 1800), ("doctor", 0 if good else 1, 1, 60), ("cuda-layer", 0, 40, 150),
            ("inspector", 0, 30, 120), ("engine-build", 0 if good else 1, 300, 480)]
    (where / report.PHASES_FILE).write_text("".join("\t".join(map(str, r)) + "\n" for r in rows))
    return where


def test_report_of_a_passing_run(tmp_path):
    where = _phase_folder(tmp_path / "good", good=True)
    assert report.main(["report", str(where)]) == 0
    lines = json.loads((where / "summary.json").read_text())["lines"]
    assert [line.split(":")[0] for line in lines] == ["PASS  environment", "PASS  doctor",
                                                       "PASS  CUDA layer and runtime", "PASS  engine inspector",
                                                       "PASS  engine builds"]
    text = (where / "report.md").read_text()
    assert (f"{len(report.CUDA_LAYER.proves)} tests ran, 0 skipped, 0 failed in 40 s on NVIDIA H100 80GB HBM3 "
            "(driver 580.159.04, sm 9.0)") in text
    assert "graph capture and replay" in text and "a misaligned output slice" in text
    assert ("took tensor types from 'Format/Datatype' in 4 of 4 layers and found the FP16 compute layers "
            "(fp16 2)") in text
    assert "without it our FP16 check says: cannot verify the FP16 engine" in text
    assert "exit 0: every phase passed on NVIDIA H100 80GB HBM3" in text


def test_report_of_a_failing_run_and_of_phases_never_run(tmp_path):
    where = _phase_folder(tmp_path / "bad", good=False)
    assert report.main(["report", str(where)]) == 1
    summary = json.loads((where / "summary.json").read_text())
    status = {p["name"]: p["status"] for p in summary["phases"]}
    assert status == {"setup": "pass", "doctor": "fail", "cuda-layer": "pass", "inspector": "pass",
                      "engine-build": "fail"}
    assert "CIFAR-10 rows not found" in (where / "report.md").read_text()
    # Setup failed: the phases after it are reported as not run, never as passed.
    (where / report.PHASES_FILE).write_text("setup\t1\t3\t1800\n")
    (where / "setup.log").write_text("ERROR: Could not find a version that satisfies the requirement torch\n")
    assert report.main(["report", str(where)]) == 1
    lines = json.loads((where / "summary.json").read_text())["lines"]
    assert lines[0].startswith("FAIL  environment: `source scripts/venv.sh` failed (exit 1): ERROR: Could not find")
    assert all(line.startswith("FAIL") and "not run: the environment could not be set up" in line for line in lines[1:])
    # The budget ran out before the engine builds.
    (where / report.PHASES_FILE).write_text("setup\t0\t1\t1800\nengine-build\tnot-run\t0\t7\n")
    assert report.main(["report", str(where)]) == 1
    assert "FAIL  engine builds: not run: the check's time budget was spent (7 s left)" in \
        (where / "report.md").read_text()


def test_gpus_from_nvidia_smi(tmp_path):
    csv_file = tmp_path / "nvidia-smi.csv"
    csv_file.write_text("name, driver_version, compute_cap\nNVIDIA H100 80GB HBM3, 580.159.04, 9.0\n"
                        "NVIDIA H100 80GB HBM3, 580.159.04, 9.0\n")
    gpus = report.read_gpus(csv_file)
    assert gpus[0] == {"name": "NVIDIA H100 80GB HBM3", "driver_version": "580.159.04", "compute_cap": "9.0"}
    assert report.describe_gpu(gpus).startswith("NVIDIA H100 80GB HBM3 (driver 580.159.04, sm 9.0) (and 1 more")
    csv_file.write_text("NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver.\n")
    assert report.read_gpus(csv_file) == []


# -- the inspector dump, against the TensorRT build-side stand-in -------------------------------------------------
def _stand_in_artifact(directory: Path):
    from trtinfer.manifest import Manifest, PreprocessSpec, TensorSpec

    manifest = Manifest(name="tiny-fp16", arch="tiny", num_classes=10, labels=[str(i) for i in range(10)],
                        precision="fp16", input=TensorSpec("input", [-1, 3, 8, 8]),
                        output=TensorSpec("logits", [-1, 10]),
                        preprocess=PreprocessSpec(input_size=8, resize=8, mean=[0.5] * 3, std=[0.5] * 3))
    return manifest, {"nodes_fp16": 3, "stand_in": True}


@pytest.mark.parametrize("version", ["10.13.0", "11.1.0"])
def test_inspector_dump_flow_on_the_stand_in(version, tmp_path, monkeypatch):
    """The stand-in's inspector answers "N/A due to dynamic shapes" without an execution context and the
    layer types with one: both texts are saved apart and read apart."""
    fake = tensorrt_build.install(monkeypatch, version)
    fake.layers = FP16_ENGINE
    monkeypatch.setattr(dump, "make_fp16_artifact", _stand_in_artifact)
    assert dump.main([str(tmp_path)]) == 0
    assert DYNAMIC_UNKNOWN in (tmp_path / dump.NO_CONTEXT).read_text()
    assert DYNAMIC_UNKNOWN not in (tmp_path / dump.WITH_CONTEXT).read_text()
    reading = json.loads((tmp_path / dump.READING).read_text())
    assert reading["ok"] and reading["problems"] == [] and reading["tensorrt"] == version
    assert reading["context_changed_the_json"] and reading["inspect_warnings"] == []
    assert reading["with_context"]["fp16_check"] == "ok" and reading["with_context"]["layers_with_tensor_types"] == 4
    assert reading["with_context"]["type_keys"] == (["Datatype", "Format"] if version.startswith("11")
                                                    else ["Format/Datatype"])
    assert reading["no_context"]["layers_with_tensor_types"] == 0
    assert "cannot verify the FP16 engine" in reading["no_context"]["fp16_check"]
    assert fake.contexts[-1].shapes == {"input": (8, 3, 8, 8)}  # builders.engine.tensorrt_build._inspect attached it at OPT


def test_inspector_dump_fails_where_our_reader_rejects_the_engine(tmp_path, monkeypatch):
    fake = tensorrt_build.install(monkeypatch, "10.13.0")
    fake.layers = FAKE_FP16_ENGINE
    monkeypatch.setattr(dump, "make_fp16_artifact", _stand_in_artifact)
    assert dump.main([str(tmp_path)]) == 1
    reading = json.loads((tmp_path / dump.READING).read_text())
    assert (tmp_path / dump.WITH_CONTEXT).is_file()  # the dump is kept for a later look
    assert not reading["ok"] and "our FP16 check rejects the real engine" in reading["problems"][0]
    verdict = report.judge_inspector(report.PhaseRun(1, 20, 120), reading)
    assert not verdict.ok and "kept in inspector-no-context.json, inspector-with-context.json" in verdict.line


def test_inspector_reading_names_unread_keys():
    """A spelling our reader does not know is reported with the keys it saw instead."""
    layer = {"Name": "conv", "LayerType": "CaskConvolution", "Inputs": [{"Name": "x", "ElementKind": "Half"}],
             "Outputs": [{"Name": "y", "ElementKind": "Half"}]}
    reading = dump.read_inspector_json(json.dumps({"Layers": [layer]}))
    assert reading["layers_with_tensor_types"] == 0 and reading["tensor_keys"] == {"Name": 2, "ElementKind": 2}
    problems = dump.problems_with(reading)
    assert "no tensor type in any layer's Inputs/Outputs (tensor keys seen: ['ElementKind', 'Name']" in problems[0]
    assert dump.problems_with(dump.read_inspector_json("{not json"))[0].startswith("the inspector JSON with a context "
                                                                                    "has no layers (not JSON")


@pytest.mark.slow
def test_the_fp16_network_is_made_offline(tmp_path):
    """The dump's network for real on the CPU (torch export + ModelOpt AutoCast, about 6 s): FP16 convolutions."""
    manifest, facts = dump.make_fp16_artifact(tmp_path)
    assert manifest.precision == "fp16" and facts["nodes_fp16"] > 0 and facts["nodes_fp32"] == 0
    manifest.verify_files(tmp_path, ["model.onnx"])


@pytest.mark.parametrize("phase", [report.CUDA_LAYER, report.ENGINE_BUILD], ids=lambda p: p.name)
def test_every_gpu_test_a_phase_runs_says_what_it_proves(phase):
    """The report's line for each GPU test of the files gpu_check.sh gives the phase, read from the files
    themselves: a renamed or new GPU test without its line would be reported by its bare name."""
    import ast
    import re

    script = SCRIPT.read_text()
    command = re.search(rf"run_phase {phase.name} .*?(?<!\\)\n", script, re.S)
    assert command, phase.name
    files = re.findall(r"tests/\S+\.py", command.group(0))
    assert files
    gpu_tests = set()
    for file in files:
        for node in ast.walk(ast.parse((REPO / file).read_text())):
            if isinstance(node, ast.FunctionDef) and any(
                    "mark.gpu" in ast.unparse(d) for d in node.decorator_list):
                gpu_tests.add(node.name)
    assert gpu_tests and gpu_tests == set(phase.proves), (gpu_tests ^ set(phase.proves))
