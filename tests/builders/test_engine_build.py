"""builders/engine.py's build flow against the TensorRT build stand-in (``fakes.tensorrt_build``, shaped
like TensorRT 10 and 11): what is asked of TensorRT, what lands in the artifact (plan, typed engine
record, one manifest write), the timing cache, failures that write nothing, and ``--from-onnx`` with
an evaluation set and the accuracy guard. A check of our control flow, not of TensorRT."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from fakes import tensorrt_build
from fakes.tensorrt_build import FAKE_FP16_ENGINE, FP16_ENGINE, GPU, FakeConfig, FakeTensorRT
from tiny_artifacts import NUM_CLASSES, snapshot, write_tiny_artifact
from trtinfer import trt_support
from trtinfer.builders import engine as eng
from trtinfer.builders.profiles import parse_batch_profiles
from trtinfer.hashing import sha256_file
from trtinfer.manifest import BatchProfile, Manifest

pytestmark = pytest.mark.usefixtures("isolated_cache")


@pytest.fixture(params=["10.16.1.11", "11.4.0.106"], ids=["trt10", "trt11"])
def fake_trt(request, monkeypatch) -> FakeTensorRT:
    return tensorrt_build.install(monkeypatch, request.param)


def test_build_writes_plan_and_engine_manifest(fake_trt, artifact, tmp_path):
    messages: list[str] = []
    settings = eng.EngineBuildSettings(profiles=parse_batch_profiles(["16:64:256", "1:1:8"]), opt_level=4,
                                       workspace_mib=512)
    section = eng.build_engine_into_artifact(artifact, settings, progress=messages.append)

    plan = artifact / "model.plan"
    assert plan.read_bytes() == fake_trt.plan
    manifest = Manifest.read(artifact)
    assert manifest.precision == "fp32"  # unchanged
    assert manifest.engine == section
    manifest.verify_files(artifact)  # model.onnx and model.plan both match their sha256
    assert section.plan_sha256 == sha256_file(plan) == manifest.files["model.plan"]["sha256"]
    assert section.tensorrt_version == fake_trt.__version__ == manifest.versions["tensorrt"]
    assert section.gpu_name == GPU["name"] and section.compute_capability == "9.0"
    assert section.profiles == [BatchProfile(1, 1, 8), BatchProfile(16, 64, 256)]
    assert section.layer_precisions == {"total": 3, "fp32": 2, "other": 1}
    assert section.opt_level == 4 and section.workspace_mib == 512 and section.strongly_typed is True
    assert section.build_seconds >= 0
    assert section.timing_cache["reused"] is False
    assert Path(section.timing_cache["path"]).is_file()
    assert not [p for p in artifact.parent.iterdir() if p.name.startswith(".")]  # no staging left

    # What was asked of TensorRT.
    strongly_typed = 0 if fake_trt.__version__.startswith("11") else 1
    assert fake_trt.network.flags == strongly_typed
    config = fake_trt.config
    assert config.builder_optimization_level == 4
    assert config.profiling_verbosity == "DETAILED"
    assert config.pool_limits == {"WORKSPACE": 512 << 20}
    assert [p.shapes["input"] for p in config.profiles] == [
        ((1, 3, 8, 8), (1, 3, 8, 8), (8, 3, 8, 8)), ((16, 3, 8, 8), (64, 3, 8, 8), (256, 3, 8, 8))]
    assert config.flags_set == []  # no precision flags, never VERSION_COMPATIBLE
    # the inspector read the engine through a context at profile 0's OPT shape (else: "N/A" types)
    assert fake_trt.contexts[-1].shapes == {"input": (1, 3, 8, 8)}
    assert any("timing cache" in m and "new" in m for m in messages)


def test_second_build_reuses_the_timing_cache(fake_trt, artifact, tmp_path):
    cache = tmp_path / "my.cache"
    settings = eng.EngineBuildSettings(timing_cache=cache)
    first = eng.build_engine_into_artifact(artifact, settings)
    assert first.timing_cache == {"path": str(cache), "reused": False}
    assert cache.read_bytes() == b"|entries"
    messages: list[str] = []
    second = eng.build_engine_into_artifact(artifact, settings, progress=messages.append)
    assert second.timing_cache == {"path": str(cache), "reused": True}
    assert cache.read_bytes() == b"|entries|entries"  # loaded before, saved after
    assert any("reused" in m for m in messages)


def test_cache_from_another_gpu_is_replaced(fake_trt, artifact, tmp_path, caplog):
    cache = tmp_path / "other.cache"
    cache.write_bytes(b"other-gpu")
    section = eng.build_engine_into_artifact(artifact, eng.EngineBuildSettings(timing_cache=cache))
    assert section.timing_cache["reused"] is False
    assert "another TensorRT or GPU" in caplog.text
    assert cache.read_bytes() == b"|entries"


def test_corrupt_timing_cache_is_replaced(fake_trt, artifact, tmp_path, monkeypatch, caplog):
    cache = tmp_path / "corrupt.cache"
    cache.write_bytes(b"garbage")
    real = FakeConfig.create_timing_cache

    def picky(self, data):
        if data == b"garbage":
            raise RuntimeError("invalid timing cache")
        return real(self, data)

    monkeypatch.setattr(FakeConfig, "create_timing_cache", picky)
    section = eng.build_engine_into_artifact(artifact, eng.EngineBuildSettings(timing_cache=cache))
    assert section.timing_cache["reused"] is False and "unreadable" in caplog.text
    assert cache.read_bytes() == b"|entries"


def test_parser_error_is_one_line_with_the_node(fake_trt, artifact):
    fake_trt.parse_ok = False
    before = snapshot(artifact)
    with pytest.raises(eng.EngineBuildError) as info:
        eng.build_engine_into_artifact(artifact, eng.EngineBuildSettings())
    line = info.value.one_line()
    assert "node 7 '/layer1/conv/Conv' (Conv)" in line and "+1 more" in line and "\n" not in line
    assert snapshot(artifact) == before


def test_failed_build_is_a_hard_error_with_tensorrts_reason(fake_trt, artifact):
    fake_trt.plan = None
    before = snapshot(artifact)
    with pytest.raises(eng.EngineBuildError, match="out of memory while timing tactic 42"):
        eng.build_engine_into_artifact(artifact, eng.EngineBuildSettings())
    assert snapshot(artifact) == before


def test_fp16_engine_is_verified_through_an_execution_context(fake_trt, tmp_path):
    """With the default dynamic profile 1:32:256, every tensor type is "N/A" unless the inspector gets a
    context with the input shape set: the FP16 check must not depend on luck."""
    art = write_tiny_artifact(tmp_path / "half", precision="fp16")
    fake_trt.layers = FP16_ENGINE
    record = eng.build_engine_into_artifact(art, eng.EngineBuildSettings())
    assert record.layer_precisions == {"total": 4, "fp16": 4}
    assert fake_trt.contexts[-1].shapes == {"input": (32, 3, 8, 8)}


def test_fp16_build_without_fp16_layers_fails_and_writes_nothing(fake_trt, tmp_path):
    art = write_tiny_artifact(tmp_path / "half", precision="fp16")
    fake_trt.layers = FAKE_FP16_ENGINE
    before = snapshot(art)
    with pytest.raises(eng.EngineBuildError, match="FP32 engine labelled FP16"):
        eng.build_engine_into_artifact(art, eng.EngineBuildSettings())
    assert snapshot(art) == before
    fake_trt.layers = FP16_ENGINE
    section = eng.build_engine_into_artifact(art, eng.EngineBuildSettings())
    assert section.layer_precisions["fp16"] == 4 and Manifest.read(art).precision == "fp16"


def test_network_input_must_match_the_manifest(fake_trt, tmp_path):
    art = write_tiny_artifact(tmp_path / "renamed")
    manifest = Manifest.read(art)
    manifest.input.name = "images"
    manifest.write(art)
    with pytest.raises(eng.EngineBuildError, match="inputs \\['input'\\]"):
        eng.build_engine_into_artifact(art, eng.EngineBuildSettings())


def test_describe_engine(fake_trt, artifact):
    section = eng.build_engine_into_artifact(artifact, eng.EngineBuildSettings())
    lines = list(eng.describe_engine(section))
    assert lines[0].startswith(f"TensorRT {fake_trt.__version__} on NVIDIA H100")
    assert "1:32:256" in lines[1] and "fp32" in lines[2]
    assert eng.plan_matches_manifest(artifact)


# -- --from-onnx with an evaluation set: runtime vs ONNX Runtime, the accuracy guard --------------------------------
def write_eval_npz(path: Path, count: int = 48, size: int = 8, seed: int = 1) -> Path:
    rng = np.random.default_rng(seed)
    np.savez(path, images=rng.integers(0, 256, (count, size, size, 3), dtype=np.uint8),
             labels=rng.integers(0, NUM_CLASSES, count))
    return path


class FakeRuntimeModel:
    """What the runtime's TensorRT model does, computed with ONNX Runtime (+ an error)."""

    opened: list[Path] = []

    def __init__(self, directory: Path, error: float):
        from trtinfer.builders.evaluate import run_onnx

        self.run, self.directory, self.error = run_onnx, directory, error

    def infer(self, x):
        logits = self.run(self.directory / "model.onnx", x)
        if self.error:
            logits = logits.copy()
            logits[: int(len(logits) * self.error)] *= -1  # flips the top-1 of that share of rows
        return logits

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


