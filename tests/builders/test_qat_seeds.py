"""Quantization-aware fine-tuning against post-training INT8 on the fragile MobileNetV2 of issue 31 (8 epochs
at lr 0.1 on the shared rows, ``scripts/make_demo_checkpoint.py``), over three build seeds: QAT's top-1 drop
is below PTQ's by more than their seed-to-seed spread, and within the default allowance on every seed.

Slow (about 40 minutes on 2 cores: training the checkpoint, then two or three INT8 builds per seed).
The default suite covers the same code path on a small model (tests/builders/test_qat.py)."""

from __future__ import annotations

import statistics
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
SEEDS = (0, 1, 2)


@pytest.fixture(scope="module")
def fragile_mobilenet(tmp_path_factory, cifar_dir):
    path = tmp_path_factory.mktemp("fragile") / "mbv2-frag.pth"
    subprocess.run([sys.executable, str(REPO / "scripts" / "make_demo_checkpoint.py"), "--data", str(cifar_dir),
                    "-o", str(path), "--epochs", "8", "--lr", "0.1", "--arch", "mobilenet_v2", "--seed", "0"],
                   check=True, capture_output=True)
    return path


def test_qat_beats_calibration_by_more_than_the_seed_spread(fragile_mobilenet, cifar_dir, tmp_path):
    from trtinfer.benchmarks.qat_report import run_seed, summarize
    from trtinfer.defaults import INT8_MAX_DROP

    outcomes = []
    for seed in SEEDS:
        outcomes += run_seed(fragile_mobilenet, cifar_dir, tmp_path, "mbv2", seed, {},
                             {"input_size": 32, "normalize": "cifar10"})
    summary = summarize(outcomes)
    ptq, qat = summary["PTQ + fallback"], summary["QAT"]
    spread = max(ptq["sd"], qat["sd"])
    assert ptq["mean"] - qat["mean"] > spread, summary
    assert all(o.drop_points <= INT8_MAX_DROP for o in outcomes if o.variant == "QAT"), summary
    assert statistics.fmean(o.drop_points for o in outcomes if o.variant == "QAT") == pytest.approx(qat["mean"])


def test_gpu_target_qat_build_is_within_the_allowance_with_tensorrt_qdq(fragile_mobilenet, cifar_dir, tmp_path):
    """A GPU-target build with --qat on: ModelOpt's Q/DQ graph, judged by ONNX Runtime on the test rows, within
    the default allowance, with TensorRT's constraints (signed INT8, zero points 0, per-channel weights)."""
    import onnx

    from trtinfer.builders.options import BuildOptions
    from trtinfer.builders.pipeline import Builder
    from trtinfer.builders.progress import Reporter
    from trtinfer.builders.qat.modelopt_qat import check_tensorrt_qdq
    from trtinfer.manifest import Manifest

    opts = BuildOptions(checkpoint=fragile_mobilenet, precisions=("int8",), out_dir=tmp_path, target="gpu",
                        calib_data=cifar_dir, eval_data=cifar_dir, input_size=32, normalize="cifar10", qat="on")
    [path] = Builder(opts, Reporter(quiet=True)).run()
    m = Manifest.read(path)
    assert m.target == "gpu" and m.conversion.tool == "modelopt" and m.calibration.qat.kept
    assert m.accuracy.execution == "onnxruntime" and m.accuracy.passed
    check_tensorrt_qdq(onnx.load(str(path / "model.onnx")))
