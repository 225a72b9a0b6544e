"""builders/engine/settings.py's decisions that need no GPU: the settings and the click options, the timing
cache location, and the artifact side of ``--from-onnx``."""

from __future__ import annotations

from typing import Any

import click
import pytest
from click.testing import CliRunner

from gpu_env import tensorrt_skip_reason
from tiny_artifacts import snapshot, write_tiny_artifact
from trtinfer.builders.engine.artifact import build_engine_into_artifact
from trtinfer.builders.engine.settings import (EngineBuildSettings, default_timing_cache_path, engine_stage_available,
                                               read_artifact_for_engine)
from trtinfer.cache import cache_root
from trtinfer.commands.engine_options import engine_options, engine_settings_from_options, pop_engine_options
from trtinfer.errors import ArtifactError, BackendUnavailable, TrtInferError
from trtinfer.manifest import BatchProfile
from trtinfer.runtime.backends.tensorrt import loader as tensorrt_loader

pytestmark = pytest.mark.usefixtures("isolated_cache")


def test_timing_cache_location(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    path = default_timing_cache_path("10.16.1.11", "NVIDIA H100 80GB HBM3", "9.0")
    assert path == tmp_path / "xdg" / "trtinfer" / "timing-cache" / "trt-10.16.1.11-nvidia-h100-80gb-hbm3-sm90.cache"
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/dir")  # ignored, as the XDG spec says
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert cache_root() == tmp_path / "home" / ".cache" / "trtinfer"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert cache_root() == tmp_path / "home" / ".cache" / "trtinfer"


def test_settings_validation():
    settings = EngineBuildSettings()
    assert [str(p) for p in settings.profiles] == ["1:32:256"]
    assert settings.opt_level == 3 and settings.workspace_mib is None and settings.device == 0
    with pytest.raises(TrtInferError, match="opt-level"):
        EngineBuildSettings(opt_level=6)
    with pytest.raises(TrtInferError, match="workspace"):
        EngineBuildSettings(workspace_mib=0)
    with pytest.raises(TrtInferError, match="device"):
        EngineBuildSettings(device=-1)
    with pytest.raises(TrtInferError, match="overlap"):
        EngineBuildSettings(profiles=[BatchProfile(1, 4, 16), BatchProfile(8, 8, 8)])
    ordered = EngineBuildSettings(profiles=[BatchProfile(16, 64, 256), BatchProfile(1, 1, 8)])
    assert [str(p) for p in ordered.profiles] == ["1:1:8", "16:64:256"]


# -- engine_options (the click helper the build command uses) ------------------------------------------------
def _options_command():
    seen: dict[str, Any] = {}

    @click.command()
    @engine_options
    def build(**kwargs):
        seen["settings"], seen["require"] = pop_engine_options(kwargs)
        seen["rest"] = kwargs

    return build, seen


def test_engine_options_parse_into_settings(tmp_path):
    command, seen = _options_command()
    result = CliRunner().invoke(command, ["--batch", "16:64:256", "--batch", "1:1:8", "--timing-cache",
                                          str(tmp_path / "t.cache"), "--opt-level", "5", "--workspace", "2048",
                                          "--device", "1", "--require-engine"])
    assert result.exit_code == 0, result.output
    settings = seen["settings"]
    assert [str(p) for p in settings.profiles] == ["1:1:8", "16:64:256"]
    assert settings.timing_cache == tmp_path / "t.cache"
    assert (settings.opt_level, settings.workspace_mib, settings.device) == (5, 2048, 1)
    assert seen["require"] is True and seen["rest"] == {}


def test_engine_options_defaults_and_errors():
    command, seen = _options_command()
    assert CliRunner().invoke(command, []).exit_code == 0
    assert [str(p) for p in seen["settings"].profiles] == ["1:32:256"] and seen["require"] is False
    assert CliRunner().invoke(command, ["--opt-level", "9"]).exit_code == 2  # click range check
    result = CliRunner().invoke(command, ["--batch", "1:32"])
    assert isinstance(result.exception, TrtInferError)  # becomes one line through trtinfer.cli.main
    with pytest.raises(TrtInferError, match="overlap"):
        engine_settings_from_options(batch=("1:8:16", "4:8:32"))


# -- the artifact side of the stage (no TensorRT needed) ---------------------------------------------------------
def test_read_artifact_for_engine(artifact):
    manifest = read_artifact_for_engine(artifact)
    assert manifest.input.shape == [-1, 3, 8, 8]


def test_read_artifact_refuses_tampered_or_static(artifact, tmp_path):
    (artifact / "model.onnx").write_bytes(b"not the model")
    with pytest.raises(ArtifactError, match="truncated or replaced|sha256"):
        read_artifact_for_engine(artifact)
    static = write_tiny_artifact(tmp_path / "static", batch=4)
    with pytest.raises(ArtifactError, match="dynamic batch"):
        read_artifact_for_engine(static)
    with pytest.raises(ArtifactError, match="not found"):
        read_artifact_for_engine(tmp_path / "missing")


@pytest.mark.skipif(tensorrt_skip_reason() is None, reason="TensorRT and a GPU are present: the real build runs")
def test_from_onnx_path_stops_cleanly_where_tensorrt_is_needed(artifact):
    """`trtinfer build --from-onnx DIR` on a CPU host: checks pass, then one line says what is missing."""
    before = snapshot(artifact)
    ok, reason = engine_stage_available()
    assert not ok and reason
    with pytest.raises(BackendUnavailable) as info:
        build_engine_into_artifact(artifact, EngineBuildSettings())
    assert "\n" not in info.value.one_line()
    assert snapshot(artifact) == before  # nothing written, no staging left behind


def test_from_onnx_path_checks_the_artifact_before_tensorrt(artifact, monkeypatch):
    def no_tensorrt():
        raise AssertionError("TensorRT must not be touched before the artifact is checked")

    monkeypatch.setattr(tensorrt_loader, "import_tensorrt", no_tensorrt)
    (artifact / "model.onnx").write_bytes(b"x")
    with pytest.raises(ArtifactError):
        build_engine_into_artifact(artifact, EngineBuildSettings())


def test_build_command_takes_the_engine_options():
    from trtinfer.commands.build import build

    names = {p.name for p in build.params}
    assert {"batch", "timing_cache", "opt_level", "workspace", "device", "require_engine"} <= names
