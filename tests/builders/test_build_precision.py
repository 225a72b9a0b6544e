"""`trtinfer build --fp16/--int8` end to end on a briefly trained model and the real CIFAR rows."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from trtinfer.cli import main
from trtinfer.manifest import Manifest

pytest_plugins = ["conftest_trained"]


def run_cli(args, capsys):
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def ckpt(trained_model, tmp_path_factory):
    path = tmp_path_factory.mktemp("ckpt") / "resnet18.pth"
    shutil.copyfile(trained_model.state_path, path)
    return path


def _common(trained_model):
    return ["--input-size", trained_model.input_size, "--normalize", "cifar10", "--labels", "cifar10", "-q"]


def test_fp32_fp16_int8_in_one_call(tmp_path, capsys, ckpt, cifar_root, trained_model):
    code, out, err = run_cli(["build", ckpt, "--precision", "fp32,fp16,int8", "--calib-data", cifar_root,
                              "--eval-data", cifar_root, "--qat", "auto", "-o", tmp_path, *_common(trained_model)],
                             capsys)
    assert code == 0, err
    arts = {p: Manifest.read(tmp_path / f"resnet18-{p}") for p in ("fp32", "fp16", "int8")}
    fp16, int8 = arts["fp16"].accuracy, arts["int8"].accuracy
    assert fp16.checked and fp16.samples == 846 and fp16.passed
    assert fp16.top1_agreement >= 0.995
    assert int8.top1_drop_points <= 0.5 and int8.passed and int8.execution == "openvino"
    assert arts["fp32"].accuracy.top1 == pytest.approx(fp16.top1_reference)
    assert arts["fp32"].accuracy.top1 > 0.3  # trained, not chance
    assert arts["int8"].calibration.count == 512 and arts["int8"].calibration.split == "train"
    # CPU target here: NNCF, each of its methods tried on held-out train rows, the kept one recorded
    calib = arts["int8"].calibration
    assert arts["int8"].target == "cpu" and arts["int8"].conversion.tool == "nncf"
    choice = calib.choice
    assert [m.method for m in choice.methods] == ["performance", "mixed", "mean_minmax"]
    assert calib.method == choice.method in ("performance", "mixed", "mean_minmax")
    assert choice.slice.rows == 2000 and choice.slice.held_out_of_calibration
    assert calib.diagnostics["coverage"]["covered"] == 10
    assert arts["int8"].conversion.quantize_linear > 0
    # --qat auto leaves a model that passed post-training INT8 on the slice untouched, and says so
    assert not calib.qat.ran and "met the allowance on the selection slice" in calib.qat.reason
    assert not (tmp_path / "resnet18-int8" / "qat_curves.png").exists() and set(arts["int8"].files) == {"model.onnx"}
    # every CPU execution was measured on the eval rows; the guard's is the OpenVINO one
    executions = int8.executions
    assert executions["openvino"].top1 == pytest.approx(int8.top1)
    assert {"onnxruntime", "openvino"} <= set(executions)
    # the NNCF artifact runs on OpenVINO and gives the accuracy the manifest records
    import trtinfer
    from trtinfer.calibration.calibset import make_eval_set

    ev = make_eval_set(cifar_root, arts["int8"].preprocess, labels=arts["int8"].labels)
    with trtinfer.load(tmp_path / "resnet18-int8", backend="openvino") as model:
        top1 = float((model.infer(ev.x).argmax(1) == ev.labels).mean())
    assert top1 == pytest.approx(int8.top1, abs=1e-6)
    code, out, err = run_cli(["inspect", tmp_path / "resnet18-int8"], capsys)
    assert code == 0, err
    assert f"kept {calib.method}" in out and "execution" in out and "openvino: top-1" in out
    assert "calibration covers 10/10 classes" in out and "(target cpu)" in out
    assert arts["fp16"].conversion.nodes_fp16 > 0
    # every CPU artifact compiles in OpenVINO's own tools with their defaults (bf16 on CPUs that have it)
    from openvino_defaults import openvino_compile_failures

    for p in arts:
        assert openvino_compile_failures(tmp_path / f"resnet18-{p}" / "model.onnx") == {}, p
    for p, m in arts.items():
        assert m.precision == p
        m.verify_files(tmp_path / f"resnet18-{p}")
    # the three share one export: same validation record
    assert arts["fp16"].validation.random == arts["fp32"].validation.random


def _negated_logits(onnx_path) -> None:
    """Append Neg to the graph's output: every top-1 becomes the least likely class."""
    import onnx
    from onnx import helper

    model = onnx.load(str(onnx_path))
    output = model.graph.output[0].name
    for node in model.graph.node:
        node.output[:] = [f"{name}_before_neg" if name == output else name for name in node.output]
    model.graph.node.append(helper.make_node("Neg", [f"{output}_before_neg"], [output], name="test_negate"))
    onnx.save(model, str(onnx_path))


