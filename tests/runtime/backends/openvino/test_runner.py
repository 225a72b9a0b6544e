"""The optional OpenVINO backend (``[openvino]``): same API, exact float layers, a pool of infer
requests for concurrent callers. Skipped, with the reason, where OpenVINO is not installed."""

from __future__ import annotations


import numpy as np
import pytest

import trtinfer

from ...helpers import distinct_inputs, torch_reference, run_in_threads

pytest.importorskip("openvino", reason="OpenVINO is an optional extra: pip install 'trtinfer[openvino]'")


@pytest.mark.parametrize("rows", [0, 1, 7, 32, 96])
def test_openvino_equals_pytorch(tiny_artifact, tiny_model, rows):
    x = distinct_inputs(rows, seed=rows)
    with trtinfer.load(tiny_artifact, backend="openvino", chunk_size=32) as model:
        assert model.backend == "openvino"
        y = model.infer(x)
    assert y.shape == (rows, 10)
    if rows:
        np.testing.assert_allclose(y, torch_reference(tiny_model, x), rtol=1e-5, atol=1e-5)


def test_float_layers_stay_f32_unless_asked(tiny_artifact):
    with trtinfer.load(tiny_artifact, backend="openvino") as model:
        assert str(model._compiled.get_property("INFERENCE_PRECISION_HINT")) in ("<Type: 'float32'>", "f32")
        assert model._compiled.get_property("INFERENCE_NUM_THREADS") == model.threads


def test_concurrent_callers_and_the_batcher(tiny_artifact):
    errors: list[str] = []
    with trtinfer.load(tiny_artifact, backend="openvino", max_batch=16) as model:
        def worker(seed: int) -> None:
            for i in range(25):
                x = distinct_inputs(1 + i % 4, seed=seed * 100 + i)
                direct = model.infer(x)
                batched = model.submit(x).result(timeout=30)
                if not np.allclose(direct, batched, rtol=1e-5, atol=1e-5):
                    errors.append(f"{seed}/{i}")

        run_in_threads(worker, 8)
        assert len(model._all_requests) >= 1
    assert errors == []
    assert model._compiled is None
