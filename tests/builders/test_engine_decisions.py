"""builders/engine.py's decisions that need no GPU: network flags, reading the engine inspector's JSON
(TensorRT 10's and 11's forms, with and without an execution context), the precision rule, parser
errors, settings and the click options, and the artifact side of ``--from-onnx``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click
import pytest
from click.testing import CliRunner

from fakes.tensorrt_build import (DYNAMIC_UNKNOWN, FAKE_FP16_ENGINE, FP16_ENGINE, FP32_ENGINE, INT8_ENGINE,
                                  FakeParserError, _Flag, inspector_json)
from gpu_env import tensorrt_skip_reason
from tiny_artifacts import snapshot, write_tiny_artifact
from trtinfer import trt_support
from trtinfer.builders import engine as eng
from trtinfer.commands.engine_options import engine_options, engine_settings_from_options, pop_engine_options
from trtinfer.errors import ArtifactError, BackendUnavailable, TrtInferError
from trtinfer.manifest import BatchProfile

pytestmark = pytest.mark.usefixtures("isolated_cache")


def test_strongly_typed_on_10_and_default_on_11():
    trt10 = type("trt", (), {"__version__": "10.16.1.11", "NetworkDefinitionCreationFlag": _Flag})
    trt11 = type("trt", (), {"__version__": "11.4.0.106", "NetworkDefinitionCreationFlag": _Flag})
    assert eng.network_creation_flags(trt10) == 1 << 0
    assert eng.network_creation_flags(trt11) == 0


@pytest.mark.parametrize("text, precision", [
    ("Row major linear FP32 format (kLINEAR)", "fp32"),
    ("Row major linear FP16 format", "fp16"),
    ("Channel major FP16 format where channel % 8 == 0", "fp16"),
    ("Four wide channel vectorized row major Int8 format", "int8"),
    ("Thirty-two wide channel vectorized row major Int8 format", "int8"),
    ("Half", "fp16"), ("Float", "fp32"), ("Int8", "int8"), ("BFloat16", "bf16"), ("Int32", "int32"),
    ("Row major linear BF16 format", "bf16"), ("FP8", "fp8"), ("Bool", "bool"), ("UInt8", "uint8"),
    ("", None), (None, None), ("Row major linear format", None),
])
def test_tensor_precision(text, precision):
    assert eng.tensor_precision(text) == precision


@pytest.mark.parametrize("trt11", [False, True], ids=["trt10-json", "trt11-json"])
def test_summarize_layers_counts_each_precision(trt11):
    summary = eng.summarize_layers(inspector_json(FP16_ENGINE, trt11))
    assert summary.total == 4
    assert summary.precisions == {"fp16": 4}
    assert summary.compute_precisions == {"fp16": 2}
    summary = eng.summarize_layers(inspector_json(FP32_ENGINE, trt11))
    assert summary.precisions == {"fp32": 2, "other": 1}
    summary = eng.summarize_layers(inspector_json(INT8_ENGINE, trt11))
    assert summary.precisions == {"int8": 3} and summary.compute_precisions == {"int8": 2}
    assert summary.to_manifest() == {"total": 3, "int8": 3}


@pytest.mark.parametrize("type_key", ["Datatype", "DataType", "Format/Datatype", "data_type"])
def test_the_type_key_is_found_by_name_not_spelling(type_key):
    """TensorRT 11's key for a tensor's type cannot be printed here: any spelling of it is read."""
    summary = eng.summarize_layers(inspector_json(FP16_ENGINE, trt11=True, type_key=type_key))
    assert summary.precisions == {"fp16": 4} and summary.compute_precisions == {"fp16": 2}


def test_the_data_type_key_is_read_before_the_format():
    """A TensorRT 11 layout string may name a type too; the split-out data type is what counts."""
    tensor = {"Name": "t", "Format": "Row major linear FP32 format (kLINEAR)", "Datatype": "Half"}
    layer = {"Name": "conv", "LayerType": "CaskConvolution", "Inputs": [tensor], "Outputs": [tensor]}
    assert eng.summarize_layers({"Layers": [layer]}).precisions == {"fp16": 1}


@pytest.mark.parametrize("trt11", [False, True], ids=["trt10-json", "trt11-json"])
def test_dynamic_shapes_without_a_context_fall_back_to_weights(trt11):
    """Without an execution context the inspector prints "N/A due to dynamic shapes" for every tensor:
    no tensor type is read from it, and only layers with weights still say their precision."""
    data = json.loads(inspector_json(FP16_ENGINE, trt11=trt11, dynamic_unknown=True))
    assert DYNAMIC_UNKNOWN in json.dumps(data)
    unknown = eng.summarize_layers(data)
    assert unknown.precisions == {"unknown": 4}
    with pytest.raises(eng.EngineBuildError, match="no per-layer types"):
        eng.check_engine_precision("fp16", unknown)
    data["Layers"][1]["Weights"] = {"Type": "Half", "Count": 864}  # the convolution's weights
    eng.check_engine_precision("fp16", eng.summarize_layers(data))


def test_summarize_layers_weights_and_names_only():
    layer = {"Name": "conv", "LayerType": "CaskConvolution", "Inputs": [], "Outputs": [],
             "Weights": {"Type": "Half", "Count": 864}}
    assert eng.summarize_layers({"Layers": [layer]}).precisions == {"fp16": 1}
    # Without DETAILED verbosity the inspector lists names only: nothing can be verified.
    names_only = eng.summarize_layers(json.dumps({"Layers": ["conv1 + relu", "fc"], "Bindings": []}))
    assert names_only.precisions == {"unknown": 2}
    with pytest.raises(eng.EngineBuildError, match="no per-layer types"):
        eng.check_engine_precision("fp16", names_only)
    eng.check_engine_precision("fp32", names_only)  # FP32 has no floor to check
    with pytest.raises(eng.EngineBuildError, match="not JSON"):
        eng.summarize_layers("{not json")


def test_precision_rule_checks_what_was_built():
    eng.check_engine_precision("fp16", eng.summarize_layers(inspector_json(FP16_ENGINE)))
    eng.check_engine_precision("int8", eng.summarize_layers(inspector_json(INT8_ENGINE)))
    eng.check_engine_precision("fp32", eng.summarize_layers(inspector_json(FP32_ENGINE)))
    with pytest.raises(eng.EngineBuildError) as info:
        eng.check_engine_precision("fp16", eng.summarize_layers(inspector_json(FP32_ENGINE)))
    assert "no FP16 layers" in str(info.value) and "FP32 engine labelled FP16" in str(info.value)
    # FP16 reformat layers do not make an FP16 engine when the convolutions run in FP32.
    with pytest.raises(eng.EngineBuildError, match="no FP16 layers"):
        eng.check_engine_precision("fp16", eng.summarize_layers(inspector_json(FAKE_FP16_ENGINE)))
    with pytest.raises(eng.EngineBuildError, match="no INT8 layers"):
        eng.check_engine_precision("int8", eng.summarize_layers(inspector_json(FP16_ENGINE)))


def test_parser_errors_name_the_node():
    text = eng.format_parser_error(FakeParserError())
    assert text == "node 7 '/layer1/conv/Conv' (Conv): Assertion failed: kernel shape unsupported"
    assert eng.format_parser_error(FakeParserError(node=-1, name="", op="")) == \
        "Assertion failed: kernel shape unsupported"
    error = eng.parser_failure(Path("a/model.onnx"), [text, "second"])
    line = error.one_line()
    assert "\n" not in line
    assert "model.onnx at node 7 '/layer1/conv/Conv' (Conv)" in line and "+1 more" in line


def test_trt_dtype_names():
    assert eng.trt_dtype_name(type("D", (), {"name": "FLOAT"})()) == "float32"
    assert eng.trt_dtype_name("DataType.HALF") == "float16"


def test_timing_cache_location(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    path = eng.default_timing_cache_path("10.16.1.11", "NVIDIA H100 80GB HBM3", "9.0")
    assert path == tmp_path / "xdg" / "trtinfer" / "timing-cache" / "trt-10.16.1.11-nvidia-h100-80gb-hbm3-sm90.cache"
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/dir")  # ignored, as the XDG spec says
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert eng.cache_root() == tmp_path / "home" / ".cache" / "trtinfer"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert eng.cache_root() == tmp_path / "home" / ".cache" / "trtinfer"


def test_settings_validation():
    settings = eng.EngineBuildSettings()
    assert [str(p) for p in settings.profiles] == ["1:32:256"]
    assert settings.opt_level == 3 and settings.workspace_mib is None and settings.device == 0
    with pytest.raises(TrtInferError, match="opt-level"):
        eng.EngineBuildSettings(opt_level=6)
    with pytest.raises(TrtInferError, match="workspace"):
        eng.EngineBuildSettings(workspace_mib=0)
    with pytest.raises(TrtInferError, match="device"):
        eng.EngineBuildSettings(device=-1)
    with pytest.raises(TrtInferError, match="overlap"):
        eng.EngineBuildSettings(profiles=[BatchProfile(1, 4, 16), BatchProfile(8, 8, 8)])
    ordered = eng.EngineBuildSettings(profiles=[BatchProfile(16, 64, 256), BatchProfile(1, 1, 8)])
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
    manifest = eng.read_artifact_for_engine(artifact)
    assert manifest.input.shape == [-1, 3, 8, 8]


def test_read_artifact_refuses_tampered_or_static(artifact, tmp_path):
    (artifact / "model.onnx").write_bytes(b"not the model")
    with pytest.raises(ArtifactError, match="truncated or replaced|sha256"):
        eng.read_artifact_for_engine(artifact)
    static = write_tiny_artifact(tmp_path / "static", batch=4)
    with pytest.raises(ArtifactError, match="dynamic batch"):
        eng.read_artifact_for_engine(static)
    with pytest.raises(ArtifactError, match="not found"):
        eng.read_artifact_for_engine(tmp_path / "missing")


@pytest.mark.skipif(tensorrt_skip_reason() is None, reason="TensorRT and a GPU are present: the real build runs")
def test_from_onnx_path_stops_cleanly_where_tensorrt_is_needed(artifact):
    """`trtinfer build --from-onnx DIR` on a CPU host: checks pass, then one line says what is missing."""
    before = snapshot(artifact)
    ok, reason = eng.engine_stage_available()
    assert not ok and reason
    with pytest.raises(BackendUnavailable) as info:
        eng.build_engine_into_artifact(artifact, eng.EngineBuildSettings())
    assert "\n" not in info.value.one_line()
    assert snapshot(artifact) == before  # nothing written, no staging left behind


def test_from_onnx_path_checks_the_artifact_before_tensorrt(artifact, monkeypatch):
    def no_tensorrt():
        raise AssertionError("TensorRT must not be touched before the artifact is checked")

    monkeypatch.setattr(trt_support, "import_tensorrt", no_tensorrt)
    (artifact / "model.onnx").write_bytes(b"x")
    with pytest.raises(ArtifactError):
        eng.build_engine_into_artifact(artifact, eng.EngineBuildSettings())
