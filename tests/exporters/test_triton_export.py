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
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from fakes.tensorrt import make_plan_artifact
from trtinfer.cli import main
from trtinfer.exporters.triton_config import DEFAULT_ENGINE_CACHE_DIR, TritonOptions, parse_pbtxt
from trtinfer.runtime.options import DEFAULT_CPU_MAX_BATCH
from trtinfer.atomic import MAX_JOURNAL_BYTES
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
        # ONNX Runtime on every precision; FP16/INT8 through its OpenVINO execution accelerator, never the
        # OpenVINO backend's batch padding (issue 27)
        assert config.platform == "onnxruntime_onnx" and not config.backend
        assert config.max_batch_size == DEFAULT_CPU_MAX_BATCH and "ENABLE_BATCH_PADDING" not in config.parameters
        assert sha256(repo / name / "1" / "model.onnx") == manifest.files["model.onnx"].sha256
        accelerators = [a.name for a in config.optimization.execution_accelerators.cpu_execution_accelerator]
        assert accelerators == ([] if precision == "fp32" else ["openvino"])
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
    export_triton([artifacts["int8"], artifacts["fp16"]], repo, TritonOptions(kind="cpu", cpu_backend="openvino"))
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
    export_triton([artifacts["int8"]], repo, TritonOptions(max_batch_size=32, instances=4, with_preprocess=True,
                                                           cpu_backend="openvino"))
    found = configs(repo)
    config = found["resnet-int8"]
    assert config.max_batch_size == found["resnet-int8_image"].max_batch_size == 32
    assert list(config.dynamic_batching.preferred_batch_size) == [32]
    assert [(g.kind, g.count) for g in config.instance_group] == [(2, 4)]
    assert config.parameters["NUM_STREAMS"].string_value == "4" and "PERFORMANCE_HINT" not in config.parameters


def gpu_target(artifact: Path, tmp_path: Path) -> Path:
    """The artifact as ``trtinfer build --target gpu`` records it (the fixtures' INT8 is ModelOpt Q/DQ)."""
    copy = tmp_path / f"{artifact.name}-gpu"
    shutil.copytree(artifact, copy)
    manifest = Manifest.read(copy)
    manifest.target = "gpu"
    manifest.write(copy)
    return copy


def test_gpu_nodes_without_a_plan_get_onnx_runtime_with_tensorrt(artifacts, tmp_path):
    repo = tmp_path / "repo"
    export_triton([gpu_target(a, tmp_path) for a in artifacts.values()], repo,
                  TritonOptions(kind="gpu", max_batch_size=64, instances=2))
    for precision, mode in (("fp32", "FP32"), ("fp16", "FP16"), ("int8", "INT8")):
        config = configs(repo)[f"resnet-{precision}"]
        assert config.platform == "onnxruntime_onnx" and config.max_batch_size == 64
        assert [(g.kind, g.count) for g in config.instance_group] == [(1, 2)]  # KIND_GPU
        [accelerator] = config.optimization.execution_accelerators.gpu_execution_accelerator
        assert accelerator.name == "tensorrt"
        assert accelerator.parameters["precision_mode"] == mode
        assert accelerator.parameters["trt_engine_cache_enable"] == "1"
        onnx_sha256 = Manifest.read(artifacts[precision]).files["model.onnx"].sha256
        assert accelerator.parameters["trt_engine_cache_path"] == f"{DEFAULT_ENGINE_CACHE_DIR}/{onnx_sha256}-b64"
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
        "9.0": make_plan_artifact(src, tmp_path / "sm90", [BatchProfile(1, 16, 32), BatchProfile(33, 64, 256)],
                                  compute_capability="9.0", plan=b"plan for sm90"),
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
    assert list(config.instance_group[0].profile) == ["0", "1"]  # every profile gets a context
    assert (repo / "resnet-fp16" / "1" / "model_sm80.plan").read_bytes() == b"plan for sm80"
    assert (repo / "resnet-fp16" / "1" / "model_sm90.plan").read_bytes() == b"plan for sm90"