def test_guard_failure_writes_nothing_unless_allowed(tmp_path, capsys, ckpt, cifar_root, trained_model, monkeypatch):
    """A quantizer that breaks the model on purpose (the real ModelOpt run, then its logits negated) fails
    the guard on every CPU: the test is about what a failed guard writes, not about how far some
    calibration's rounding happens to move top-1 here (16 black calibration images cost 0 points on one
    thread and several on two). The one method given is judged on 200 held-out rows, not the build's 2,000
    (ONNX Runtime runs ModelOpt's Q/DQ graph slowly: most of this test's time, twice): the slice takes no
    part in the guard, which is what this test is about (the 2,000-row slice: test_fp32_fp16_int8_in_one_call)."""
    import dataclasses

    from trtinfer.builders.precision import conversion, registry, tools  # noqa: F401 -- tools registers ModelOpt's

    monkeypatch.setattr(conversion, "SELECTION_SAMPLES", 200)
    real = registry.TOOLS["modelopt-int8"]

    def broken(onnx_in, onnx_out, calibration=None, **options):
        facts = real.run(onnx_in, onnx_out, calibration=calibration, **options)
        _negated_logits(onnx_out)
        return facts

    monkeypatch.setitem(registry.TOOLS, "modelopt-int8", dataclasses.replace(real, run=broken))
    args = ["build", ckpt, "--precision", "int8", "--calib-data", cifar_root, "--calib-samples", "16",
            "--calib-method", "max", "--no-fallback", "--eval-data", cifar_root, "--eval-samples", "400",
            "-o", tmp_path / "out", "--quantizer", "modelopt", "--target", "gpu", *_common(trained_model)]
    code, _, err = run_cli(args, capsys)
    assert code == 1
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "drop" in errors[0] and "--allow-accuracy-drop" in errors[0]
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())
    code, _, err = run_cli([*args, "--allow-accuracy-drop"], capsys)
    assert code == 0, err
    manifest = Manifest.read(tmp_path / "out" / "resnet18-int8")
    acc = manifest.accuracy
    assert acc.passed is False and acc.allowed is True and acc.samples == 400
    assert manifest.calibration.choice.slice.rows == 200
    assert acc.top1_drop_points > 10  # the negated logits, not rounding


def test_int8_needs_calibration_data(tmp_path, capsys, ckpt, trained_model):
    code, _, err = run_cli(["build", ckpt, "--int8", "-o", tmp_path, *_common(trained_model)], capsys)
    assert code == 1 and "--calib-data" in err
    assert not any(tmp_path.iterdir())


def test_calib_set_with_other_preprocessing_is_refused(tmp_path, capsys, ckpt, cifar_root, trained_model):
    calib = tmp_path / "calib.npz"
    code, _, err = run_cli(["calib", "make", "--data", cifar_root, "--samples", "32", "--input-size", "32",
                            "--normalize", "imagenet", "-o", calib], capsys)
    assert code == 0, err
    code, _, err = run_cli(["build", ckpt, "--int8", "--calib-set", calib, "-o", tmp_path / "o",
                            *_common(trained_model)], capsys)
    assert code == 1 and "preprocessed differently" in err
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("extra, message", [
    (["--quantizer", "nncf", "--target", "gpu"], "not for TensorRT"),
    (["--target", "cpu", "--calib-method", "entropy"], "not a method of nncf-int8"),
    (["--target", "gpu", "--calib-method", "mixed"], "not a method of modelopt-int8"),
])
def test_quantizer_options_are_checked_before_anything_runs(tmp_path, capsys, ckpt, cifar_root, trained_model,
                                                             extra, message):
    code, _, err = run_cli(["build", ckpt, "--int8", "--calib-data", cifar_root, "-o", tmp_path / "o", *extra,
                            *_common(trained_model)], capsys)
    assert code == 1 and message in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "o").exists()


def test_qat_is_refused_without_an_int8_build(tmp_path, capsys, ckpt, cifar_root, trained_model):
    code, _, err = run_cli(["build", ckpt, "--fp16", "--qat", "on", "--calib-data", cifar_root, "-o", tmp_path / "o",
                            *_common(trained_model)], capsys)
    assert code == 1 and "this build makes no INT8" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "o").exists()
