"""The ONNX Runtime backend for real: outputs equal PyTorch's at every batch size, including 0 and
beyond the chunk limit; deliberate session options; one session shared by many threads."""

from __future__ import annotations


import numpy as np
import pytest

import trtinfer
from trtinfer.errors import DataError
from trtinfer.runtime.options import available_cores

from ...helpers import distinct_inputs, torch_reference, run_in_threads

RESNET_CHUNK = 16  # "max" for the ResNet test: small, so 3x max stays quick on 2 cores


@pytest.mark.parametrize("rows", [0, 1, 7, RESNET_CHUNK, 3 * RESNET_CHUNK])
def test_resnet18_equals_pytorch(resnet_artifact, resnet_model, rows):
    x = distinct_inputs(rows, seed=rows)
    with trtinfer.load(resnet_artifact, backend="onnxruntime", chunk_size=RESNET_CHUNK) as model:
        assert model.max_chunk == RESNET_CHUNK
        y = model.infer(x)
    assert y.shape == (rows, 10) and y.dtype == np.float32
    if rows:
        np.testing.assert_allclose(y, torch_reference(resnet_model, x), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("rows", [0, 1, 7, 256, 768, 300])
def test_default_chunking_equals_pytorch(tiny_artifact, tiny_model, rows):
    x = distinct_inputs(rows, seed=rows)
    with trtinfer.load(tiny_artifact, backend="onnxruntime") as model:
        assert model.max_chunk == 256
        y = model.infer(x)
    assert y.shape == (rows, 10)
    if rows:
        np.testing.assert_allclose(y, torch_reference(tiny_model, x), rtol=1e-5, atol=1e-5)


def test_session_options_are_deliberate(tiny_artifact):
    import onnxruntime as ort

    with trtinfer.load(tiny_artifact, backend="onnxruntime") as model:
        so = model._session.get_session_options()
        assert model.threads == available_cores() == so.intra_op_num_threads
        assert so.inter_op_num_threads == 1
        assert so.graph_optimization_level == ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        assert so.execution_mode == ort.ExecutionMode.ORT_SEQUENTIAL
        assert model._session.get_providers() == ["CPUExecutionProvider"]
        assert so.get_session_config_entry("session.intra_op.allow_spinning") == ("1" if model.spin else "0")
    with trtinfer.load(tiny_artifact, backend="onnxruntime", threads=1, spin=True) as model:
        so = model._session.get_session_options()
        assert so.intra_op_num_threads == 1
        assert so.get_session_config_entry("session.intra_op.allow_spinning") == "1"


def test_one_session_is_shared_safely_by_threads(tiny_artifact):
    errors: list[str] = []
    with trtinfer.load(tiny_artifact, backend="onnxruntime") as model:
        def worker(seed: int) -> None:
            for i in range(20):
                x = distinct_inputs(1 + (seed + i) % 5, seed=seed * 100 + i)
                y = model.infer(x)
                ref = model.infer(x.copy())
                if not np.allclose(y, ref, rtol=1e-6, atol=1e-6):
                    errors.append(f"thread {seed} call {i}")

        run_in_threads(worker, 8)
        assert model.stats().infer_calls == 8 * 20 * 2
    assert errors == []


def test_inputs_are_checked(tiny_artifact):
    with trtinfer.load(tiny_artifact, backend="onnxruntime") as model:
        with pytest.raises(DataError, match="dtype"):
            model.infer(np.zeros((2, 3, 32, 32), np.float64))
        with pytest.raises(DataError, match="shape"):
            model.infer(np.zeros((2, 3, 16, 16), np.float32))
        with pytest.raises(DataError, match="shape"):
            model.infer(np.zeros((2, 32, 32, 3), np.float32))

        class FakeDeviceArray:
            __cuda_array_interface__ = {"shape": (1, 3, 32, 32), "typestr": "<f4", "data": (1, False), "version": 3}

        with pytest.raises(DataError, match="host"):
            model.infer(FakeDeviceArray())


def test_single_sample_non_contiguous_input_and_out(tiny_artifact, tiny_model):
    x = distinct_inputs(6, seed=9)
    ref = torch_reference(tiny_model, x)
    with trtinfer.load(tiny_artifact, backend="onnxruntime") as model:
        np.testing.assert_allclose(model.infer(x[2]), ref[2], rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(model.infer(x[::2]), ref[::2], rtol=1e-5, atol=1e-5)
        out = np.empty((6, 10), np.float32)
        assert model.infer(x, out=out) is out
        np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-5)
        with pytest.raises(DataError, match="out must be"):
            model.infer(x, out=np.empty((5, 10), np.float32))
        np.testing.assert_allclose(model(x), ref, rtol=1e-5, atol=1e-5)  # __call__


def test_spinning_is_measured_once_then_cached(artifact_copy, monkeypatch, tmp_path):
    """spin=None (the default) races spinning on and off on this model and remembers the winner
    per model, CPU, ONNX Runtime version and thread count."""
    from trtinfer.runtime import tuning

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    raced = []
    real_race = tuning.race
    monkeypatch.setattr(tuning, "race", lambda *a, **k: raced.append(1) or real_race(*a, **k))
    with trtinfer.load(artifact_copy, backend="onnxruntime", threads=1) as first:
        assert first.spin_reason.startswith("measured: spinning ")
        spin = first.spin
    with trtinfer.load(artifact_copy, backend="onnxruntime", threads=1) as second:
        assert second.spin_reason.startswith("cached measurement: ")
        assert second.spin == spin
        so = second._session.get_session_options()
        assert so.get_session_config_entry("session.intra_op.allow_spinning") == ("1" if spin else "0")
    with trtinfer.load(artifact_copy, backend="onnxruntime", threads=1, prefer="latency") as latency:
        assert latency.spin_reason.startswith("cached measurement: ")  # one rule for every use: not raced again
        assert latency.spin == spin
    assert len(raced) == 1
    with trtinfer.load(artifact_copy, backend="onnxruntime", threads=2) as other_threads:
        assert other_threads.spin_reason.startswith("measured: ")  # another thread count: measured anew
    assert (tmp_path / "cache" / "trtinfer" / "tuning.json").is_file()


def test_a_corrupt_tuning_cache_is_ignored(artifact_copy, monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    (tmp_path / "trtinfer").mkdir()
    (tmp_path / "trtinfer" / "tuning.json").write_text("{not json", encoding="utf-8")
    with trtinfer.load(artifact_copy, backend="onnxruntime", threads=1) as model:
        assert model.spin_reason.startswith("measured: ")
    with trtinfer.load(artifact_copy, backend="onnxruntime", threads=1) as model:
        assert model.spin_reason.startswith("cached measurement: ")


def test_spin_option_is_checked():
    from trtinfer.runtime.options import RuntimeOptions

    with pytest.raises(trtinfer.TrtInferError, match="spin="):
        RuntimeOptions.from_kwargs({"spin": "yes"})
