"""Planning a run: the artifacts given, the images, and the cases (benchmarks/plan.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from trtinfer.benchmarks.options import BenchSettings
from trtinfer.benchmarks.plan import Inputs, case_ids, check_same_input, given_artifacts, plan_cases, skipped_precision
from trtinfer.errors import ArtifactError, TrtInferError
from trtinfer.manifest import ONNX_NAME, CheckpointRecord, SourceRecord

from .fake_case import images, manifest


def test_a_timed_batch_repeats_the_eval_rows_else_the_check_rows():
    inputs = Inputs(images(3), "rows")
    assert len(inputs.batch(8)) == 8 and np.array_equal(inputs.batch(8)[3], inputs.check[0])
    inputs.eval_x = images(2, seed=5)
    assert np.array_equal(inputs.batch(4)[2], inputs.eval_x[0]) and inputs.batch(4).flags.c_contiguous


def test_cases_follow_the_asked_backends_precisions_and_devices():
    artifacts = {"fp32": (Path("a-fp32"), manifest("fp32")), "int8": (Path("a-int8"), manifest("int8"))}
    s = BenchSettings(Path("m.pth"), backends=("auto", "onnxruntime", "onnxruntime-bare", "tensorrt", "torch-eager",
                                               "torch-int8"), device="cpu")
    cases = plan_cases(s, 2, object(), artifacts, Inputs(images(2), "rows"))
    assert case_ids(cases) == [
        "torch-eager fp32 cpu", "auto fp32 cpu", "onnxruntime fp32 cpu", "onnxruntime-bare (spin) fp32 cpu",
        "onnxruntime-bare (no spin) fp32 cpu", "auto int8 cpu", "onnxruntime int8 cpu", "torch-int8 int8 cpu"]
    only_fp32 = plan_cases(BenchSettings(Path("m.pth"), backends=("torch-int8",), precisions=("fp32",)), 2, object(),
                           artifacts, Inputs(images(2), "rows"))
    assert case_ids(only_fp32) == ["torch-eager fp32 cpu"]  # the baseline always runs; no INT8 peer without int8


def test_two_cases_with_one_label_are_numbered():
    s = BenchSettings(Path("m.pth"), backends=("onnxruntime",), device="cpu")
    artifacts = {"fp32": (Path("a"), manifest("fp32"))}
    cases = plan_cases(s, 2, object(), artifacts, Inputs(images(2), "rows")) * 2
    assert case_ids(cases)[-2:] == ["torch-eager fp32 cpu #2", "onnxruntime fp32 cpu #2"]


def test_a_failed_precision_is_a_skipped_row_per_backend_of_ours():
    rows = skipped_precision(BenchSettings(Path("m.pth"), backends=("auto", "openvino", "torch-eager")), "int8", "why")
    assert [(r.backend, r.precision, r.status, r.reason) for r in rows] == [("auto", "int8", "skipped", "why"),
                                                                           ("openvino", "int8", "skipped", "why")]


def test_artifacts_must_expect_the_same_input():
    small, large = manifest("fp32"), manifest("fp16")
    large.input.shape = [-1, 3, 8, 8]
    check_same_input({"fp32": (Path("a"), small), "fp16": (Path("b"), manifest("fp16"))})
    with pytest.raises(ArtifactError, match="different inputs"):
        check_same_input({"fp32": (Path("a"), small), "fp16": (Path("b"), large)})


def _artifact(directory: Path, precision: str, sha: str) -> Path:
    m = manifest(precision)
    m.source = SourceRecord(CheckpointRecord(path="m.pth", file="m.pth", sha256=sha, format="state_dict"))
    directory.mkdir()
    (directory / ONNX_NAME).write_bytes(b"not a model: only hashed here")
    m.record_file(directory, ONNX_NAME)
    m.write(directory)
    return directory


def test_given_artifacts_must_come_from_the_checkpoint_one_per_precision(tmp_path):
    a = _artifact(tmp_path / "a", "fp32", "ab" * 32)
    b = _artifact(tmp_path / "b", "fp32", "ab" * 32)
    c = _artifact(tmp_path / "c", "fp16", "ab" * 32)
    found = given_artifacts(BenchSettings(Path("m.pth"), artifact_dirs=[a, c], precisions=("fp32",)), "ab" * 32)
    assert list(found) == ["fp32"] and found["fp32"][0] == a  # fp16 given but not asked
    with pytest.raises(ArtifactError, match="was built from checkpoint sha256 abababab"):
        given_artifacts(BenchSettings(Path("m.pth"), artifact_dirs=[a]), "cd" * 32)
    with pytest.raises(TrtInferError, match="two fp32 artifacts given"):
        given_artifacts(BenchSettings(Path("m.pth"), artifact_dirs=[a, b]), "ab" * 32)