def test_plan_groups_that_cannot_be_one_model_are_refused(plans, artifacts, tmp_path, capsys):
    from trtinfer.errors import TrtInferError

    other = make_plan_artifact(artifacts["fp16"], tmp_path / "sm90b", [BatchProfile(1, 8, 8), BatchProfile(9, 9, 16)],
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
        export_triton([artifacts["fp32"], artifacts["int8"]], repo,
                      TritonOptions(force=True, with_preprocess=True, cpu_backend="openvino"))
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


# --- the repository is the export's and nothing else's: journals, links and names (issue 26) ---


def _export_force(artifact: Path, repo: Path) -> int:
    return main(["export", "triton", str(artifact), "--repo", str(repo), "--kind", "gpu", "--force"])


def _one_line_error(capsys) -> str:
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "hint: " in err, err
    return err


def _planted_records(real: Path) -> dict[str, dict]:
    """Journals naming what a commit never stages or sets aside: others' models and files, outside paths."""
    model, other = str(real / "resnet-fp32"), str(real / "other_model")
    ours = {"staged": {model: str(real / ".resnet-fp32.tmp-abcd1234")},
            "backups": {model: str(real / ".resnet-fp32.old-999")}}
    return {
        "others' folder and file": {"pid": 999, "artifacts": [model], "staged": {model: str(real / "other_model")},
                                    "backups": {model: str(real / "README")}},
        "another model as the artifact": {"pid": 999, "artifacts": [other],
                                          "staged": {other: str(real / ".other_model.tmp-abcd1234")},
                                          "backups": {other: str(real / "README")}},
        "a path outside": {"pid": 999, "artifacts": [model], "staged": ours["staged"],
                           "backups": {model: str(real.parent / "outside")}},
        "a path climbing out": {"pid": 999, "artifacts": [model], "staged": {model: str(real / ".." / "outside")},
                                "backups": ours["backups"]},
        "another pid's backup": {"pid": 999, "artifacts": [model], "staged": ours["staged"],
                                 "backups": {model: str(real / ".resnet-fp32.old-1")}},
        "a pid that is not the file's": {"pid": 998, **ours, "artifacts": [model]},
        "wrong types": {"pid": 999, "artifacts": 5, "staged": [], "backups": "x"},
    }


@pytest.mark.parametrize("case", list(_planted_records(Path("/r"))))
def test_a_planted_journal_cannot_make_force_delete_anything(artifacts, tmp_path, capsys, case):
    """A journal that names anything but this repository's own staging and set-aside folders is refused in
    one line, and nothing it names is removed (a planted one made --force delete REPO/other_model and README)."""
    repo = tmp_path / "repo"
    (repo / "other_model" / "1").mkdir(parents=True)
    (repo / "README").write_text("the team's notes")
    (tmp_path / "outside").mkdir()
    (repo / ".resnet-fp32.old-1").mkdir()
    journal = repo / ".trtinfer-commit-999.json"
    journal.write_text(json.dumps(_planted_records(repo.resolve())[case]))
    before = snapshot(tmp_path)
    code = _export_force(artifacts["fp32"], repo)
    assert snapshot(tmp_path) == before
    assert code == 1
    err = _one_line_error(capsys)
    assert str(journal) in err and "not a commit journal" in err and f"rm {journal}" in err


def _fifo(path: Path) -> None:
    os.mkfifo(path)


def _huge(path: Path) -> None:
    with path.open("wb") as f:
        f.truncate(MAX_JOURNAL_BYTES + 1)


def _link_to_zero(path: Path) -> None:
    path.symlink_to("/dev/zero")


@pytest.mark.timeout(60, func_only=True)  # the fixtures train a model first
@pytest.mark.parametrize("make, problem", [
    (_fifo, "not a regular file"),
    (_link_to_zero, "symbolic link"),
    (_huge, "bound"),
    (lambda p: p.write_text('{"pid": 999, "artifacts": ['), "Expecting"),
    (lambda p: p.write_text("[" * 200_000), "recursion"),
    (lambda p: p.write_bytes(b"\xff\xfe{}"), "utf-8"),
    (lambda p: p.write_text("[1, 2]"), "pid"),
], ids=["fifo", "link-to-dev-zero", "huge", "truncated", "deeply-nested", "not-utf8", "not-a-record"])
def test_a_journal_that_is_no_file_or_no_record_is_one_line(artifacts, tmp_path, capsys, make, problem):
    """A FIFO, /dev/zero, a file past the bound or malformed JSON in a journal's place neither hangs nor
    crashes the export: one line naming the file and its removal, and the file is left where it is."""
    repo = tmp_path / "repo"
    (repo / "other_model").mkdir(parents=True)
    journal = repo / ".trtinfer-commit-999.json"
    make(journal)
    assert _export_force(artifacts["fp32"], repo) == 1
    err = _one_line_error(capsys)
    assert str(journal) in err and problem in err and f"rm {journal}" in err
    assert sorted(p.name for p in repo.iterdir()) == [journal.name, "other_model"]
    assert journal.is_symlink() or journal.exists()


def test_a_killed_exports_own_journal_is_put_right(artifacts, tmp_path, capsys):
    """A real commit SIGKILLed between setting a model's old version aside and moving the new one in: the
    next export (of another model) puts the old version back instead of deleting the only copy, and removes
    the staging folder and the journal."""
    repo = tmp_path / "repo"
    (repo / "resnet-fp32").mkdir(parents=True)
    (repo / "resnet-fp32" / "config.pbtxt").write_text("old")
    code = """
import os, signal, sys
from pathlib import Path
from trtinfer import atomic
real = os.replace
def replace_then_die(src, dst):
    real(src, dst)
    os.kill(os.getpid(), signal.SIGKILL)
atomic.os.replace = replace_then_die
staging = atomic.StagedDirectories(overwrite=True)
(staging.stage(Path(sys.argv[1]) / "resnet-fp32") / "config.pbtxt").write_text("new")
staging.commit()
"""
    proc = subprocess.run([sys.executable, "-c", code, str(repo)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    assert not (repo / "resnet-fp32").exists() and any(p.name.startswith(".trtinfer-commit-") for p in repo.iterdir())
    assert main(["export", "triton", str(artifacts["fp16"]), "--repo", str(repo), "--kind", "gpu"]) == 0
    assert (repo / "resnet-fp32" / "config.pbtxt").read_text() == "old"
    err = capsys.readouterr().err
    assert "killed while committing" in err and "resnet-fp32: old version, put back" in err
    assert sorted(p.name for p in repo.iterdir()) == ["resnet-fp16", "resnet-fp32"]


def test_a_model_folder_that_is_a_link_is_refused_and_nothing_outside_changes(artifacts, tmp_path, capsys):
    """REPO/<name> a link to a folder outside (its target was replaced) or a dangling link (the export
    wrote beside its target): refused in one line; neither the link nor anything outside changes."""
    repo, outside = tmp_path / "repo", tmp_path / "outside"
    (outside / "target").mkdir(parents=True)
    (outside / "target" / "keep").write_text("someone's model")
    repo.mkdir()
    link = repo / "resnet-fp32"
    for target in (outside / "target", outside / "nowhere" / "resnet-fp32"):
        link.unlink(missing_ok=True)
        link.symlink_to(target)
        before = snapshot(tmp_path)
        code = _export_force(artifacts["fp32"], repo)
        assert sorted(str(p.relative_to(outside)) for p in outside.rglob("*")) == ["target", "target/keep"]
        assert snapshot(tmp_path) == before and link.is_symlink()
        assert code == 1
        err = _one_line_error(capsys)
        assert str(link) in err and "symbolic link" in err and f"rm {link}" in err


def test_links_inside_a_replaced_model_folder_are_removed_never_followed(artifacts, tmp_path, capsys):
    """--force over a model folder whose version folder and labels file are links: the links go with the old
    folder, their targets stay as they were."""
    repo, outside = tmp_path / "repo", tmp_path / "outside"
    (outside / "v1").mkdir(parents=True)
    (outside / "v1" / "model.onnx").write_text("someone's model")
    (outside / "labels.txt").write_text("someone's labels")
    (repo / "resnet-fp32").mkdir(parents=True)
    (repo / "resnet-fp32" / "1").symlink_to(outside / "v1")
    (repo / "resnet-fp32" / "labels.txt").symlink_to(outside / "labels.txt")
    before = snapshot(outside)
    assert _export_force(artifacts["fp32"], repo) == 0
    assert snapshot(outside) == before
    assert not (repo / "resnet-fp32" / "1").is_symlink() and not (repo / "resnet-fp32" / "labels.txt").is_symlink()
    assert (repo / "resnet-fp32" / "1" / "model.onnx").read_bytes() == (artifacts["fp32"] / "model.onnx").read_bytes()


@pytest.mark.parametrize("name", ["evil\n", "evil\r\n", "a\nb", "\nevil"])
def test_a_name_with_a_line_break_is_not_a_plain_folder_name(artifacts, tmp_path, capsys, name):
    """``$`` matches before a trailing newline: ``"evil\\n"`` passed the name check and became a folder."""
    from trtinfer.errors import TrtInferError
    from trtinfer.exporters.triton_config import check_model_name

    with pytest.raises(TrtInferError, match="not a plain folder name"):
        check_model_name(name)
    artifact = tmp_path / "artifact"
    shutil.copytree(artifacts["fp32"], artifact)
    manifest = Manifest.read(artifact)
    manifest.name = name
    manifest.write(artifact)
    repo = tmp_path / "repo"
    assert main(["export", "triton", str(artifact), "--repo", str(repo), "--kind", "gpu"]) == 1
    assert "not a plain folder name" in _one_line_error(capsys)
    assert not repo.exists() or not any(repo.iterdir())


# --- issue 27: what a real Triton loads: the ensemble's version folder, the Python-backend classifier ---


def test_the_ensembles_version_folder_is_never_empty(artifacts, tmp_path):
    """S3/GCS syncs drop empty folders, and Triton then refuses the ensemble ("at least one version must be
    available"): the export puts a placeholder file in ``<name>_image/1/``."""
    repo = tmp_path / "repo"
    export_triton([artifacts["fp32"]], repo, TritonOptions(with_preprocess=True))
    assert [p.name for p in (repo / "resnet-fp32_image" / "1").iterdir()] == ["placeholder.txt"]


def _site_packages() -> str:
    import sysconfig

    return sysconfig.get_paths()["purelib"]


def _load_classifier(folder: Path):
    """The exported Python-backend ``model.py`` as Triton's stub would load it (with the labelled stand-in for
    ``triton_python_backend_utils``), initialised with its own config.pbtxt as JSON."""
    import importlib.util

    from google.protobuf import json_format

    from fakes import triton_pb_utils as pb

    pb.install()
    spec = importlib.util.spec_from_file_location(f"classifier_{folder.name.replace('-', '_')}",
                                                  folder / "1" / "model.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    model = module.TritonPythonModel()
    config = parse_pbtxt((folder / "config.pbtxt").read_text())
    model.initialize({"model_config": json_format.MessageToJson(config, preserving_proto_field_name=True),
                      "model_version": "1", "model_repository": str(folder), "model_name": folder.name})
    return model


@pytest.fixture(scope="module")
def python_repo(artifacts, tmp_path_factory) -> Path:
    """``--kind cpu --cpu-backend python --with-preprocess --python-path <this venv's site-packages>``: the
    repository the real-Triton tests load (tests/exporters/test_real_triton.py)."""
    repo = tmp_path_factory.mktemp("python-repo") / "repo"
    assert main(["export", "triton", *map(str, artifacts.values()), "--repo", str(repo), "--kind", "cpu",
                 "--cpu-backend", "python", "--with-preprocess", "--python-path", _site_packages()]) == 0
    return repo


def test_the_python_backend_repository_layout(python_repo, artifacts):
    found = configs(python_repo)
    for precision, artifact in artifacts.items():
        name = f"resnet-{precision}"
        manifest = Manifest.read(artifact)
        config = found[name]
        assert config.backend == "python" and config.parameters["runtime"].string_value == "onnxruntime"
        assert config.parameters["python_path"].string_value == _site_packages()
        assert found[name + "_preprocess"].parameters["python_path"].string_value == _site_packages()
        assert sorted(p.name for p in (python_repo / name / "1").iterdir()) == ["model.onnx", "model.py"]
        assert sha256(python_repo / name / "1" / "model.onnx") == manifest.files["model.onnx"].sha256
        assert (python_repo / name / "labels.txt").read_text().splitlines() == manifest.labels
        assert [s.model_name for s in found[name + "_image"].ensemble_scheduling.step] == [name + "_preprocess", name]


@pytest.mark.parametrize("runtime", ["onnxruntime", "openvino"])
@pytest.mark.parametrize("precision", ["fp32", "int8"])
def test_the_python_backend_classifier_returns_the_runtimes_logits(python_repo, artifacts, cifar_dir, tmp_path,
                                                                   runtime, precision):
    """Two requests batched together by Triton's dynamic batcher: each gets its own rows' logits, equal to
    what trtinfer's runtime computes on the same runtime."""
    from fakes import triton_pb_utils as pb
    from trtinfer.calibration.cifar import load_cifar
    from trtinfer.preprocess import preprocess
    from trtinfer.runtime import load

    folder = python_repo / f"resnet-{precision}"
    if runtime == "openvino":  # the same export, asking for OpenVINO's Python API
        folder = tmp_path / folder.name
        shutil.copytree(python_repo / f"resnet-{precision}", folder)
        config = (folder / "config.pbtxt").read_text().replace('string_value: "onnxruntime"', 'string_value: "openvino"')
        (folder / "config.pbtxt").write_text(config)
    model = _load_classifier(folder)
    manifest = Manifest.read(artifacts[precision])
    x = preprocess(load_cifar(cifar_dir, "test").images[:48], manifest.preprocess)
    responses = model.execute([pb.InferenceRequest(input=x[:5]), pb.InferenceRequest(input=x[5:])])
    assert not any(r.has_error() for r in responses)
    got = [pb.response_array(r) for r in responses]
    assert [g.shape for g in got] == [(5, 10), (43, 10)]
    with load(artifacts[precision], backend=runtime, threads=1) as reference:
        expected = np.asarray(reference.infer(x))
    got_all = np.concatenate(got)
    np.testing.assert_allclose(got_all, expected, rtol=0, atol=1e-4 * np.abs(expected).max())
    assert (got_all.argmax(1) == expected.argmax(1)).all()


def test_the_python_backend_classifier_fails_its_load_without_its_runtime(python_repo, monkeypatch, tmp_path):
    import sys

    monkeypatch.setattr(sys, "path", list(sys.path))
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # "import onnxruntime" raises ImportError
    with pytest.raises(ImportError, match="onnxruntime.*cannot be imported.*--python-path"):
        _load_classifier(python_repo / "resnet-fp32")
    monkeypatch.delitem(sys.modules, "onnxruntime")
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p != _site_packages()])
    _load_classifier(python_repo / "resnet-fp32")
    assert sys.path[-1] == _site_packages()  # appended: the stub's own numpy stays first
