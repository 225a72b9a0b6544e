"""builders/engine/artifact.py against the TensorRT build stand-in (``fakes.tensorrt_build``): the engine
record described, and ``--from-onnx`` with an evaluation set and the accuracy guard, committed once."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tiny_artifacts import NUM_CLASSES, snapshot
from trtinfer.builders.engine.artifact import (build_engine_into_artifact, describe_engine, finish_from_onnx,
                                               load_eval_set, plan_matches_manifest)
from trtinfer.builders.engine.settings import EngineBuildSettings
from trtinfer.manifest import Manifest
from trtinfer.runtime.backends.tensorrt import loader as tensorrt_loader

pytestmark = pytest.mark.usefixtures("isolated_cache")


def test_describe_engine(fake_trt, artifact):
    section = build_engine_into_artifact(artifact, EngineBuildSettings())
    lines = list(describe_engine(section))
    assert lines[0].startswith(f"TensorRT {fake_trt.__version__} on NVIDIA H100")
    assert "1:32:256" in lines[1] and "fp32" in lines[2]
    assert plan_matches_manifest(artifact)


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
        from trtinfer.builders.logits import run_onnx

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
    section = finish_from_onnx(artifact, EngineBuildSettings(device=0),
                                   eval_data=write_eval_npz(tmp_path / "eval.npz"), eval_samples=40,
                                   progress=messages.append)
    (directory, options), = fake_runtime["calls"]
    assert options == {"device": 0} and directory != artifact  # the staged copy
    result = Manifest.read(artifact).engine.evaluation
    assert result == section.evaluation
    assert result.samples == 40 and result.top1_agreement == 1.0 and result.passed is True
    assert result.max_drop_points == 0.5  # FP32 engines may use TF32: the FP16 allowance
    assert any("agreement 100.00%" in m for m in messages)


def test_finish_from_onnx_reads_and_writes_the_manifest_once(fake_trt, artifact, monkeypatch):
    """The manifest read for the checks is the one built on: no re-read, one write, in one staging."""
    reads: list[Path] = []
    writes: list[Path] = []
    real_read, real_write = Manifest.read.__func__, Manifest.write
    monkeypatch.setattr(Manifest, "read", classmethod(lambda cls, d: reads.append(Path(d)) or real_read(cls, d)))
    monkeypatch.setattr(Manifest, "write", lambda self, d: writes.append(Path(d)) or real_write(self, d))
    finish_from_onnx(artifact)
    assert reads == [artifact]
    assert len(writes) == 1 and writes[0] != artifact  # into the staged copy, committed as a whole
    assert real_read(Manifest, artifact).engine is not None


def test_finish_from_onnx_accuracy_guard(fake_trt, fake_runtime, artifact, tmp_path):
    from trtinfer.errors import AccuracyError

    from trtinfer.builders.logits import run_onnx

    data = write_eval_npz(tmp_path / "eval.npz")
    # Label every image with the ONNX model's own answer: ONNX is 100% right, so wrong rows are a drop.
    evaluation = load_eval_set(data, Manifest.read(artifact))
    with np.load(data) as raw:
        np.savez(data, images=raw["images"], labels=run_onnx(artifact / "model.onnx", evaluation.x).argmax(1))
    fake_runtime["error"] = 0.25
    before = snapshot(artifact)
    with pytest.raises(AccuracyError):
        finish_from_onnx(artifact, eval_data=data)
    assert snapshot(artifact) == before  # the engine that failed the guard was not written
    section = finish_from_onnx(artifact, eval_data=data, allow_accuracy_drop=True)
    assert section.evaluation.passed is False and section.evaluation.allowed is True
    assert (artifact / "model.plan").is_file()


def test_finish_from_onnx_checks_data_before_tensorrt(artifact, tmp_path, monkeypatch):
    from trtinfer.errors import DataError

    monkeypatch.setattr(tensorrt_loader, "import_tensorrt", lambda: pytest.fail("TensorRT touched before the data"))
    with pytest.raises(DataError):
        finish_from_onnx(artifact, eval_data=tmp_path / "missing")
