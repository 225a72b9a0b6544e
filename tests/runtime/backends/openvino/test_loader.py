"""backends/openvino/loader.py: the one place OpenVINO models are compiled, with one configuration."""

from __future__ import annotations

import numpy as np
import pytest

from trtinfer.manifest import ONNX_NAME
from trtinfer.runtime.backends.openvino import loader

from ...helpers import distinct_inputs


def test_the_configuration():
    assert loader.compile_config(4, "bf16") == {"INFERENCE_NUM_THREADS": 4, "PERFORMANCE_HINT": "LATENCY",
                                                 "NUM_STREAMS": 1, "INFERENCE_PRECISION_HINT": "bf16"}


def test_bytes_paths_and_models_compile_alike(tiny_artifact):
    ov = pytest.importorskip("openvino", reason="OpenVINO is an optional extra: pip install 'trtinfer[openvino]'")
    path = tiny_artifact / ONNX_NAME
    x = distinct_inputs(4)
    results = []
    for source in (path.read_bytes(), path, str(path), ov.Core().read_model(str(path))):
        compiled = loader.compiled_model(source, threads=1)
        assert compiled.get_property("INFERENCE_PRECISION_HINT") == ov.Type.f32
        results.append(np.array(compiled.create_infer_request().infer({0: x})[compiled.outputs[0]]))
    for other in results[1:]:
        np.testing.assert_array_equal(results[0], other)
