"""builders/engine/tensorrt_build.py's build flow against the TensorRT build stand-in (``fakes.tensorrt_build``,
shaped like TensorRT 10 and 11): what is asked of TensorRT, what lands in the artifact (plan, typed engine
record, one manifest write), the timing cache, and failures that write nothing. A check of our control
flow, not of TensorRT; ``--from-onnx`` with an evaluation set is test_artifact.py's."""

from __future__ import annotations

from pathlib import Path

import pytest

from fakes.tensorrt_build import FAKE_FP16_ENGINE, FP16_ENGINE, GPU, FakeConfig
from tiny_artifacts import snapshot, write_tiny_artifact
from trtinfer.builders.engine.artifact import build_engine_into_artifact
from trtinfer.builders.engine.profiles import parse_batch_profiles
from trtinfer.builders.engine.settings import EngineBuildError, EngineBuildSettings
from trtinfer.hashing import sha256_file
from trtinfer.manifest import BatchProfile, Manifest, TimingCacheRecord

pytestmark = pytest.mark.usefixtures("isolated_cache")


def test_build_writes_plan_and_engine_manifest(fake_trt, artifact, tmp_path):
    messages: list[str] = []
    settings = EngineBuildSettings(profiles=parse_batch_profiles(["16:64:256", "1:1:8"]), opt_level=4,
                                       workspace_mib=512)
    section = build_engine_into_artifact(artifact, settings, progress=messages.append)

    plan = artifact / "model.plan"
    assert plan.read_bytes() == fake_trt.plan
    manifest = Manifest.read(artifact)
    assert manifest.precision == "fp32"  # unchanged
    assert manifest.engine == section
    manifest.verify_files(artifact)  # model.onnx and model.plan both match their sha256
    assert section.plan_sha256 == sha256_file(plan) == manifest.files["model.plan"].sha256
    assert section.tensorrt_version == fake_trt.__version__ == manifest.versions["tensorrt"]
    assert section.gpu_name == GPU["name"] and section.compute_capability == "9.0"
    assert section.profiles == [BatchProfile(1, 1, 8), BatchProfile(16, 64, 256)]
    assert section.layer_precisions == {"total": 3, "fp32": 2, "other": 1}
    assert section.opt_level == 4 and section.workspace_mib == 512 and section.strongly_typed is True
    assert section.build_seconds >= 0
    assert section.timing_cache.reused is False
    assert Path(section.timing_cache.path).is_file()
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
    settings = EngineBuildSettings(timing_cache=cache)
    first = build_engine_into_artifact(artifact, settings)
    assert first.timing_cache == TimingCacheRecord(path=str(cache), reused=False)
    assert cache.read_bytes() == b"|entries"
    messages: list[str] = []
    second = build_engine_into_artifact(artifact, settings, progress=messages.append)
    assert second.timing_cache == TimingCacheRecord(path=str(cache), reused=True)
    assert cache.read_bytes() == b"|entries|entries"  # loaded before, saved after
    assert any("reused" in m for m in messages)


def test_cache_from_another_gpu_is_replaced(fake_trt, artifact, tmp_path, caplog):
    cache = tmp_path / "other.cache"
    cache.write_bytes(b"other-gpu")
    section = build_engine_into_artifact(artifact, EngineBuildSettings(timing_cache=cache))
    assert section.timing_cache.reused is False
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
    section = build_engine_into_artifact(artifact, EngineBuildSettings(timing_cache=cache))
    assert section.timing_cache.reused is False and "unreadable" in caplog.text
    assert cache.read_bytes() == b"|entries"


def test_parser_error_is_one_line_with_the_node(fake_trt, artifact):
    fake_trt.parse_ok = False
    before = snapshot(artifact)
    with pytest.raises(EngineBuildError) as info:
        build_engine_into_artifact(artifact, EngineBuildSettings())
    line = info.value.one_line()
    assert "node 7 '/layer1/conv/Conv' (Conv)" in line and "+1 more" in line and "\n" not in line
    assert snapshot(artifact) == before


def test_failed_build_is_a_hard_error_with_tensorrts_reason(fake_trt, artifact):
    fake_trt.plan = None
    before = snapshot(artifact)
    with pytest.raises(EngineBuildError, match="out of memory while timing tactic 42"):
        build_engine_into_artifact(artifact, EngineBuildSettings())
    assert snapshot(artifact) == before


def test_fp16_engine_is_verified_through_an_execution_context(fake_trt, tmp_path):
    """With the default dynamic profile 1:32:256, every tensor type is "N/A" unless the inspector gets a
    context with the input shape set: the FP16 check must not depend on luck."""
    art = write_tiny_artifact(tmp_path / "half", precision="fp16")
    fake_trt.layers = FP16_ENGINE
    record = build_engine_into_artifact(art, EngineBuildSettings())
    assert record.layer_precisions == {"total": 4, "fp16": 4}
    assert fake_trt.contexts[-1].shapes == {"input": (32, 3, 8, 8)}


def test_fp16_build_without_fp16_layers_fails_and_writes_nothing(fake_trt, tmp_path):
    art = write_tiny_artifact(tmp_path / "half", precision="fp16")
    fake_trt.layers = FAKE_FP16_ENGINE
    before = snapshot(art)
    with pytest.raises(EngineBuildError, match="FP32 engine labelled FP16"):
        build_engine_into_artifact(art, EngineBuildSettings())
    assert snapshot(art) == before
    fake_trt.layers = FP16_ENGINE
    section = build_engine_into_artifact(art, EngineBuildSettings())
    assert section.layer_precisions["fp16"] == 4 and Manifest.read(art).precision == "fp16"


def test_network_input_must_match_the_manifest(fake_trt, tmp_path):
    art = write_tiny_artifact(tmp_path / "renamed")
    manifest = Manifest.read(art)
    manifest.input.name = "images"
    manifest.write(art)
    with pytest.raises(EngineBuildError, match="inputs \\['input'\\]"):
        build_engine_into_artifact(art, EngineBuildSettings())


