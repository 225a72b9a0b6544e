"""Correctness before speed: the check against eager FP32 (benchmarks/correctness.py)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from trtinfer.benchmarks.correctness import (SANITY_AGREEMENT, check_case, eager_reference, run_rows,
                                             sampling_noise_points)
from trtinfer.benchmarks.plan import Inputs

from .fake_case import FakeCase, images


def test_rows_run_in_full_batches_the_last_one_padded():
    case = FakeCase()
    x = images(10)
    out = run_rows(case, x, 4)
    assert case.seen == [4, 4, 4] and out.shape == (10, 10)
    np.testing.assert_allclose(out, FakeCase().infer(x), rtol=1e-6)


def test_sampling_noise_is_twice_the_standard_error_and_at_least_one_image():
    assert sampling_noise_points(0.04, 100) == pytest.approx(200 * math.sqrt(0.04 / 100))  # 4 points
    assert sampling_noise_points(0.0, 100) == sampling_noise_points(0.01, 100)
    assert sampling_noise_points(0.5, 0) == math.inf


def _reference(inputs: Inputs):
    return eager_reference(FakeCase("torch-eager", kind="baseline"), inputs, 8, lambda message: None)


def test_fp32_is_held_to_the_export_tolerance():
    inputs = Inputs(images(16), "16 rows")
    reference = _reference(inputs)
    ok = check_case(FakeCase(), reference, inputs, 8, {})
    assert ok["passed"] and ok["max_abs_diff"] == 0.0 and "export validation" in ok["rule"]
    off = check_case(FakeCase(shift=0.01), reference, inputs, 8, {})
    assert not off["passed"] and "max |logit diff| 0.01" in off["why"]
    assert check_case(FakeCase(shift=0.01), reference, inputs, 8, {"atol": 0.1})["passed"]


def test_reduced_precision_without_eval_data_meets_the_sanity_floor():
    inputs = Inputs(images(16), "16 rows")
    reference = _reference(inputs)
    shifted = check_case(FakeCase(precision="int8", shift=0.01), reference, inputs, 8, {})
    assert shifted["passed"] and f"{SANITY_AGREEMENT:.0%}" in shifted["rule"]
    swapped = check_case(FakeCase(precision="int8", swap=True), reference, inputs, 8, {})
    assert not swapped["passed"] and "top-1 agrees with eager FP32 on only" in swapped["why"]


def test_with_eval_data_a_reduced_precision_is_held_to_the_guard_plus_noise():
    x = images(40, seed=2)
    truth = FakeCase().infer(x).argmax(1)
    inputs = Inputs(x[:16], "the first 16 eval images", eval_x=x, eval_y=truth, eval_source="fake")
    reference = _reference(inputs)
    assert reference.eval_top1 == 1.0
    same = check_case(FakeCase(precision="fp16", shift=0.01), reference, inputs, 8, {"max_accuracy_drop": 0.5})
    assert same["passed"] and same["eval_top1"] == 1.0 and same["limit"] == 0.5 and not same["over_allowance"]
    other = check_case(FakeCase(precision="fp16", swap=True), reference, inputs, 8, {"max_accuracy_drop": 0.5})
    assert not other["passed"] and "beyond the 0.5 the build's fp16 guard allows" in other["why"]
    assert other["eval_drop_points"] > 50 and other["over_allowance"]


def test_an_fp32_auto_row_whose_single_rows_run_in_bf16_gets_the_reduced_precision_allowance():
    """auto may run one-row calls on another execution (model.single_execution): when that one is lossy
    (openvino-bf16) while the full-batch one is not, its FP32 logits are judged as BF16 arithmetic, as the build
    checked them, not held to the export tolerance."""
    inputs = Inputs(images(16), "16 rows")
    reference = _reference(inputs)
    plain = FakeCase("auto", shift=0.01)
    plain.info.options["chosen"] = "onnxruntime"
    assert not check_case(plain, reference, inputs, 8, {})["passed"]
    routed = FakeCase("auto", shift=0.01)
    routed.info.options.update(chosen="onnxruntime", single_rows="openvino-bf16")
    assert check_case(routed, reference, inputs, 8, {})["passed"]