@pytest.fixture()
def fake_runtime(monkeypatch):
    from trtinfer.runtime import loader

    state = {"error": 0.0, "calls": []}

    def open_tensorrt(directory, manifest, **options):
        state["calls"].append((Path(directory), options))
        manifest.verify_files(directory)  # the staged plan is recorded (in hand) before the run
        assert not (Path(directory) / "manifest.json").is_file() or \
            Manifest.read(directory).engine is None  # the one manifest write comes after the evaluation
        return FakeRuntimeModel(Path(directory), state["error"])

    monkeypatch.setattr(loader, "open_tensorrt", open_tensorrt)
    return state


def test_finish_from_onnx_evaluates_before_committing(fake_trt, fake_runtime, artifact, tmp_path):
    messages: list[str] = []
    section = eng.finish_from_onnx(artifact, eng.EngineBuildSettings(device=0),
                                   eval_data=write_eval_npz(tmp_path / "eval.npz"), eval_samples=40,
                                   progress=messages.append)
    (directory, options), = fake_runtime["calls"]
    assert options == {"device": 0} and directory != artifact  # the staged copy
    result = Manifest.read(artifact).engine.evaluation
    assert result == section.evaluation
    assert result["samples"] == 40 and result["top1_agreement"] == 1.0 and result["passed"] is True
    assert result["max_drop_points"] == 0.5  # FP32 engines may use TF32: the FP16 allowance
    assert any("agreement 100.00%" in m for m in messages)


