"""``load(backend="auto", prefer=...)`` on the CPU: the measured choice, its cache, and what the
manifest rules out. Real ONNX Runtime and OpenVINO sessions on a small exported network."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

import trtinfer
from trtinfer import execution as execution_mod
from trtinfer.cpu_info import cpu_info
from trtinfer.errors import TrtInferError
from trtinfer.execution import OPENVINO_BF16, Execution, executions_checked_at_build
from trtinfer.manifest import AccuracyRecord, ExecutionRecord, Manifest
from trtinfer.runtime import tuning
from trtinfer.runtime import autoselect
from trtinfer.runtime.autoselect import candidates

from .helpers import export_artifact, tiny_net

pytest.importorskip("openvino")


@pytest.fixture()
def artifact(tmp_path, monkeypatch):
    # a tuning cache of its own: these tests plant and read entries that other tests must not see
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    return export_artifact(tmp_path / "a", tiny_net(), "tiny")


def _record(directory, executions: dict) -> None:
    m = Manifest.read(directory)
    m.accuracy = AccuracyRecord(checked=True, executions={k: ExecutionRecord(**v) for k, v in executions.items()})
    m.write(directory)


def test_auto_measures_once_then_uses_the_cache(artifact):
    with trtinfer.load(artifact, prefer="throughput") as first:
        assert first.backend in ("onnxruntime", "openvino")
        assert "measured: prefer=throughput: at batch 32" in first.backend_reason
        assert first.execution in first.backend_reason
    entries = json.loads(tuning.tuning_path().read_text())["entries"]
    key = next(k for k in entries if k.startswith("backend-throughput|"))
    assert entries[key]["execution"] == first.execution
    with trtinfer.load(artifact, prefer="throughput") as second:
        assert second.execution == first.execution
        assert "cached measurement" in second.backend_reason
    # the cache holds what was measured: a planted answer is what the next load opens
    other = "openvino" if first.execution == "onnxruntime" else "onnxruntime"
    entries[key] = {"execution": other, "single": None, "why": "planted by the test"}
    tuning.tuning_path().write_text(json.dumps({"version": tuning.TUNING_VERSION, "entries": entries}))
    with trtinfer.load(artifact, prefer="throughput") as third:
        assert third.execution == other and "planted by the test" in third.backend_reason


def test_latency_is_measured_apart_at_batch_1(artifact):
    with trtinfer.load(artifact, prefer="latency") as model:
        assert "prefer=latency: at batch 1" in model.backend_reason
        x = np.random.default_rng(0).standard_normal((3, 3, 32, 32)).astype(np.float32)
        assert model.infer(x).shape == (3, 10)


def test_an_execution_that_failed_its_accuracy_check_is_never_picked(artifact):
    _record(artifact, {"openvino": {"passed": False, "top1_drop_points": 3.0}})
    with trtinfer.load(artifact) as model:
        assert model.execution == "onnxruntime"
        assert "openvino failed the build's accuracy check" in model.backend_reason


def test_bf16_only_after_the_build_checked_it(artifact):
    unchecked, _ = candidates(Manifest.read(artifact), _options())
    assert OPENVINO_BF16 not in unchecked
    _record(artifact, {"openvino-bf16": {"passed": True, "top1_drop_points": 0.0}})
    checked, _ = candidates(Manifest.read(artifact), _options())
    if cpu_info().has_bf16:
        assert OPENVINO_BF16 in checked
    else:
        assert OPENVINO_BF16 not in checked


def test_an_int8_artifacts_float_layers_may_run_in_bf16_once_checked(artifact):
    manifest = Manifest.read(artifact)
    manifest.precision = "int8"
    assert OPENVINO_BF16 not in candidates(manifest, _options())[0]  # not checked: out, as for FP32
    assert (OPENVINO_BF16 in executions_checked_at_build("int8")) == cpu_info().has_bf16
    _record(artifact, {"openvino-bf16": {"passed": True, "top1_drop_points": 0.1}})
    manifest = Manifest.read(artifact)
    manifest.precision = "int8"
    assert (OPENVINO_BF16 in candidates(manifest, _options())[0]) == cpu_info().has_bf16


def test_bf16_is_out_on_a_cpu_without_native_bf16(monkeypatch):
    # A stand-in for the CPU's flags (labelled as such): this checks our rule, not OpenVINO.
    info = dataclasses.replace(cpu_info(), flags=[f for f in cpu_info().flags if "bf16" not in f])
    monkeypatch.setattr(execution_mod, "cpu_info", lambda: info)
    reason = OPENVINO_BF16.unavailable_reason()
    assert reason is not None and "no native BF16" in reason
    assert OPENVINO_BF16 not in execution_mod.available_cpu_executions()
    assert OPENVINO_BF16 not in executions_checked_at_build("fp32")


def test_an_explicit_openvino_precision_is_kept(artifact):
    with trtinfer.load(artifact, backend="openvino", openvino_precision="f32") as model:
        assert model.backend == "openvino"


@pytest.mark.parametrize("bad", ["fast", 1, None])
def test_prefer_is_checked(artifact, bad):
    with pytest.raises(TrtInferError, match="prefer"):
        trtinfer.load(artifact, prefer=bad)


def test_execution_records_are_plain():
    e = Execution("x", "openvino", "bf16", lossy=True)
    assert e.runtime_options() == {"openvino_precision": "bf16"}


def _options():
    from trtinfer.runtime.options import RuntimeOptions

    return RuntimeOptions()


@pytest.mark.parametrize("one_row, winner, expected", [
    ({"openvino-bf16": 6.6e-4, "onnxruntime": 5.9e-4, "openvino": 7.0e-4}, "openvino-bf16", "onnxruntime"),  # 12 %
    ({"openvino-bf16": 6.05e-4, "onnxruntime": 5.9e-4}, "openvino-bf16", None),  # 2.5 %: not worth a second model
    ({"openvino": 4.4e-4, "onnxruntime": 5.6e-4}, "openvino", None),  # the winner also wins one row
])
def test_single_rows_go_elsewhere_only_when_clearly_faster(one_row, winner, expected):
    assert autoselect.single_rows_route(one_row, winner) == expected


def test_a_routed_load_runs_single_rows_on_the_batch_1_winner_and_closes_both(artifact):
    """A cached measurement that routes single rows (planted: which execution wins where is this machine's call):
    one-row calls, direct and batched, give the batch-1 execution's logits; larger ones the main execution's."""
    with trtinfer.load(artifact, prefer="throughput") as measured:
        assert "at batch 1:" in measured.backend_reason  # the race timed single rows too
    entries = json.loads(tuning.tuning_path().read_text())["entries"]
    key = next(k for k in entries if k.startswith("backend-throughput|"))
    assert "single" in entries[key]
    entries[key] = {"execution": "onnxruntime", "single": "openvino", "why": "planted by the test"}
    tuning.tuning_path().write_text(json.dumps({"version": tuning.TUNING_VERSION, "entries": entries}))
    x = np.random.default_rng(4).standard_normal((3, 3, 32, 32)).astype(np.float32)
    with trtinfer.load(artifact, backend="openvino") as ov, trtinfer.load(artifact, backend="onnxruntime") as ort:
        ov_one, ort_all = ov.infer(x[:1]), ort.infer(x)
    model = trtinfer.load(artifact, prefer="throughput")
    try:
        assert (model.execution, model.single_execution) == ("onnxruntime", "openvino")
        assert np.array_equal(model.infer(x[:1]), ov_one) and np.array_equal(model.infer(x[0]), ov_one[0])
        assert np.array_equal(model.submit(x[:1]).result(timeout=10), ov_one)
        assert np.array_equal(model.infer(x), ort_all)
        single = model._single
    finally:
        model.close()
    assert single is not None and single.closed and single._freed
    # an entry cached before single rows were measured (no "single") is measured again, not trusted
    entries[key] = {"execution": "onnxruntime", "why": "cached by an older trtinfer"}
    tuning.tuning_path().write_text(json.dumps({"version": tuning.TUNING_VERSION, "entries": entries}))
    with trtinfer.load(artifact, prefer="throughput") as again:
        assert "older trtinfer" not in again.backend_reason and "measured: prefer=throughput" in again.backend_reason
