"""``trtinfer export triton`` on real FP32, FP16 and INT8 artifacts: every config.pbtxt parses into Triton's
``ModelConfig`` protobuf with the right platform, dims, types and batch size; model files match their
manifests; the OpenVINO IR computes what the artifact computes. No Triton server runs here: the configs
are checked by parsing and against Triton's documentation (docs/scale-out.md).

The ``tensorrt_plan`` path uses plan-bearing manifest stand-ins (``tests/fakes/tensorrt.py``'s
``make_plan_artifact``: a real artifact plus placeholder plan bytes and an engine record); they check
our config and file layout, not TensorRT."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from fakes.tensorrt import make_plan_artifact
from trtinfer.cli import main
from trtinfer.exporters.triton_config import OPENVINO_MAX_BATCH, TRT_EP_CACHE, TritonOptions, parse_pbtxt
from trtinfer.runtime.options import DEFAULT_CPU_MAX_BATCH
from trtinfer.exporters.triton_repo import export_triton
from trtinfer.manifest import BatchProfile, Manifest

pytest.importorskip("tritonclient.grpc")
pytest_plugins = ["conftest_trained"]


def configs(repo: Path) -> dict[str, object]:
    return {folder.name: parse_pbtxt((folder / "config.pbtxt").read_text()) for folder in sorted(repo.iterdir())}


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def snapshot(repo: Path) -> dict[str, str]:
    return {str(p.relative_to(repo)): sha256(p) if p.is_file() else "dir" for p in sorted(repo.rglob("*"))}


def test_cpu_repository_from_real_artifacts(artifacts, tmp_path, capsys):
    repo = tmp_path / "repo"
    code = main(["export", "triton", *map(str, artifacts.values()), "--repo", str(repo), "--with-preprocess"])
    assert code == 0, capsys.readouterr().err
    found = configs(repo)
    assert sorted(found) == sorted(f"resnet-{p}{s}" for p in artifacts for s in ("", "_preprocess", "_image"))
    for precision, artifact in artifacts.items():
        manifest = Manifest.read(artifact)
        name = f"resnet-{precision}"
        config = found[name]
        assert config.name == name
        if precision == "fp32":  # ONNX Runtime's CPU provider for FP32
            assert config.platform == "onnxruntime_onnx" and not config.backend
            assert config.max_batch_size == DEFAULT_CPU_MAX_BATCH
            assert sha256(repo / name / "1" / "model.onnx") == manifest.files["model.onnx"]["sha256"]
        else:  # OpenVINO runs FP16 / INT8 on CPUs (ONNX Runtime's CPU provider runs Q/DQ slower than FP32)
            assert config.backend == "openvino" and not config.platform
            assert {p.name for p in (repo / name / "1").iterdir()} == {"model.xml", "model.bin"}
            # its backend fixes the batch at max_batch_size: smaller batches need padding, kept small
            assert config.max_batch_size == OPENVINO_MAX_BATCH
            assert config.parameters["ENABLE_BATCH_PADDING"].string_value == "YES"
            assert config.parameters["NUM_STREAMS"].string_value == "1"
        [inp], [out] = config.input, config.output
        assert (inp.name, list(inp.dims), inp.data_type) == ("input", [3, 32, 32], 11)  # TYPE_FP32 = 11
        assert (out.name, list(out.dims), out.data_type) == ("logits", [10], 11)
        assert out.label_filename == "labels.txt"
        assert (repo / name / "labels.txt").read_text().splitlines() == manifest.labels
        assert [g.kind for g in config.instance_group] == [2]  # KIND_CPU
        assert list(config.dynamic_batching.preferred_batch_size) == [config.max_batch_size]
        assert config.dynamic_batching.max_queue_delay_microseconds == 2000
        assert config.parameters["precision"].string_value == precision
        assert {w.batch_size for w in config.model_warmup} == {1, config.max_batch_size}

        pre, ens = found[name + "_preprocess"], found[name + "_image"]
        assert pre.backend == "python" and pre.max_batch_size == config.max_batch_size
        assert (pre.input[0].name, pre.input[0].data_type, list(pre.input[0].dims)) == ("image", 13, [1])  # STRING
        assert (pre.output[0].name, list(pre.output[0].dims)) == ("input", [3, 32, 32])
        assert json.loads(pre.parameters["preprocess"].string_value)["mean"] == manifest.preprocess.mean
        assert ens.platform == "ensemble" and ens.max_batch_size == config.max_batch_size
        assert (ens.input[0].name, ens.input[0].data_type, list(ens.input[0].dims)) == ("image", 13, [1])
        assert ens.output[0].label_filename == "labels.txt" and (repo / ens.name / "1").is_dir()
        steps = ens.ensemble_scheduling.step
        assert [s.model_name for s in steps] == [pre.name, name]
        assert steps[0].output_map["input"] == steps[1].input_map["input"]  # the tensor between the steps
        assert steps[1].output_map["logits"] == "logits"
    assert not [p for p in repo.iterdir() if p.name.startswith(".")]  # no staging left behind


def test_openvino_ir_computes_what_the_artifact_computes(artifacts, tmp_path, cifar_dir):
    """The IR converted for Triton's OpenVINO backend computes what the artifact's ONNX computes, both run by
    OpenVINO with the same settings on 256 real CIFAR rows: the conversion is judged on its own, apart from
    how two runtimes' INT8 kernels round (ONNX Runtime against OpenVINO differed on 4 of 64 rows held to
    AVX2, where neither has VNNI)."""
    import openvino as ov

    from trtinfer.calibration.cifar import load_cifar
    from trtinfer.preprocess import preprocess

    repo = tmp_path / "repo"
    export_triton([artifacts["int8"], artifacts["fp16"]], repo, TritonOptions(kind="cpu"))
    images = load_cifar(cifar_dir, "test").images[:256]
    core = ov.Core()
    for precision in ("int8", "fp16"):
        manifest = Manifest.read(artifacts[precision])
        x = preprocess(images, manifest.preprocess)
        config = {"INFERENCE_PRECISION_HINT": "f32"}
        expected = core.compile_model(str(artifacts[precision] / "model.onnx"), "CPU", config)(x)[0]
        got = core.compile_model(str(repo / f"resnet-{precision}" / "1" / "model.xml"), "CPU", config)(x)[0]
        diff, scale = np.abs(got - expected), np.abs(expected).max()
        # the same computation: nearly every logit equal to float32 rounding; an INT8 activation that lands on a
        # rounding boundary may take the next step in one graph and not the other (0.07 of 6.7 seen on 1 logit)
        assert np.median(diff) <= 1e-5 * scale, precision
        assert (got.argmax(1) == expected.argmax(1)).mean() >= 0.99 and diff.max() <= 0.05 * scale, precision


def test_max_batch_size_and_instances_are_the_users(artifacts, tmp_path):
    repo = tmp_path / "repo"
    export_triton([artifacts["int8"]], repo, TritonOptions(max_batch_size=32, instances=4, with_preprocess=True))
    found = configs(repo)
    config = found["resnet-int8"]
    assert config.max_batch_size == found["resnet-int8_image"].max_batch_size == 32
    assert list(config.dynamic_batching.preferred_batch_size) == [32]
    assert [(g.kind, g.count) for g in config.instance_group] == [(2, 4)]
    assert config.parameters["NUM_STREAMS"].string_value == "4" and "PERFORMANCE_HINT" not in config.parameters


def test_gpu_nodes_without_a_plan_get_onnx_runtime_with_tensorrt(artifacts, tmp_path):
    repo = tmp_path / "repo"
    export_triton(list(artifacts.values()), repo, TritonOptions(kind="gpu", max_batch_size=64, instances=2))
    for precision, mode in (("fp32", "FP32"), ("fp16", "FP16"), ("int8", "INT8")):
        config = configs(repo)[f"resnet-{precision}"]
        assert config.platform == "onnxruntime_onnx" and config.max_batch_size == 64
        assert [(g.kind, g.count) for g in config.instance_group] == [(1, 2)]  # KIND_GPU
        [accelerator] = config.optimization.execution_accelerators.gpu_execution_accelerator
        assert accelerator.name == "tensorrt"
        assert accelerator.parameters["precision_mode"] == mode
        assert accelerator.parameters["trt_engine_cache_enable"] == "1"
        assert accelerator.parameters["trt_engine_cache_path"] == TRT_EP_CACHE
        assert [accelerator.parameters[f"trt_profile_{k}_shapes"] for k in ("min", "opt", "max")] == \
            ["input:1x3x32x32", "input:64x3x32x32", "input:64x3x32x32"]
        assert (repo / f"resnet-{precision}" / "1" / "model.onnx").is_file()


@pytest.fixture
def plans(artifacts, tmp_path):
    """Plan-bearing stand-ins of the FP16 artifact for two GPU kinds (placeholder plan bytes)."""
    src = artifacts["fp16"]
    return {
        "8.0": make_plan_artifact(src, tmp_path / "sm80", [BatchProfile(1, 8, 16), BatchProfile(17, 64, 128)],
                                  compute_capability="8.0", plan=b"plan for sm80"),
        "9.0": make_plan_artifact(src, tmp_path / "sm90", [BatchProfile(1, 32, 256)], compute_capability="9.0",
                                  plan=b"plan for sm90"),
    }


def test_a_plan_goes_to_tensorrt_plan(plans, tmp_path):
    repo = tmp_path / "repo"
    export_triton([plans["8.0"]], repo, TritonOptions(with_preprocess=True))
    found = configs(repo)
    config = found["resnet-fp16"]
    assert config.platform == "tensorrt_plan" and config.max_batch_size == 128  # the largest profile maximum
    assert list(config.dynamic_batching.preferred_batch_size) == [8, 64]  # the profiles' OPT sizes
    assert [g.kind for g in config.instance_group] == [1]  # KIND_GPU
    assert not config.cc_model_filenames and not config.optimization.execution_accelerators.gpu_execution_accelerator
    assert (repo / "resnet-fp16" / "1" / "model.plan").read_bytes() == b"plan for sm80"
    assert found["resnet-fp16_image"].max_batch_size == found["resnet-fp16_preprocess"].max_batch_size == 128


def test_plans_for_several_gpu_kinds_become_one_model(plans, tmp_path):
    repo = tmp_path / "repo"
    export_triton(list(plans.values()), repo, TritonOptions())
    config = configs(repo)["resnet-fp16"]
    assert dict(config.cc_model_filenames) == {"8.0": "model_sm80.plan", "9.0": "model_sm90.plan"}
    assert config.max_batch_size == 128  # every GPU kind's plan must take any batch Triton forms
    assert (repo / "resnet-fp16" / "1" / "model_sm80.plan").read_bytes() == b"plan for sm80"
    assert (repo / "resnet-fp16" / "1" / "model_sm90.plan").read_bytes() == b"plan for sm90"


def test_plan_groups_that_cannot_be_one_model_are_refused(plans, artifacts, tmp_path, capsys):
    from trtinfer.errors import TrtInferError

    other = make_plan_artifact(artifacts["fp16"], tmp_path / "sm90b", [BatchProfile(1, 8, 8)],
                               compute_capability="9.0", trt_version="11.1.0.1")
    cases = {
        "compute capability 9.0": [plans["8.0"], plans["9.0"], other],
        "TensorRT": [plans["8.0"], other],
        "only plan-bearing artifacts": [plans["8.0"], artifacts["fp16"]],
        "takes one model file": [plans["8.0"], plans["9.0"]],
    }
    for problem, group in cases.items():
        options = TritonOptions(kind="cpu") if problem == "takes one model file" else TritonOptions()
        with pytest.raises(TrtInferError, match=problem):
            export_triton(group, tmp_path / "repo", options)
        assert not (tmp_path / "repo").exists() or not any((tmp_path / "repo").iterdir())


def test_existing_models_need_force_and_others_are_never_touched(artifacts, tmp_path, capsys):
    repo = tmp_path / "repo"
    (repo / "someone-else" / "1").mkdir(parents=True)
    (repo / "someone-else" / "config.pbtxt").write_text('name: "someone-else"\n')
    export_triton([artifacts["fp32"]], repo, TritonOptions())
    before = snapshot(repo)
    assert main(["export", "triton", str(artifacts["fp32"]), "--repo", str(repo), "--instances", "3"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "already exists" in err and "--force" in err
    assert snapshot(repo) == before
    assert main(["export", "triton", str(artifacts["fp32"]), "--repo", str(repo), "--instances", "3", "--force"]) == 0
    assert configs(repo)["resnet-fp32"].instance_group[0].count == 3
    assert (repo / "someone-else" / "config.pbtxt").read_text() == 'name: "someone-else"\n'


def test_a_failure_midway_leaves_the_repository_as_it_was(artifacts, tmp_path, monkeypatch):
    from trtinfer.exporters import triton_repo

    repo = tmp_path / "repo"
    export_triton([artifacts["fp32"]], repo, TritonOptions())
    before = snapshot(repo)

    def broken(onnx, xml):
        xml.parent.mkdir(parents=True, exist_ok=True)
        xml.write_text("half written")
        raise OSError("disk full")

    monkeypatch.setattr(triton_repo, "_write_openvino_ir", broken)
    with pytest.raises(OSError, match="disk full"):
        export_triton([artifacts["fp32"], artifacts["int8"]], repo, TritonOptions(force=True, with_preprocess=True))
    assert snapshot(repo) == before and sorted(p.name for p in repo.iterdir()) == ["resnet-fp32"]


def test_tampered_or_bad_artifacts_are_refused_before_anything_is_written(artifacts, tmp_path, capsys):
    tampered = tmp_path / "tampered"
    shutil.copytree(artifacts["fp32"], tampered)
    with (tampered / "model.onnx").open("r+b") as f:
        f.seek(100)
        f.write(b"\x00\x01\x02\x03")
    newline = tmp_path / "newline"
    shutil.copytree(artifacts["fp32"], newline)
    manifest = Manifest.read(newline)
    manifest.name, manifest.labels[0] = "newline", "air\nplane"
    manifest.write(newline)
    odd = tmp_path / "odd"
    shutil.copytree(artifacts["fp32"], odd)
    manifest = Manifest.read(odd)
    manifest.name = "../escape"
    manifest.write(odd)
    repo = tmp_path / "repo"
    for artifact, problem in ((tampered, "does not match its sha256"), (tmp_path / "missing", "not found"),
                              (newline, "line break"), (odd, "not a plain folder name")):
        assert main(["export", "triton", str(artifact), "--repo", str(repo)]) == 1
        err = capsys.readouterr().err
        assert err.startswith("error: ") and err.count("\n") == 1 and problem in err, err
        assert not repo.exists() or not any(repo.iterdir())
    assert not (tmp_path / "escape").exists()


def test_repo_that_is_a_file_is_one_line(artifacts, tmp_path, capsys):
    (tmp_path / "file").write_text("x")
    assert main(["export", "triton", str(artifacts["fp32"]), "--repo", str(tmp_path / "file")]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--repo" in err and "is a file" in err


def test_a_python_environment_is_copied_into_the_preprocessing_model(artifacts, tmp_path, capsys):
    env = tmp_path / "pillow-env.tar.gz"
    env.write_bytes(b"conda-pack archive stand-in")
    repo = tmp_path / "repo"
    assert main(["export", "triton", str(artifacts["fp32"]), "--repo", str(repo), "--with-preprocess",
                 "--python-env", str(env)]) == 0
    config = configs(repo)["resnet-fp32_preprocess"]
    # the Python backend resolves $$TRITON_MODEL_DIRECTORY and refuses paths that leave the model folder
    assert config.parameters["EXECUTION_ENV_PATH"].string_value == "$$TRITON_MODEL_DIRECTORY/pillow-env.tar.gz"
    assert (repo / "resnet-fp32_preprocess" / "pillow-env.tar.gz").read_bytes() == env.read_bytes()
    capsys.readouterr()
    assert main(["export", "triton", str(artifacts["fp32"]), "--repo", str(tmp_path / "other"), "--with-preprocess",
                 "--python-env", str(tmp_path / "missing.tar.gz")]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--python-env" in err and "not found" in err
    assert not (tmp_path / "other").exists()
