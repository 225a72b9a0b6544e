"""builders/engine/layer_precisions.py: reading the engine inspector's JSON (TensorRT 10's and 11's forms,
with and without an execution context) and the precision rule an FP16 or INT8 engine must meet."""

from __future__ import annotations

import json

import pytest

from fakes.tensorrt_build import (DYNAMIC_UNKNOWN, FAKE_FP16_ENGINE, FP16_ENGINE, FP32_ENGINE, INT8_ENGINE,
                                  inspector_json)
from trtinfer.builders.engine.layer_precisions import check_engine_precision, summarize_layers, tensor_precision
from trtinfer.builders.engine.settings import EngineBuildError


@pytest.mark.parametrize("text, precision", [
    ("Row major linear FP32 format (kLINEAR)", "fp32"),
    ("Row major linear FP16 format", "fp16"),
    ("Channel major FP16 format where channel % 8 == 0", "fp16"),
    ("Four wide channel vectorized row major Int8 format", "int8"),
    ("Thirty-two wide channel vectorized row major Int8 format", "int8"),
    ("Half", "fp16"), ("Float", "fp32"), ("Int8", "int8"), ("BFloat16", "bf16"), ("Int32", "int32"),
    ("Row major linear BF16 format", "bf16"), ("FP8", "fp8"), ("Bool", "bool"), ("UInt8", "uint8"),
    ("", None), (None, None), ("Row major linear format", None),
])
def test_tensor_precision(text, precision):
    assert tensor_precision(text) == precision


@pytest.mark.parametrize("trt11", [False, True], ids=["trt10-json", "trt11-json"])
def test_summarize_layers_counts_each_precision(trt11):
    summary = summarize_layers(inspector_json(FP16_ENGINE, trt11))
    assert summary.total == 4
    assert summary.precisions == {"fp16": 4}
    assert summary.compute_precisions == {"fp16": 2}
    summary = summarize_layers(inspector_json(FP32_ENGINE, trt11))
    assert summary.precisions == {"fp32": 2, "other": 1}
    summary = summarize_layers(inspector_json(INT8_ENGINE, trt11))
    assert summary.precisions == {"int8": 3} and summary.compute_precisions == {"int8": 2}
    assert summary.to_manifest() == {"total": 3, "int8": 3}


@pytest.mark.parametrize("type_key", ["Datatype", "DataType", "Format/Datatype", "data_type"])
def test_the_type_key_is_found_by_name_not_spelling(type_key):
    """TensorRT 11's key for a tensor's type cannot be printed here: any spelling of it is read."""
    summary = summarize_layers(inspector_json(FP16_ENGINE, trt11=True, type_key=type_key))
    assert summary.precisions == {"fp16": 4} and summary.compute_precisions == {"fp16": 2}


def test_the_data_type_key_is_read_before_the_format():
    """A TensorRT 11 layout string may name a type too; the split-out data type is what counts."""
    tensor = {"Name": "t", "Format": "Row major linear FP32 format (kLINEAR)", "Datatype": "Half"}
    layer = {"Name": "conv", "LayerType": "CaskConvolution", "Inputs": [tensor], "Outputs": [tensor]}
    assert summarize_layers({"Layers": [layer]}).precisions == {"fp16": 1}


@pytest.mark.parametrize("trt11", [False, True], ids=["trt10-json", "trt11-json"])
def test_dynamic_shapes_without_a_context_fall_back_to_weights(trt11):
    """Without an execution context the inspector prints "N/A due to dynamic shapes" for every tensor:
    no tensor type is read from it, and only layers with weights still say their precision."""
    data = json.loads(inspector_json(FP16_ENGINE, trt11=trt11, dynamic_unknown=True))
    assert DYNAMIC_UNKNOWN in json.dumps(data)
    unknown = summarize_layers(data)
    assert unknown.precisions == {"unknown": 4}
    with pytest.raises(EngineBuildError, match="no per-layer types"):
        check_engine_precision("fp16", unknown)
    data["Layers"][1]["Weights"] = {"Type": "Half", "Count": 864}  # the convolution's weights
    check_engine_precision("fp16", summarize_layers(data))


def test_summarize_layers_weights_and_names_only():
    layer = {"Name": "conv", "LayerType": "CaskConvolution", "Inputs": [], "Outputs": [],
             "Weights": {"Type": "Half", "Count": 864}}
    assert summarize_layers({"Layers": [layer]}).precisions == {"fp16": 1}
    # Without DETAILED verbosity the inspector lists names only: nothing can be verified.
    names_only = summarize_layers(json.dumps({"Layers": ["conv1 + relu", "fc"], "Bindings": []}))
    assert names_only.precisions == {"unknown": 2}
    with pytest.raises(EngineBuildError, match="no per-layer types"):
        check_engine_precision("fp16", names_only)
    check_engine_precision("fp32", names_only)  # FP32 has no floor to check
    with pytest.raises(EngineBuildError, match="not JSON"):
        summarize_layers("{not json")


def test_precision_rule_checks_what_was_built():
    check_engine_precision("fp16", summarize_layers(inspector_json(FP16_ENGINE)))
    check_engine_precision("int8", summarize_layers(inspector_json(INT8_ENGINE)))
    check_engine_precision("fp32", summarize_layers(inspector_json(FP32_ENGINE)))
    with pytest.raises(EngineBuildError) as info:
        check_engine_precision("fp16", summarize_layers(inspector_json(FP32_ENGINE)))
    assert "no FP16 layers" in str(info.value) and "FP32 engine labelled FP16" in str(info.value)
    # FP16 reformat layers do not make an FP16 engine when the convolutions run in FP32.
    with pytest.raises(EngineBuildError, match="no FP16 layers"):
        check_engine_precision("fp16", summarize_layers(inspector_json(FAKE_FP16_ENGINE)))
    with pytest.raises(EngineBuildError, match="no INT8 layers"):
        check_engine_precision("int8", summarize_layers(inspector_json(FP16_ENGINE)))
