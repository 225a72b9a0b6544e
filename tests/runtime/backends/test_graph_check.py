"""backends/graph_check.py: the manifest's shapes against the graph a backend loaded."""

from __future__ import annotations

import pytest

from trtinfer.errors import ArtifactError
from trtinfer.manifest import Manifest, PreprocessSpec, TensorSpec
from trtinfer.runtime.backends.graph_check import check_graph_shapes, ort_dims


def _manifest() -> Manifest:
    return Manifest(name="m", arch="resnet18", num_classes=10, labels=[str(i) for i in range(10)], precision="fp32",
                    input=TensorSpec("input", [-1, 3, 32, 32]), output=TensorSpec("logits", [-1, 10]),
                    preprocess=PreprocessSpec(input_size=32, resize=32, mean=[0.5] * 3, std=[0.5] * 3))


def test_matching_and_dynamic_dims_pass():
    check_graph_shapes(_manifest(), [None, 3, 32, 32], [None, 10], "model.onnx")
    check_graph_shapes(_manifest(), [1, 3, None, None], [1, None], "model.onnx")  # dynamic: resolved at run time


@pytest.mark.parametrize("inp, out, what", [([None, 3, 64, 64], [None, 10], "input"),
                                            ([None, 3, 32, 32], [None, 5], "output"),
                                            ([None, 3, 32], [None, 10], "input")])
def test_a_graph_that_disagrees_is_refused(inp, out, what):
    with pytest.raises(ArtifactError, match=f"model.onnx: the model's {what} is") as info:
        check_graph_shapes(_manifest(), inp, out, "model.onnx")
    assert "rebuild the artifact" in info.value.hint


def test_onnxruntime_dims():
    assert ort_dims(["batch", 3, 32, None, -1]) == [None, 3, 32, None, None]
