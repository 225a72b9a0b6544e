"""`trtinfer build` end to end on real checkpoints and the real CIFAR rows."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from builders_util import make_model, save
from trtinfer.cli import main
from trtinfer.manifest import SCHEMA_VERSION, Manifest

FAMILIES_846 = [  # six families, checked on all 846 shared test rows
    ("resnet18", True, None), ("mobilenet_v2", False, 32), ("efficientnet_b0", False, 32),
    ("densenet121", False, 32), ("shufflenet_v2_x1_0", False, 32), ("regnet_y_400mf", False, 32),
]


def run_cli(args: list[str], capsys) -> tuple[int, str, str]:
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def r18_ckpt(tmp_path_factory):
    path = tmp_path_factory.mktemp("ckpt") / "resnet18.pth"
    return save(make_model("resnet18", 10, cifar_stem=True), path, "model_state_dict")


@pytest.mark.parametrize("arch,cifar,size", FAMILIES_846, ids=[f[0] for f in FAMILIES_846])
def test_onnx_matches_pytorch_on_846_rows(tmp_path, capsys, cifar_root, arch, cifar, size):
    ckpt = save(make_model(arch, 10, cifar), tmp_path / f"{arch}.pth")
    args = ["build", ckpt, "-o", tmp_path / "out", "--eval-data", cifar_root, "-q"]
    if size:
        args += ["--input-size", size]
    code, out, err = run_cli(args, capsys)
    assert code == 0, err
    art = tmp_path / "out" / f"{arch}-fp32"
    m = Manifest.read(art)
    ev = m.validation.eval
    assert ev is not None and ev.samples == 846
    assert ev.top1_agreement == 1.0
    assert ev.max_abs_diff is not None and ev.max_abs_diff < 1e-3
    assert m.arch == arch and m.num_classes == 10 and m.variant.cifar_stem == cifar
    m.verify_files(art)


def test_artifact_contract(tmp_path, capsys, r18_ckpt):
    code, out, err = run_cli(["build", r18_ckpt, "-o", tmp_path, "--labels", "cifar10", "--normalize", "cifar10"], capsys)
    assert code == 0, err
    art = Path(out.strip().splitlines()[-1])
    assert art == (tmp_path / "resnet18-fp32").resolve()
    assert sorted(p.name for p in art.iterdir()) == ["manifest.json", "model.onnx"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")], "staging directories left behind"
    data = json.loads((art / "manifest.json").read_text())
    assert data["schema_version"] == SCHEMA_VERSION == 4 and data["target"] == "cpu" and data["engine"] is None  # no plan
    assert data["input"] == {"name": "input", "shape": [-1, 3, 32, 32], "dtype": "float32"}
    assert data["output"]["name"] == "logits" and data["output"]["shape"] == [-1, 10]
    assert data["preprocess"]["input_size"] == 32 and data["preprocess"]["normalize"] == "cifar10"
    assert data["labels"][0] == "airplane" and data["precision"] == "fp32"
    assert data["source"]["checkpoint"]["format"] == "dict[model_state_dict]"
    assert len(data["source"]["checkpoint"]["sha256"]) == 64
    assert data["files"]["model.onnx"]["sha256"] and data["versions"]["torch"]
    assert data["validation"]["random"]["passed"] is True
    assert "stopping after the ONNX stage" in err
    model = onnx.load(str(art / "model.onnx"))
    assert model.opset_import[0].version >= 17
    assert model.graph.input[0].type.tensor_type.shape.dim[0].dim_param  # dynamic batch
    # the ONNX model runs at any batch size
    import onnxruntime as ort
    sess = ort.InferenceSession(str(art / "model.onnx"), providers=["CPUExecutionProvider"])
    for n in (1, 5):
        assert sess.run(None, {"input": np.zeros((n, 3, 32, 32), np.float32)})[0].shape == (n, 10)
    # inspect prints it
    code, out, _ = run_cli(["inspect", art, "--verify"], capsys)
    assert code == 0 and "resnet18 (CIFAR stem)" in out and "sizes and sha256 match" in out


def test_existing_output_needs_force(tmp_path, capsys, r18_ckpt):
    assert run_cli(["build", r18_ckpt, "-o", tmp_path, "-q"], capsys)[0] == 0
    before = (tmp_path / "resnet18-fp32" / "manifest.json").read_bytes()
    code, _, err = run_cli(["build", r18_ckpt, "-o", tmp_path, "-q"], capsys)
    assert code == 1 and "already exists" in err and "--force" in err
    assert (tmp_path / "resnet18-fp32" / "manifest.json").read_bytes() == before
    assert run_cli(["build", r18_ckpt, "-o", tmp_path, "-q", "--force", "--name", "resnet18"], capsys)[0] == 0


def test_preprocessing_and_labels_options(tmp_path, capsys):
    ckpt = save(make_model("mobilenet_v3_small", 3), tmp_path / "mnv3.pth")
    labels = tmp_path / "labels.txt"
    labels.write_text("cat\ndog\nbird\n")
    code, _, err = run_cli(["build", ckpt, "-o", tmp_path / "o", "--input-size", "64", "--resize", "72",
                            "--mean", "0.5,0.5,0.5", "--std", "0.25,0.25,0.25", "--labels", labels, "-q"], capsys)
    assert code == 0, err
    m = Manifest.read(tmp_path / "o" / "mnv3-fp32")
    assert m.labels == ["cat", "dog", "bird"]
    assert (m.preprocess.input_size, m.preprocess.resize) == (64, 72)
    assert m.preprocess.mean == [0.5] * 3 and m.preprocess.std == [0.25] * 3
    assert m.input.shape == [-1, 3, 64, 64]


def _fails_cleanly(tmp_path, capsys, args, pattern):
    out_dir = tmp_path / "out"
    code, out, err = run_cli(["build", *args, "-o", out_dir, "-q"], capsys)
    assert code == 1
    lines = [line for line in err.strip().splitlines() if line.startswith("error:")]
    assert len(lines) == 1, err
    assert pattern in lines[0], lines[0]
    assert not out_dir.exists() or not any(out_dir.iterdir()), "partial output written"
    return lines[0]


def test_error_missing_file(tmp_path, capsys):
    _fails_cleanly(tmp_path, capsys, [tmp_path / "missing.pth"], "checkpoint not found")


def test_error_not_a_checkpoint(tmp_path, capsys):
    bad = tmp_path / "bad.pth"
    bad.write_bytes(os.urandom(2048))
    _fails_cleanly(tmp_path, capsys, [bad], "not a PyTorch checkpoint")


def test_error_truncated(tmp_path, capsys, r18_ckpt):
    cut = tmp_path / "cut.pth"
    cut.write_bytes(r18_ckpt.read_bytes()[:100_000])
    _fails_cleanly(tmp_path, capsys, [cut], "truncated or corrupt")


def test_error_unknown_architecture(tmp_path, capsys):
    path = tmp_path / "custom.pth"
    torch.save({"backbone.weight": torch.zeros(8, 3, 3, 3), "head.weight": torch.zeros(10, 8)}, path)
    _fails_cleanly(tmp_path, capsys, [path], "could not recognise the architecture")


def test_error_arch_does_not_fit(tmp_path, capsys, r18_ckpt):
    line = _fails_cleanly(tmp_path, capsys, [r18_ckpt, "--arch", "mobilenet_v2"], "does not fit --arch mobilenet_v2")
    assert "missing" in line or "unexpected" in line


def test_error_full_pickle_without_trust(tmp_path, capsys):
    path = save(make_model("resnet18", 10, True), tmp_path / "full.pth", "module")
    _fails_cleanly(tmp_path, capsys, [path], "--trust-checkpoint")
    code, _, err = run_cli(["build", path, "--trust-checkpoint", "-o", tmp_path / "ok", "-q"], capsys)
    assert code == 0, err


def test_error_bad_eval_data(tmp_path, capsys, r18_ckpt):
    _fails_cleanly(tmp_path, capsys, [r18_ckpt, "--eval-data", tmp_path / "nothing"], "nothing")


def test_require_engine_fails_without_tensorrt(tmp_path, capsys, r18_ckpt):
    _fails_cleanly(tmp_path, capsys, [r18_ckpt, "--require-engine"], "engine stage cannot run here")


def test_subprocess_exit_code_and_one_line(tmp_path):
    exe = Path(sys.executable).with_name("trtinfer")
    proc = subprocess.run([str(exe), "build", str(tmp_path / "none.pth")], capture_output=True, text=True)
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert lines[-1].startswith("error: checkpoint not found")
    assert sum(line.startswith("error:") for line in lines) == 1 and "Traceback" not in proc.stderr


def test_cli_defaults_are_the_library_defaults():
    """Each default is said once (trtinfer.defaults): the options of ``build`` and ``calib make`` show the
    values BuildOptions, the export, the accuracy guard and make_calibration_set fall back to."""
    import dataclasses
    import inspect

    from trtinfer import defaults
    from trtinfer.builders.checks.accuracy_guard import DEFAULT_MAX_DROP
    from trtinfer.builders.export.onnx_export import export_onnx
    from trtinfer.builders.options import BuildOptions
    from trtinfer.calibration.calibset import make_calibration_set
    from trtinfer.commands.build import build
    from trtinfer.commands.calib import make

    fields = {f.name: f.default for f in dataclasses.fields(BuildOptions)}
    parsed = build.make_context("build", ["model.pth"]).params  # every option left out: its default
    shown = {name: value for name, value in parsed.items()
             if name in fields and name not in ("checkpoint", "fp16_exclude")}
    assert shown.keys() >= {"out_dir", "atol", "rtol", "opset", "calib_samples", "seed", "quantizer", "fallback"}
    assert shown == {name: fields[name] for name in shown}
    assert inspect.signature(export_onnx).parameters["opset"].default == defaults.OPSET
    assert (DEFAULT_MAX_DROP["fp16"], DEFAULT_MAX_DROP["int8"]) == (defaults.FP16_MAX_DROP, defaults.INT8_MAX_DROP)
    calib = make.make_context("make", ["--data", "d", "--input-size", "32", "-o", "c.npz"]).params
    draw = inspect.signature(make_calibration_set).parameters
    assert calib["samples"] == draw["samples"].default == defaults.CALIB_SAMPLES
    assert calib["seed"] == draw["seed"].default == defaults.SEED
