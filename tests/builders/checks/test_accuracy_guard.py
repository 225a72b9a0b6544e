"""builders/checks/accuracy_guard.py: the accuracy guard, synthetic and on a trained model."""

from __future__ import annotations

import logging
import math
from pathlib import Path

import numpy as np
import pytest

from builders_util import LABELS, one_hot_logits
from trtinfer.builders.checks.accuracy_guard import (DEFAULT_MAX_DROP, FP16_MAX_DROP, INT8_MAX_DROP, AccuracyGuard,
                                                     evaluate_precisions, no_accuracy_check)
from trtinfer.builders.logits import compare
from trtinfer.errors import AccuracyError, DataError
from trtinfer.manifest import AccuracyRecord

pytest_plugins = ["conftest_trained"]


def test_guard_defaults():
    assert (FP16_MAX_DROP, INT8_MAX_DROP) == (0.5, 0.5)
    guard = AccuracyGuard()
    assert guard.limit("fp16") == 0.5 and guard.limit("int8") == 0.5 and guard.limit("int8", 3) == 3.0
    assert DEFAULT_MAX_DROP["fp16"] == FP16_MAX_DROP


def test_guard_passes_and_fails():
    guard = AccuracyGuard()
    ref = one_hot_logits(LABELS, 20)
    small = compare(ref, one_hot_logits(LABELS, 21), LABELS)  # 0.5 points
    assert guard.check(small, "fp16") == {"max_drop_points": 0.5, "passed": True, "allowed": False}
    assert small["passed"]
    big = compare(ref, one_hot_logits(LABELS, 24), LABELS)  # 2 points
    with pytest.raises(AccuracyError) as info:
        guard.check(big, "int8")
    message = str(info.value)
    assert "drop of 2.00 points, more than the 0.50 allowed" in message and "88.00%" in message
    assert "--allow-accuracy-drop" in message and "--max-accuracy-drop" in message
    assert guard.check(dict(big), "int8", max_drop=2.5)["passed"]
    with pytest.raises(DataError):
        guard.check(dict(big), "int8", max_drop=-1)


def test_guard_allow_keeps_with_a_warning(caplog):
    big = compare(one_hot_logits(LABELS, 0), one_hot_logits(LABELS, 30), LABELS)
    with caplog.at_level(logging.WARNING):
        verdict = AccuracyGuard().check(big, "fp16", allow=True)
    assert verdict == {"max_drop_points": 0.5, "passed": False, "allowed": True}
    assert "allow-accuracy-drop" in caplog.text


def test_guard_fails_on_nan():
    cand = one_hot_logits(LABELS, 0)
    cand[3, 2] = np.nan
    r = compare(one_hot_logits(LABELS, 0), cand, LABELS)
    assert not r["finite"] and math.isinf(r["max_abs_diff"])
    with pytest.raises(AccuracyError, match="NaN or Inf"):
        AccuracyGuard().check(r, "fp16", max_drop=100)


def test_no_accuracy_check_says_so(caplog):
    with caplog.at_level(logging.WARNING):
        block = no_accuracy_check()
    assert block == AccuracyRecord(checked=False, reason="no --eval-data given")
    assert "no accuracy check ran" in caplog.text


# -- on the trained model -------------------------------------------------------------------

def test_guard_passes_for_fp16_and_int8(trained_model, fp16_model, int8_model, eval_set):
    labels_seen = []
    results = evaluate_precisions(trained_model.onnx_path, {"fp16": fp16_model.path, "int8": int8_model.path},
                                  eval_set.x, eval_set.labels, progress=lambda label: labels_seen.append(label))
    assert labels_seen == ["evaluating fp32", "evaluating fp16", "evaluating int8"]
    assert results["fp32"]["top1"] > 0.3 and results["fp32"]["samples"] == 846
    for precision in ("fp16", "int8"):
        r = results[precision]
        assert r["checked"] and r["passed"] and not r["allowed"]
        assert r["max_drop_points"] == DEFAULT_MAX_DROP[precision]
        assert r["top1_reference"] == results["fp32"]["top1"]
    assert results["fp16"]["top1_agreement"] >= 0.995


def test_guard_fails_for_miscalibrated_int8(trained_model, cifar_root: Path, eval_set, tmp_path: Path):
    """A calibration set preprocessed without the model's normalization slips past nothing but the guard."""
    from trtinfer.builders.precision.modelopt import quantize_int8
    from trtinfer.calibration.calibset import make_calibration_set
    from trtinfer.preprocess import make_spec

    wrong = make_calibration_set(cifar_root, make_spec(32, "none"), samples=64, seed=0)
    bad = tmp_path / "bad.onnx"
    quantize_int8(trained_model.onnx_path, bad, wrong.x)
    with pytest.raises(AccuracyError, match="int8 top-1 .* more than the 0.50 allowed"):
        evaluate_precisions(trained_model.onnx_path, {"int8": bad}, eval_set.x, eval_set.labels)
    results = evaluate_precisions(trained_model.onnx_path, {"int8": bad}, eval_set.x, eval_set.labels, allow=True)
    assert not results["int8"]["passed"] and results["int8"]["allowed"]
