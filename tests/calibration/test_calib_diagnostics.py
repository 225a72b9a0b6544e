"""Calibration diagnostics on the real CIFAR rows and a real exported ONNX model (ONNX Runtime, CPU)."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import warnings
from pathlib import Path

import numpy as np
import onnx
import pytest
from click.testing import CliRunner

from runtime.helpers import export_artifact, tiny_net
from trtinfer.calibration.calibset import CalibrationSet, make_calibration_set
from trtinfer.calibration.diagnostics import (
    ACTIVATION_OPS, MAX_SPREAD_LIMIT, MEDIAN_SPREAD_LIMIT, PERCENTILE, VERDICT_NONFINITE, VERDICT_OK,
    VERDICT_TOO_FEW, _Range, calibration_diagnostics, describe_diagnostics,
)
from trtinfer.cli import cli
from trtinfer.manifest import ONNX_NAME, CalibrationRecord, Manifest, read_record
from trtinfer.preprocess import make_spec

SPEC = make_spec(32, "cifar10")


@pytest.fixture(scope="module")
def artifact(tmp_path_factory) -> Path:
    return export_artifact(tmp_path_factory.mktemp("tiny"), tiny_net(), "tiny")


@pytest.fixture(scope="module")
def onnx_path(artifact: Path) -> Path:
    return artifact / ONNX_NAME


@pytest.fixture(scope="module")
def calib512(cifar_root: Path) -> CalibrationSet:
    return make_calibration_set(cifar_root, SPEC, samples=512, seed=0)


def _diag(onnx_path: Path, calib: CalibrationSet, **kwargs) -> dict:
    return calibration_diagnostics(onnx_path, calib.x, calib.labels, calib.class_names, **kwargs)


def _activation_names(path: Path) -> list[str]:
    return [n.output[0] for n in onnx.load(str(path)).graph.node if n.op_type in ACTIVATION_OPS]


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_coverage_counts_are_the_sets_counts(onnx_path, calib512):
    diag = _diag(onnx_path, calib512)
    counts = np.bincount(calib512.labels, minlength=len(calib512.class_names))
    cov = diag["coverage"]
    assert diag["images"] == 512
    assert cov["labelled"] is True and cov["classes"] == 10 and cov["covered"] == 10 and cov["missing"] == []
    assert (cov["min_per_class"], cov["max_per_class"]) == (int(counts.min()), int(counts.max())) == (51, 52)
    assert cov["balanced"] is True
    assert describe_diagnostics(diag)[0] == "calibration covers 10/10 classes, 51-52 images each"


def test_missing_classes_are_listed(onnx_path, calib512):
    keep = np.isin(calib512.labels, [0, 3, 7])
    diag = calibration_diagnostics(onnx_path, calib512.x[keep], calib512.labels[keep], calib512.class_names)
    cov = diag["coverage"]
    assert cov["covered"] == 3 and cov["classes"] == 10
    assert cov["missing"] == [n for i, n in enumerate(calib512.class_names) if i not in (0, 3, 7)]
    kept = np.bincount(calib512.labels[keep], minlength=10)[[0, 3, 7]]
    assert cov["min_per_class"] == 0 and cov["max_per_class"] == int(kept.max()) > 1 and cov["balanced"] is False
    assert diag["images"] == int(keep.sum())
    assert "missing: automobile, bird, deer" in describe_diagnostics(diag)[0]


def test_unlabelled_sets_say_so(onnx_path, calib512):
    x = calib512.x[:16]
    for labels in (None, np.full(16, -1, dtype=np.int64)):
        diag = calibration_diagnostics(onnx_path, x, labels, calib512.class_names)
        assert diag["coverage"] == {"labelled": False}
        assert describe_diagnostics(diag)[0] == "calibration images have no labels: class coverage unknown"


def test_more_images_give_steadier_ranges(onnx_path, cifar_root, calib512):
    big = _diag(onnx_path, calib512)["range_spread"]
    small = _diag(onnx_path, make_calibration_set(cifar_root, SPEC, samples=8, seed=1))["range_spread"]
    assert big["halves"] == [256, 256] and small["halves"] == [4, 4]
    assert big["tensors"] == small["tensors"] == len(_activation_names(onnx_path)) == 5
    assert big["median_spread"] < small["median_spread"]
    assert big["max_spread"] < small["max_spread"]
    assert big["median_spread_percentile"] < small["median_spread_percentile"]
    assert big["verdict"] == VERDICT_OK
    assert small["verdict"] == VERDICT_TOO_FEW  # median 0.28 on these 8 rows
    for rs in (big, small):
        too_few = rs["max_spread"] > MAX_SPREAD_LIMIT or rs["median_spread"] > MEDIAN_SPREAD_LIMIT
        assert rs["verdict"] == (VERDICT_TOO_FEW if too_few else VERDICT_OK)
        worst = rs["worst"]
        assert len(worst) == 5 and [w["spread"] for w in worst] == sorted((w["spread"] for w in worst), reverse=True)
        assert worst[0]["spread"] == rs["max_spread"]
        a, b = worst[0]["absmax"]
        assert worst[0]["spread"] == pytest.approx(abs(a - b) / max(a, b), abs=2e-4)


def test_absmax_is_the_halves_real_maximum(onnx_path, calib512):
    """The reported ranges are the max |activation| of the even rows and of the odd rows."""
    import onnxruntime as ort

    diag = _diag(onnx_path, calib512, batch=50)  # batches that do not divide the halves
    model = onnx.load(str(onnx_path))
    model.graph.output.extend(onnx.helper.make_tensor_value_info(n, onnx.TensorProto.FLOAT, None)
                              for n in _activation_names(onnx_path) if n != "logits")
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    even, odd = (dict(zip(names, session.run(None, {"input": h}))) for h in (calib512.x[0::2], calib512.x[1::2]))
    for w in diag["range_spread"]["worst"]:
        name = w["tensor"]
        assert w["absmax"] == [round(float(np.abs(even[name]).max()), 4), round(float(np.abs(odd[name]).max()), 4)]


def test_percentile_streams_exactly():
    rng = np.random.default_rng(0)
    data = (rng.standard_normal((300, 8, 16, 16)) * rng.uniform(0.5, 3, (300, 1, 1, 1))).astype(np.float32)
    r = _Range()
    for start in range(0, 300, 64):
        r.add(data[start:start + 64], 300, len(data[start:start + 64]))
    assert r.absmax == float(np.abs(data).max())
    assert r.top.size < data.size // 100  # kept only the tail, not the tensor
    assert r.percentile() == pytest.approx(float(np.percentile(np.abs(data), PERCENTILE)), rel=1e-6)


def test_tensor_cap_keeps_graph_order(onnx_path, calib512):
    rs = _diag(onnx_path, calib512, max_tensors=2)["range_spread"]
    assert rs["tensors"] == 2 and rs["skipped_tensors"] == 3
    assert {w["tensor"] for w in rs["worst"]} == set(_activation_names(onnx_path)[:2])
    assert any("3 more left out" in line for line in describe_diagnostics({"range_spread": rs}))


def test_fixed_batch_models_are_padded(tmp_path, onnx_path, calib512):
    """A model exported with a fixed batch of 8 gives the same ranges as the dynamic one."""
    import torch

    fixed = tmp_path / "fixed.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(tiny_net(), torch.zeros(8, 3, 32, 32), str(fixed), dynamo=False, input_names=["input"],
                          output_names=["logits"], opset_version=17)
    x, labels = calib512.x[:46], calib512.labels[:46]  # halves of 23: the last batch is padded
    got = calibration_diagnostics(fixed, x, labels, calib512.class_names)["range_spread"]
    want = calibration_diagnostics(onnx_path, x, labels, calib512.class_names)["range_spread"]
    assert got["halves"] == [23, 23]
    assert got["worst"] == want["worst"]


def test_fewer_than_two_images(onnx_path, calib512):
    diag = calibration_diagnostics(onnx_path, calib512.x[:1], calib512.labels[:1], calib512.class_names)
    assert diag["range_spread"] == {"skipped": "fewer than 2 calibration images"}
    assert diag["images"] == 1 and diag["coverage"]["covered"] == 1
    assert describe_diagnostics(diag)[1] == "activation range spread not measured: fewer than 2 calibration images"


def test_output_is_strict_json_even_with_nan_inputs(onnx_path, calib512):
    x = calib512.x[:32].copy()
    x[3] = np.nan  # one odd row: every tensor of the odd half is NaN
    for diag in (_diag(onnx_path, calib512), calibration_diagnostics(onnx_path, x, None, [])):
        assert json.loads(json.dumps(diag, allow_nan=False)) == diag
    rs = calibration_diagnostics(onnx_path, x, None, [])["range_spread"]
    assert rs["nonfinite_tensors"] == 5 and rs["tensors"] == 0 and rs["verdict"] == VERDICT_NONFINITE


def test_user_model_is_only_read(onnx_path, calib512):
    before = _sha256(onnx_path)
    listing = sorted(p.name for p in onnx_path.parent.iterdir())
    mtime = onnx_path.stat().st_mtime_ns
    _diag(onnx_path, calib512)
    assert _sha256(onnx_path) == before
    assert onnx_path.stat().st_mtime_ns == mtime
    assert sorted(p.name for p in onnx_path.parent.iterdir()) == listing
    assert len(onnx.load(str(onnx_path)).graph.output) == 1


def test_inspect_prints_diagnostics(tmp_path, calib512):
    art = export_artifact(tmp_path / "art", tiny_net(), "tiny", precision="int8")
    manifest = Manifest.read(art)
    diag = _diag(art / ONNX_NAME, calib512)
    manifest.calibration = read_record(CalibrationRecord, {**calib512.summary(), "diagnostics": diag})
    manifest.write(art)
    result = CliRunner().invoke(cli, ["inspect", str(art)])
    assert result.exit_code == 0, result.output
    lines = describe_diagnostics(diag)
    assert len(lines) == 2 and "(256 + 256 images)" in lines[1] and lines[1].endswith(": ok")
    shown = [row.split(None, 2)[-1] for row in result.output.splitlines() if row.startswith("calibration check ")]
    assert shown == lines
    # A block from another version is shown, never fatal.
    manifest.calibration = dataclasses.replace(
        manifest.calibration, diagnostics={"coverage": {"classes": 10}, "range_spread": {"median_spread": "x"}})
    manifest.write(art)
    result = CliRunner().invoke(cli, ["inspect", str(art)])
    assert result.exit_code == 0, result.output
    assert '"median_spread": "x"' in result.output
