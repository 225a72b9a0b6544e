"""The GPU peers' setup in benchmarks/cases.py. Torch-TensorRT cannot run here: the stand-in module below
records what we ask of ``torch_tensorrt`` (it checks our call, not Torch-TensorRT); the real compile runs
only where a GPU and Torch-TensorRT are (``trtinfer bench --device cuda``)."""

from __future__ import annotations

import inspect
from types import SimpleNamespace

import numpy as np
import pytest

from trtinfer.benchmarks.gpu_cases import TorchTensorRTCase, compile_torch_tensorrt, shape_range


def test_the_shape_range_covers_every_timed_batch():
    shapes = shape_range([8, 1, 128, 32], (3, 32, 32))
    assert shapes == {"min_shape": (1, 3, 32, 32), "opt_shape": (32, 3, 32, 32), "max_shape": (128, 3, 32, 32)}
    assert shape_range([32], (3, 8, 8))["min_shape"] == shape_range([32], (3, 8, 8))["max_shape"] == (32, 3, 8, 8)
    with pytest.raises(ValueError):
        shape_range([0, 4], (3, 8, 8))


def _stand_in(keyword: str) -> SimpleNamespace:
    calls: list[dict] = []

    def compile(module, ir="default", **kwargs):  # noqa: A001 -- torch_tensorrt's name
        calls.append({"ir": ir, **kwargs})
        return module

    # the real signature's keyword: current releases arg_inputs (inputs kept), older ones inputs only
    params = [inspect.Parameter("module", inspect.Parameter.POSITIONAL_OR_KEYWORD),
              inspect.Parameter("ir", inspect.Parameter.POSITIONAL_OR_KEYWORD, default="default"),
              inspect.Parameter(keyword, inspect.Parameter.KEYWORD_ONLY, default=None),
              inspect.Parameter("kwargs", inspect.Parameter.VAR_KEYWORD)]
    compile.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
    return SimpleNamespace(compile=compile, Input=lambda **kw: SimpleNamespace(**kw), calls=calls)


@pytest.mark.parametrize("keyword", ["arg_inputs", "inputs"])
def test_torch_tensorrt_is_compiled_over_the_timed_range_not_a_static_batch_1(keyword):
    """Was: ``compile(model, inputs=[example_of_batch_1])``, a static engine then timed at batches 8/32/128."""
    case = TorchTensorRTCase(lambda: None, "fp16", np.zeros((1, 3, 32, 32), np.float32), (1, 8, 32, 128))
    trt = _stand_in(keyword)
    compile_torch_tensorrt(trt, "model", case.shapes, "half")
    (call,) = trt.calls
    (spec,) = call[keyword]
    assert call["ir"] == "dynamo" and call["enabled_precisions"] == {"half"}
    assert (spec.min_shape, spec.opt_shape, spec.max_shape) == ((1, 3, 32, 32), (32, 3, 32, 32), (128, 3, 32, 32))
    assert spec.dtype == "half" and "batch 1..128 (opt 32)" in case.info.note
