"""builders/precision/modelopt.py: FP16 (AutoCast) and INT8 (Q/DQ) of a briefly trained CIFAR-10 model, on the CPU."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from trtinfer.builders.logits import compare, run_onnx
from trtinfer.builders.precision import modelopt
from trtinfer.builders.precision.tools import reduce_precision
from trtinfer.errors import DataError

pytest_plugins = ["conftest_trained"]
onnx = pytest.importorskip("onnx")


def test_trained_model_is_well_above_chance(fp32_logits, eval_set):
    top1 = (fp32_logits.argmax(1) == eval_set.labels).mean()
    assert top1 > 0.30, f"the test model reaches only {top1:.1%} on the test rows"


def test_fp16_keeps_float32_io_and_agrees(fp16_model, fp32_logits, eval_set):
    facts = fp16_model.facts
    assert facts["tool"] == "modelopt.onnx.autocast" and facts["precision"] == "fp16"
    assert facts["io_types"] == {"inputs": {"input": "float32"}, "outputs": {"logits": "float32"}}
    assert facts["nodes_fp16"] > 0 and facts["reference_data"].endswith("calibration images")
    model = onnx.load(str(fp16_model.path))
    fp16_inits = [i for i in model.graph.initializer if i.data_type == onnx.TensorProto.FLOAT16]
    assert fp16_inits, "weights should be stored in FP16"
    result = compare(fp32_logits, run_onnx(fp16_model.path, eval_set.x), eval_set.labels)
    assert result["top1_agreement"] >= 0.995 and abs(result["top1_drop_points"]) <= 0.5
    assert result["max_abs_diff"] < 0.5


def test_int8_inserts_qdq_and_keeps_accuracy(int8_model, fp32_logits, eval_set):
    facts = int8_model.facts
    assert facts["tool"] == "modelopt.onnx.quantization" and facts["method"] == "entropy"
    assert facts["calibration_images"] == 512 and facts["high_precision"] == "fp32"
    assert facts["quantize_linear"] > 20 and facts["dequantize_linear"] >= facts["quantize_linear"]
    assert facts["quantized_ops"]["Conv"] == 20  # every Conv of ResNet-18
    assert any(op.startswith("Gemm:") for op in facts["unquantized_compute_ops"])  # the classifier stays FP32
    assert facts["io_types"] == {"inputs": {"input": "float32"}, "outputs": {"logits": "float32"}}
    model = onnx.load(str(int8_model.path))
    ops = {n.op_type for n in model.graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    assert not [i for i in model.graph.initializer if i.data_type == onnx.TensorProto.FLOAT16]
    result = compare(fp32_logits, run_onnx(int8_model.path, eval_set.x), eval_set.labels)
    assert result["top1_drop_points"] <= 1.0, result
    assert result["top1_agreement"] >= 0.9, result


def test_calibration_must_fit_the_model(trained_model, tmp_path: Path):
    wrong = np.zeros((8, 3, 16, 16), np.float32)
    with pytest.raises(DataError, match=r"\[3, 16, 16\] per image but the model takes \[3, 32, 32\]"):
        modelopt.quantize_int8(trained_model.onnx_path, tmp_path / "q.onnx", wrong)
    with pytest.raises(DataError, match="float32 NCHW"):
        modelopt.quantize_int8(trained_model.onnx_path, tmp_path / "q.onnx", np.zeros((8, 32, 32, 3), np.uint8))
    with pytest.raises(DataError, match="needs calibration"):
        reduce_precision("int8", trained_model.onnx_path, tmp_path / "q.onnx")
    with pytest.raises(DataError, match="unknown calibration method"):
        modelopt.quantize_int8(trained_model.onnx_path, tmp_path / "q.onnx", np.zeros((8, 3, 32, 32), np.float32),
                                method="percentile")
    assert not (tmp_path / "q.onnx").exists()


def test_modelopt_output_stays_off_stdout(trained_model, fp16_model, tmp_path: Path, capfd):
    # ModelOpt logs to stdout and ORT's calibrator prints progress bars: none of it may reach the terminal.
    capfd.readouterr()
    facts = modelopt.convert_fp16(trained_model.onnx_path, tmp_path / "again.onnx")
    captured = capfd.readouterr()
    assert captured.out == "" and "[modelopt]" not in captured.err
    assert facts["reference_data"].startswith("random")
    assert all(isinstance(n, str) for n in facts["notes"])


@pytest.mark.slow
def test_int8_max_calibration_and_first_layer_kept(trained_model, calib_set, fp32_logits, eval_set, tmp_path: Path):
    facts = modelopt.quantize_int8(trained_model.onnx_path, tmp_path / "max.onnx", calib_set.x[:256], method="max",
                                    keep_first_layer=True)
    assert facts["method"] == "max" and facts["calibration_images"] == 256
    first_conv = modelopt._first_conv(onnx.load(str(trained_model.onnx_path)))
    assert f"Conv:{first_conv}" in facts["unquantized_compute_ops"]
    assert facts["quantized_ops"]["Conv"] == 19
    result = compare(fp32_logits, run_onnx(tmp_path / "max.onnx", eval_set.x), eval_set.labels)
    assert result["top1_drop_points"] <= 2.0, result
