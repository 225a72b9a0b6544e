"""The optional OpenVINO backend (``[openvino]``): same API, exact float layers, a pool of infer
requests for concurrent callers. Skipped, with the reason, where OpenVINO is not installed."""

from __future__ import annotations


import numpy as np
import pytest

import trtinfer

from ...helpers import distinct_inputs, torch_reference, run_in_threads

pytest.importorskip("openvino", reason="OpenVINO is an optional extra: pip install 'trtinfer[openvino]'")


@pytest.mark.parametrize("static_shapes", [False, True])
@pytest.mark.parametrize("rows", [0, 1, 7, 32, 96])
def test_openvino_equals_pytorch(tiny_artifact, tiny_model, rows, static_shapes):
    x = distinct_inputs(rows, seed=rows)
    with trtinfer.load(tiny_artifact, backend="openvino", chunk_size=32, static_shapes=static_shapes) as model:
        assert sorted(model._static) == ([1, 32] if static_shapes else [])
        assert model.backend == "openvino"
        y = model.infer(x)
    assert y.shape == (rows, 10)
    if rows:
        np.testing.assert_allclose(y, torch_reference(tiny_model, x), rtol=1e-5, atol=1e-5)


def _compiled_models(model) -> list:
    return [model._dynamic.compiled, *(c.compiled for c in model._static.values())]


def test_float_layers_stay_f32_unless_asked(tiny_artifact):
    with trtinfer.load(tiny_artifact, backend="openvino", static_shapes=True) as model:
        assert len(_compiled_models(model)) == 3
        for compiled in _compiled_models(model):
            assert str(compiled.get_property("INFERENCE_PRECISION_HINT")) in ("<Type: 'float32'>", "f32")
            assert compiled.get_property("INFERENCE_NUM_THREADS") == model.threads


def test_streams_overlap_callers_and_batches(tiny_artifact):
    with trtinfer.load(tiny_artifact, backend="openvino", openvino_streams=2, static_shapes=True, max_batch=8) as model:
        streams = min(2, model.threads)  # never more streams than threads (one core: one stream, the latency hint)
        assert model.concurrency == streams
        hint = "THROUGHPUT" if streams > 1 else "LATENCY"
        for compiled in _compiled_models(model):
            assert compiled.get_property("NUM_STREAMS") == streams
            assert str(compiled.get_property("PERFORMANCE_HINT")) in (f"PerformanceMode.{hint}", hint)
        x = distinct_inputs(8, seed=5)
        expected = model.infer(x)
        results: list = []
        run_in_threads(lambda seed: results.append(model.infer(x)), 4)
        assert all(np.array_equal(r, expected) for r in results) and len(results) == 4
        assert model._ensure_batcher().concurrency == streams
    with trtinfer.load(tiny_artifact, backend="openvino") as model:
        assert model.concurrency == 1 and model._dynamic.compiled.get_property("NUM_STREAMS") == 1


def test_static_shapes_are_one_row_and_the_full_batch(tiny_artifact):
    with trtinfer.load(tiny_artifact, backend="openvino", static_shapes=True, max_batch=8) as model:
        assert model.static_batch_sizes() == (1, 8) and model.static_reason == "given"
        shapes = {n: c.compiled.inputs[0].get_partial_shape() for n, c in model._static.items()}
        assert {n: s[0].get_length() for n, s in shapes.items()} == {1: 1, 8: 8}
        assert model._dynamic.compiled.inputs[0].get_partial_shape()[0].is_dynamic


def test_whether_static_shapes_pay_is_measured_once_and_cached(tiny_artifact, tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    with trtinfer.load(tiny_artifact, backend="openvino") as model:
        first = model.static_reason
        assert first.startswith("measured: static shapes for batch ") or first.startswith("measured: no static shapes:")
        kept = sorted(model._static)
        assert model.static_shapes == bool(kept) and set(kept) <= {1, 32}
        assert first.startswith(f"measured: static shapes for batch {', '.join(map(str, kept))}:") if kept else True
    with trtinfer.load(tiny_artifact, backend="openvino") as model:
        assert model.static_reason == "cached measurement: " + first[len("measured: "):]


def test_a_fixed_batch_model_gets_no_copies(tmp_path):
    import importlib.util
    from pathlib import Path

    spec = importlib.util.spec_from_file_location("tiny_artifacts", Path(__file__).parents[3] / "builders" / "tiny_artifacts.py")
    tiny = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tiny)
    art = tiny.write_tiny_artifact(tmp_path / "fixed", batch=4)
    with trtinfer.load(art, backend="openvino", static_shapes=True) as model:
        assert model._static == {} and model.static_reason == "the model's batch size is fixed"


@pytest.mark.parametrize("static_shapes", [False, True])
def test_concurrent_callers_and_the_batcher(tiny_artifact, static_shapes):
    errors: list[str] = []
    with trtinfer.load(tiny_artifact, backend="openvino", max_batch=16, static_shapes=static_shapes) as model:
        def worker(seed: int) -> None:
            for i in range(25):
                x = distinct_inputs(1 + i % 4, seed=seed * 100 + i)
                direct = model.infer(x)
                batched = model.submit(x).result(timeout=30)
                if not np.allclose(direct, batched, rtol=1e-5, atol=1e-5):
                    errors.append(f"{seed}/{i}")

        run_in_threads(worker, 8)
        assert len(model._dynamic._all) >= 1
        # batches of 1 and 16 (the full batch) ran on the static copies, each with its own requests
        assert not static_shapes or len(model._static[1]._all) >= 1
    assert errors == []
    assert model._dynamic.compiled is None and model._static == {}
