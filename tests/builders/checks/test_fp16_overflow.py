"""builders/checks/fp16_overflow.py: real AutoCast FP16 models that overflow, run by ONNX Runtime on the CPU.

Why a constant and not a large conv activation for the NaN logits: ONNX Runtime's CPU provider runs
FP16 regions in float32 (it has no FP16 kernels for most ops on x86 and drops the Cast pairs between
them), so an activation above 65504 never overflows in its logits. A constant above 65504 does:
AutoCast stores it as FP16 Inf. The activation overflow still shows in the offender scan, which
stores every exposed tensor in FP16, as TensorRT would.
"""

from __future__ import annotations

import hashlib
import json
import math
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from trtinfer.builders.checks.fp16_overflow import (FP16_HINT, FP16_MAX_RELATIVE_LOGIT_ERROR, check_fp16,
                                                    find_fp16_offenders, fp16_output_problem)
from trtinfer.builders.logits import compare, run_onnx
from trtinfer.errors import AccuracyError

onnx = pytest.importorskip("onnx")
pytest.importorskip("modelopt.onnx.autocast")

ROWS = 16
LABELS = np.zeros(ROWS, np.int64)


def gain_net(gain: float, weight_gain: float = 1.0):
    """conv -> ReLU -> times ``gain`` -> divided by ``gain * weight_gain`` -> conv -> pool -> linear.

    In FP32 the gains cancel; in FP16 a ``gain`` above 65504 is an Inf constant and a ``weight_gain``
    of 3e4 drives the first conv's output past 65504 (it reaches ~1.1e5 on ``distinct_inputs``).
    """
    import torch
    from torch import nn

    class GainNet(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            torch.manual_seed(0)
            self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
            self.conv2 = nn.Conv2d(8, 16, 3, stride=2, padding=1)
            self.fc = nn.Linear(16, 10)
            with torch.no_grad():
                self.conv1.weight.mul_(weight_gain)
                self.conv1.bias.mul_(weight_gain)

        def forward(self, x):
            x = torch.relu(self.conv1(x)) * gain
            x = torch.relu(self.conv2(x / (gain * weight_gain)))
            return self.fc(x.mean((2, 3)))

    return GainNet().eval()


@dataclass
class Pair:
    fp32: Path
    fp16: Path
    reference: np.ndarray  # FP32 logits on the inputs
    logits: np.ndarray  # FP16 logits, run as the accuracy guard runs them


@pytest.fixture(scope="module")
def x() -> np.ndarray:
    from runtime.helpers import distinct_inputs

    return distinct_inputs(ROWS)


@pytest.fixture(scope="module")
def build(tmp_path_factory, x):
    pytest.importorskip("torch")
    from runtime.helpers import export_artifact

    from trtinfer.builders.precision.modelopt import convert_fp16

    def make(name: str, gain: float, weight_gain: float = 1.0) -> Pair:
        folder = tmp_path_factory.mktemp(name)
        fp32 = export_artifact(folder / "fp32", gain_net(gain, weight_gain), name) / "model.onnx"
        fp16 = folder / "fp16" / "model.onnx"
        with warnings.catch_warnings():  # numpy's "overflow encountered in cast": the point of the exercise
            warnings.simplefilter("ignore", RuntimeWarning)
            convert_fp16(fp32, fp16, data_max=1e9)  # let AutoCast put every node in FP16, however large
        return Pair(fp32, fp16, run_onnx(fp32, x), run_onnx(fp16, x))

    return make


@pytest.fixture(scope="module")
def healthy(build) -> Pair:
    return build("healthy", gain=100.0)


@pytest.fixture(scope="module")
def overflowing(build) -> Pair:
    return build("overflowing", gain=1e5)


def _constant_node(model_path: Path, value: float) -> str:
    model = onnx.load(str(model_path))
    for node in model.graph.node:
        if node.op_type == "Constant" and float(onnx.numpy_helper.to_array(node.attribute[0].t)) == value:
            return node.name
    raise AssertionError(f"no Constant {value} in {model_path}")


def _snapshot(*folders: Path) -> dict[str, str]:
    return {str(p): hashlib.sha256(p.read_bytes()).hexdigest()
            for folder in folders for p in sorted(folder.rglob("*"))}


def test_output_problem_reasons():
    reference = np.array([[-3.9, 3.9], [0.0, 1.0]], np.float32)  # range 7.8
    assert fp16_output_problem({"finite": False, "max_abs_diff": math.inf}, reference) == "NaN or Inf logits"
    assert fp16_output_problem({"finite": True, "max_abs_diff": 3.2}, reference) == (
        "max |logit diff| 3.2 is 41% of the FP32 logit range (limit 5%)")
    assert fp16_output_problem({"finite": True, "max_abs_diff": 0.0}, reference) is None
    just_inside = 7.8 * FP16_MAX_RELATIVE_LOGIT_ERROR * 0.99
    assert fp16_output_problem({"finite": True, "max_abs_diff": just_inside}, reference) is None


def test_overflowing_constant_is_named_first(overflowing: Pair, x):
    result = compare(overflowing.reference, overflowing.logits, LABELS)
    assert not result["finite"], "the FP16 model should really produce NaN/Inf logits in ONNX Runtime"
    constant = _constant_node(overflowing.fp32, 1e5)  # the node that overflows FP16; AutoCast keeps its name
    with pytest.raises(AccuracyError) as info:
        check_fp16(overflowing.fp32, overflowing.fp16, x, result, overflowing.reference)
    message = info.value.message
    assert message.startswith("FP16 logits go non-finite on the eval images; first offending nodes: "
                              f"{constant} (Constant, ")
    assert "/Mul (Mul, " in message and message.index(constant) < message.index("/Mul")
    assert info.value.hint == FP16_HINT and "--fp16-exclude NODE[,NODE]" in info.value.hint
    offenders = find_fp16_offenders(overflowing.fp32, overflowing.fp16, x)
    assert offenders[0]["node"] == constant and offenders[0]["non_finite"] > 0
    assert 1 < len(offenders) <= 5  # the Inf propagates; the default limit keeps the list short
    json.dumps(offenders, allow_nan=False)


def test_healthy_conversion_passes(healthy: Pair, x):
    result = compare(healthy.reference, healthy.logits, LABELS)
    assert result["finite"] and fp16_output_problem(result, healthy.reference) is None
    check_fp16(healthy.fp32, healthy.fp16, x, result, healthy.reference)
    assert find_fp16_offenders(healthy.fp32, healthy.fp16, x) == []


def test_drift_without_a_culprit_says_so(healthy: Pair, x):
    drift = {"finite": True, "max_abs_diff": 10 * float(np.ptp(healthy.reference))}
    with pytest.raises(AccuracyError, match=r"FP16 logits drift from FP32 on the eval images: max \|logit diff\| .* "
                                            r"no single node output departs"):
        check_fp16(healthy.fp32, healthy.fp16, x, drift, healthy.reference)


def test_scan_sees_an_activation_overflow(build, x):
    pair = build("activation", gain=1.0, weight_gain=3e4)
    offenders = find_fp16_offenders(pair.fp32, pair.fp16, x, limit=1)
    conv = next(n for n in onnx.load(str(pair.fp32)).graph.node if n.op_type == "Conv")  # the first one
    assert [(o["node"], o["op_type"], o["output"]) for o in offenders] == [(conv.name, "Conv", conv.output[0])]
    assert offenders[0]["non_finite"] > 0 and offenders[0]["fp32_absmax"] > 65504
    json.dumps(offenders, allow_nan=False)
    # ONNX Runtime's CPU provider computes FP16 nodes in float32: the logits stay finite and close here,
    # yet TensorRT would store that activation in FP16 and get Inf. The build must fail all the same.
    result = compare(pair.reference, pair.logits, LABELS)
    assert result["finite"]
    with pytest.raises(AccuracyError, match=f"FP16 activations overflow.*{conv.name} \\(Conv, "):
        check_fp16(pair.fp32, pair.fp16, x, result, pair.reference)


def test_scan_leaves_the_models_alone(overflowing: Pair, x):
    folders = (overflowing.fp32.parent, overflowing.fp16.parent)
    before = _snapshot(*folders)
    offenders = find_fp16_offenders(overflowing.fp32, overflowing.fp16, x, limit=50, rows=5)
    assert _snapshot(*folders) == before  # byte-identical, and nothing written beside them
    assert all(isinstance(o["relative_error"], float) and math.isfinite(o["relative_error"]) for o in offenders)
    json.dumps(offenders, allow_nan=False)