def test_finish_from_onnx_reads_and_writes_the_manifest_once(fake_trt, artifact, monkeypatch):
    """The manifest read for the checks is the one built on: no re-read, one write, in one staging."""
    reads: list[Path] = []
    writes: list[Path] = []
    real_read, real_write = Manifest.read.__func__, Manifest.write
    monkeypatch.setattr(Manifest, "read", classmethod(lambda cls, d: reads.append(Path(d)) or real_read(cls, d)))
    monkeypatch.setattr(Manifest, "write", lambda self, d: writes.append(Path(d)) or real_write(self, d))
    eng.finish_from_onnx(artifact)
    assert reads == [artifact]
    assert len(writes) == 1 and writes[0] != artifact  # into the staged copy, committed as a whole
    assert real_read(Manifest, artifact).engine is not None


def test_finish_from_onnx_accuracy_guard(fake_trt, fake_runtime, artifact, tmp_path):
    from trtinfer.errors import AccuracyError

    from trtinfer.builders.evaluate import run_onnx

    data = write_eval_npz(tmp_path / "eval.npz")
    # Label every image with the ONNX model's own answer: ONNX is 100% right, so wrong rows are a drop.
    evaluation = eng.load_eval_set(data, Manifest.read(artifact))
    with np.load(data) as raw:
        np.savez(data, images=raw["images"], labels=run_onnx(artifact / "model.onnx", evaluation.x).argmax(1))
    fake_runtime["error"] = 0.25
    before = snapshot(artifact)
    with pytest.raises(AccuracyError):
        eng.finish_from_onnx(artifact, eval_data=data)
    assert snapshot(artifact) == before  # the engine that failed the guard was not written
    section = eng.finish_from_onnx(artifact, eval_data=data, allow_accuracy_drop=True)
    assert section.evaluation["passed"] is False and section.evaluation["allowed"] is True
    assert (artifact / "model.plan").is_file()


def test_finish_from_onnx_checks_data_before_tensorrt(artifact, tmp_path, monkeypatch):
    from trtinfer.errors import DataError

    monkeypatch.setattr(trt_support, "import_tensorrt", lambda: pytest.fail("TensorRT touched before the data"))
    with pytest.raises(DataError):
        eng.finish_from_onnx(artifact, eval_data=tmp_path / "missing")


def test_build_command_takes_the_engine_options():
    from trtinfer.commands.build import build

    names = {p.name for p in build.params}
    assert {"batch", "timing_cache", "opt_level", "workspace", "device", "require_engine"} <= names
