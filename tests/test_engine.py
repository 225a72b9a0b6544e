"""builders/engine.py: the TensorRT engine stage.

CPU part (runs everywhere): the decisions that need no GPU, the ``--from-onnx`` path up to the
point TensorRT is needed, and the whole build flow against a stand-in for the ``tensorrt`` module
(shaped like TensorRT 10 and 11; ``test_trt_api_names.py`` checks our calls against the real
bindings of both).

GPU part (``pytest -m gpu``): real FP32, FP16 and INT8 engines, run and compared with ONNX
Runtime on the same artifact, timing-cache reuse and the mismatch errors. Skipped with the
reason where there is no GPU or no TensorRT.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import click
import numpy as np
import pytest
from click.testing import CliRunner

from trtinfer import trt_support
from trtinfer.builders import engine as eng
from trtinfer.builders.profiles import BatchProfile, parse_batch_profiles, select_profile
from trtinfer.commands.engine_options import engine_options, engine_settings_from_options, pop_engine_options
from trtinfer.errors import ArtifactError, BackendUnavailable, TrtInferError
from trtinfer.hashing import sha256_file
from gpu_env import tensorrt_skip_reason
from trtinfer.manifest import Manifest, PreprocessSpec, TensorSpec





NUM_CLASSES = 10


# -- artifacts ------------------------------------------------------------------------------------------
def write_tiny_artifact(directory: Path, precision: str = "fp32", size: int = 8, batch: int | str = -1) -> Path:
    """A real (tiny) artifact: GlobalAveragePool -> Flatten -> Gemm, input [-1, 3, size, size]."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    weight = numpy_helper.from_array(rng.standard_normal((NUM_CLASSES, 3)).astype(np.float32), "w")
    bias = numpy_helper.from_array(rng.standard_normal(NUM_CLASSES).astype(np.float32), "b")
    nodes = [helper.make_node("GlobalAveragePool", ["input"], ["pooled"], name="pool"),
             helper.make_node("Flatten", ["pooled"], ["flat"], name="flatten"),
             helper.make_node("Gemm", ["flat", "w", "b"], ["logits"], name="fc", transB=1)]
    dim0 = "batch" if batch == -1 else batch
    graph = helper.make_graph(nodes, "tiny",
                              [helper.make_tensor_value_info("input", TensorProto.FLOAT, [dim0, 3, size, size])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [dim0, NUM_CLASSES])],
                              initializer=[weight, bias])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    directory.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(directory / "model.onnx"))
    manifest = Manifest(name=directory.name, arch="tiny", num_classes=NUM_CLASSES,
                        labels=[f"c{i}" for i in range(NUM_CLASSES)], precision=precision,
                        input=TensorSpec("input", [-1 if batch == -1 else int(batch), 3, size, size]),
                        output=TensorSpec("logits", [-1, NUM_CLASSES]),
                        preprocess=PreprocessSpec(input_size=size, resize=size, mean=[0.5] * 3, std=[0.5] * 3))
    manifest.record_file(directory, "model.onnx")
    manifest.write(directory)
    return directory


def snapshot(directory: Path) -> dict[str, str]:
    """Every file of the artifact and of its staging siblings (.NAME.tmp-*, .NAME.old-*) with its sha256."""
    root = directory.parent
    return {str(p.relative_to(root)): sha256_file(p) for p in sorted(root.rglob("*"))
            if p.is_file() and p.relative_to(root).parts[0] in (directory.name,)
            or p.is_file() and p.relative_to(root).parts[0].startswith(f".{directory.name}.")}


@pytest.fixture()
def artifact(tmp_path: Path) -> Path:
    return write_tiny_artifact(tmp_path / "tiny")


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg-cache"))


# -- pure decisions ---------------------------------------------------------------------------------------
class _Flag:
    STRONGLY_TYPED = 0


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


def _io(kind: str, trt11: bool) -> dict[str, Any]:
    words = {"fp32": ("Row major linear FP32 format", "Float"), "fp16": ("Channel major FP16 format", "Half"),
             "int8": ("Thirty-two wide channel vectorized row major Int8 format", "Int8"),
             "int32": ("Row major linear Int32 format", "Int32")}[kind]
    if trt11:
        return {"Name": "t", "Location": "Device", "Dimensions": [1], "Format": words[0], "DataType": words[1]}
    return {"Name": "t", "Location": "Device", "Dimensions": [1], "Format/Datatype": words[0]}


def inspector_json(layers: list[tuple[str, str, str]], trt11: bool = False) -> str:
    """Engine-inspector JSON (DETAILED) with layers given as (LayerType, input precision, output precision)."""
    body = [{"Name": f"layer{i}", "LayerType": kind, "Inputs": [_io(a, trt11)], "Outputs": [_io(b, trt11)],
             "TacticName": "x"} for i, (kind, a, b) in enumerate(layers)]
    data: dict[str, Any] = {"Layers": body}
    if trt11:
        data["I/O Tensors"] = [{"Name": "input", "IOMode": "Input", "DataType": "Float"}]
    else:
        data["Bindings"] = ["input", "logits"]
    return json.dumps(data)


FP16_ENGINE = [("Reformat", "fp32", "fp16"), ("CaskConvolution", "fp16", "fp16"), ("CaskGemmMatrixMultiply", "fp16", "fp16"),
               ("Reformat", "fp16", "fp32")]
FP32_ENGINE = [("CaskConvolution", "fp32", "fp32"), ("CaskPooling", "fp32", "fp32"), ("Shape", "int32", "int32")]
INT8_ENGINE = [("Reformat", "fp32", "int8"), ("CaskConvolution", "int8", "int8"), ("CaskConvolution", "int8", "fp32")]
# A cast to FP16 around FP32 convolutions: what a mislabelled "FP16" engine looks like.
FAKE_FP16_ENGINE = [("Reformat", "fp32", "fp16"), ("CaskConvolution", "fp32", "fp32"), ("Reformat", "fp16", "fp32")]


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


class FakeParserError:
    def __init__(self, node=7, name="/layer1/conv/Conv", op="Conv", desc="Assertion failed: kernel shape\n unsupported"):
        self._node, self._name, self._op, self._desc = node, name, op, desc

    def node(self):
        return self._node

    def node_name(self):
        return self._name

    def node_operator(self):
        return self._op

    def desc(self):
        return self._desc

    def code(self):
        return "UNSUPPORTED_NODE"


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


# -- the whole build flow against a stand-in tensorrt module ------------------------------------------------------
class _Enum:
    def __init__(self, **members):
        self.__dict__.update(members)


class FakeDims(list):
    pass


class FakeTensor:
    def __init__(self, name, shape, dtype="FLOAT"):
        self.name, self.shape, self.dtype = name, FakeDims(shape), type("DataType", (), {"name": dtype})()


class FakeNetwork:
    def __init__(self, flags):
        self.flags = flags
        self.inputs: list[FakeTensor] = []

    @property
    def num_inputs(self):
        return len(self.inputs)

    def get_input(self, i):
        return self.inputs[i]


class FakeParser:
    def __init__(self, trt, network, logger):
        self.trt, self.network = trt, network
        self.errors: list[FakeParserError] = []

    def parse_from_file(self, path):
        self.trt.calls.append(("parse_from_file", path))
        if self.trt.parse_ok:
            self.network.inputs = [FakeTensor("input", [-1, 3, 8, 8])]
            return True
        self.errors = [FakeParserError(), FakeParserError(node=9, name="/fc/Gemm", op="Gemm", desc="second")]
        return False

    @property
    def num_errors(self):
        return len(self.errors)

    def get_error(self, i):
        return self.errors[i]


class FakeProfile:
    def __init__(self):
        self.shapes = {}

    def set_shape(self, name, mn, opt, mx):
        self.shapes[name] = (tuple(mn), tuple(opt), tuple(mx))


class FakeCache:
    def __init__(self, data: bytes):
        self.data = bytes(data)

    def serialize(self):
        return memoryview(self.data + b"|entries")


class FakeConfig:
    def __init__(self, trt):
        self.trt = trt
        self.builder_optimization_level = None
        self.profiling_verbosity = None
        self.pool_limits = {}
        self.profiles: list[FakeProfile] = []
        self.cache: FakeCache | None = None
        self.flags_set: list = []

    def set_memory_pool_limit(self, pool, size):
        self.pool_limits[pool] = size

    def add_optimization_profile(self, profile):
        self.profiles.append(profile)
        return len(self.profiles) - 1

    def create_timing_cache(self, data):
        return FakeCache(data)

    def set_timing_cache(self, cache, ignore_mismatch):
        assert ignore_mismatch is False
        if cache.data.startswith(b"other-gpu"):
            return False
        self.cache = cache
        return True

    def get_timing_cache(self):
        return self.cache

    def set_flag(self, flag):  # must never be called: no precision or host-code flags
        self.flags_set.append(flag)


class FakeBuilder:
    def __init__(self, trt, logger):
        self.trt = trt

    def create_network(self, flags):
        self.trt.network = FakeNetwork(flags)
        return self.trt.network

    def create_builder_config(self):
        self.trt.config = FakeConfig(self.trt)
        return self.trt.config

    def create_optimization_profile(self):
        return FakeProfile()

    def build_serialized_network(self, network, config):
        self.trt.calls.append(("build_serialized_network",))
        if self.trt.plan is None:
            self.trt.logger.errors.append("[optimizer] out of memory while timing tactic 42")
        return self.trt.plan


class FakeEngine:
    def __init__(self, trt):
        self.trt = trt

    def create_engine_inspector(self):
        return self

    def get_engine_information(self, fmt):
        assert fmt == "JSON"
        return inspector_json(self.trt.layers, trt11=self.trt.__version__.startswith("11"))


class FakeRuntime:
    def __init__(self, trt, logger):
        self.trt = trt

    def deserialize_cuda_engine(self, plan):
        return FakeEngine(self.trt)


class FakeLogger:
    def __init__(self):
        self.errors: list[str] = []

    def drain_errors(self):
        out, self.errors = self.errors, []
        return out


class FakeTensorRT:
    """Only what builders/engine.py uses, with TensorRT's names (checked by test_trt_api_names.py)."""

    def __init__(self, version: str, layers=FP32_ENGINE):
        self.__version__ = version
        self.NetworkDefinitionCreationFlag = _Flag
        self.ProfilingVerbosity = _Enum(DETAILED="DETAILED", LAYER_NAMES_ONLY="LAYER_NAMES_ONLY")
        self.MemoryPoolType = _Enum(WORKSPACE="WORKSPACE")
        self.LayerInformationFormat = _Enum(JSON="JSON", ONELINE="ONELINE")
        self.layers = layers
        self.plan: bytes | None = b"PLAN-BYTES" * 10
        self.parse_ok = True
        self.calls: list[tuple] = []
        self.logger = FakeLogger()
        self.network: FakeNetwork | None = None
        self.config: FakeConfig | None = None

    def Builder(self, logger):  # noqa: N802 - TensorRT's name
        return FakeBuilder(self, logger)

    def OnnxParser(self, network, logger):  # noqa: N802
        return FakeParser(self, network, logger)

    def Runtime(self, logger):  # noqa: N802
        return FakeRuntime(self, logger)


GPU = {"name": "NVIDIA H100 80GB HBM3", "compute_capability": "9.0", "driver": "12.4", "memory_mib": 81000, "device": 0}


@pytest.fixture(params=["10.16.1.11", "11.4.0.106"], ids=["trt10", "trt11"])
def fake_trt(request, monkeypatch) -> FakeTensorRT:
    trt = FakeTensorRT(request.param)
    monkeypatch.setattr(trt_support, "import_tensorrt", lambda: trt)
    monkeypatch.setattr(trt_support, "gpu_info", lambda device=0: dict(GPU, device=device))
    monkeypatch.setattr(trt_support, "set_device", lambda device: None)
    monkeypatch.setattr(trt_support, "trt_logger", lambda: trt.logger)
    return trt


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
    assert section["plan_sha256"] == sha256_file(plan) == manifest.files["model.plan"]["sha256"]
    assert section["tensorrt_version"] == fake_trt.__version__ == manifest.versions["tensorrt"]
    assert section["gpu_name"] == GPU["name"] and section["compute_capability"] == "9.0"
    assert section["profiles"] == [{"min": 1, "opt": 1, "max": 8}, {"min": 16, "opt": 64, "max": 256}]
    assert section["layer_precisions"] == {"total": 3, "fp32": 2, "other": 1}
    assert section["opt_level"] == 4 and section["workspace_mib"] == 512 and section["strongly_typed"] is True
    assert section["build_seconds"] >= 0
    assert section["timing_cache"]["reused"] is False
    assert Path(section["timing_cache"]["path"]).is_file()
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
    assert any("timing cache" in m and "new" in m for m in messages)


def test_second_build_reuses_the_timing_cache(fake_trt, artifact, tmp_path):
    cache = tmp_path / "my.cache"
    settings = eng.EngineBuildSettings(timing_cache=cache)
    first = eng.build_engine_into_artifact(artifact, settings)
    assert first["timing_cache"] == {"path": str(cache), "reused": False}
    assert cache.read_bytes() == b"|entries"
    messages: list[str] = []
    second = eng.build_engine_into_artifact(artifact, settings, progress=messages.append)
    assert second["timing_cache"] == {"path": str(cache), "reused": True}
    assert cache.read_bytes() == b"|entries|entries"  # loaded before, saved after
    assert any("reused" in m for m in messages)


def test_cache_from_another_gpu_is_replaced(fake_trt, artifact, tmp_path, caplog):
    cache = tmp_path / "other.cache"
    cache.write_bytes(b"other-gpu")
    section = eng.build_engine_into_artifact(artifact, eng.EngineBuildSettings(timing_cache=cache))
    assert section["timing_cache"]["reused"] is False
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
    assert section["timing_cache"]["reused"] is False and "unreadable" in caplog.text
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


def test_fp16_build_without_fp16_layers_fails_and_writes_nothing(fake_trt, tmp_path):
    art = write_tiny_artifact(tmp_path / "half", precision="fp16")
    fake_trt.layers = FAKE_FP16_ENGINE
    before = snapshot(art)
    with pytest.raises(eng.EngineBuildError, match="FP32 engine labelled FP16"):
        eng.build_engine_into_artifact(art, eng.EngineBuildSettings())
    assert snapshot(art) == before
    fake_trt.layers = FP16_ENGINE
    section = eng.build_engine_into_artifact(art, eng.EngineBuildSettings())
    assert section["layer_precisions"]["fp16"] == 4 and Manifest.read(art).precision == "fp16"


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
    """What trtinfer.load(dir, backend="tensorrt") returns, computing with ONNX Runtime (+ an error)."""

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
    import trtinfer.runtime

    state = {"error": 0.0, "calls": []}

    def load(directory, backend="auto", **options):
        state["calls"].append((Path(directory), backend, options))
        Manifest.read(directory).verify_files(directory)  # the staged plan is recorded before the run
        return FakeRuntimeModel(Path(directory), state["error"])

    monkeypatch.setattr(trtinfer.runtime, "load", load)
    return state


def test_finish_from_onnx_evaluates_before_committing(fake_trt, fake_runtime, artifact, tmp_path):
    messages: list[str] = []
    section = eng.finish_from_onnx(artifact, eng.EngineBuildSettings(device=0),
                                   eval_data=write_eval_npz(tmp_path / "eval.npz"), eval_samples=40,
                                   progress=messages.append)
    (directory, backend, options), = fake_runtime["calls"]
    assert backend == "tensorrt" and options == {"device": 0} and directory != artifact  # the staged copy
    result = Manifest.read(artifact).engine["evaluation"]
    assert result == section["evaluation"]
    assert result["samples"] == 40 and result["top1_agreement"] == 1.0 and result["passed"] is True
    assert result["max_drop_points"] == 0.5  # FP32 engines may use TF32: the FP16 allowance
    assert any("agreement 100.00%" in m for m in messages)


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
    assert section["evaluation"]["passed"] is False and section["evaluation"]["allowed"] is True
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


# ======================================================================================================
# GPU: real engines (pytest -m gpu)
# ======================================================================================================
AGREEMENT = 0.995
GPU_ARTIFACTS_ENV = "TRTINFER_TEST_ARTIFACTS"


@pytest.fixture(scope="session")
def trt_ready() -> None:
    reason = tensorrt_skip_reason()
    if reason:
        pytest.skip(reason)


def _train_small_cnn(cifar_dir: Path, seed: int = 0):
    """A small CIFAR-10 CNN trained for a minute: real, well-separated logits for agreement checks."""
    import torch
    from torch import nn

    from trtinfer.calibration.cifar import load_cifar

    torch.manual_seed(seed)
    train = load_cifar(cifar_dir, "train")
    x = torch.from_numpy(train.images).permute(0, 3, 1, 2).float().div(255).sub(0.5).div(0.5)
    y = torch.from_numpy(train.labels)
    model = nn.Sequential(
        nn.Conv2d(3, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, padding=1), nn.BatchNorm2d(64), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(64, 128, 3, padding=1), nn.BatchNorm2d(128), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(128, NUM_CLASSES))
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model.to(device)
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    for _ in range(8):
        for idx in torch.randperm(len(x)).split(128):
            xb, yb = x[idx].to(device), y[idx].to(device)
            xb = torch.where(torch.rand(len(xb), 1, 1, 1, device=device) < 0.5, xb, xb.flip(3))
            loss = nn.functional.cross_entropy(model(xb), yb)
            opt.zero_grad()
            loss.backward()
            opt.step()
    return model.eval().cpu()


def make_gpu_artifacts(root: Path, cifar_dir: Path) -> dict[str, Path]:
    """FP32, FP16 (ModelOpt AutoCast) and INT8 (ModelOpt Q/DQ) artifacts of one trained model."""
    import onnx
    import torch
    from modelopt.onnx.autocast import convert_to_mixed_precision
    from modelopt.onnx.quantization import quantize

    from trtinfer.calibration.cifar import load_cifar

    model = _train_small_cnn(cifar_dir)
    out: dict[str, Path] = {}
    fp32 = root / "fp32"
    fp32.mkdir(parents=True)
    torch.onnx.export(model, (torch.zeros(2, 3, 32, 32),), str(fp32 / "model.onnx"), input_names=["input"],
                      output_names=["logits"], dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
                      opset_version=17, dynamo=False)
    fp16 = root / "fp16"
    fp16.mkdir()
    onnx.save(convert_to_mixed_precision(str(fp32 / "model.onnx"), "fp16", keep_io_types=True),
              str(fp16 / "model.onnx"))
    int8 = root / "int8"
    int8.mkdir()
    calib = load_cifar(cifar_dir, "train").images[:512]
    calib = ((calib.transpose(0, 3, 1, 2).astype(np.float32) / 255) - 0.5) / 0.5
    quantize(str(fp32 / "model.onnx"), quantize_mode="int8", calibration_data=calib, calibration_eps=["cpu"],
             output_path=str(int8 / "model.onnx"), high_precision_dtype="fp32", log_level="WARNING")
    for precision, directory in (("fp32", fp32), ("fp16", fp16), ("int8", int8)):
        manifest = Manifest(name=f"cifar-cnn-{precision}", arch="test-cnn", num_classes=NUM_CLASSES,
                            labels=[str(i) for i in range(NUM_CLASSES)], precision=precision,
                            input=TensorSpec("input", [-1, 3, 32, 32]), output=TensorSpec("logits", [-1, NUM_CLASSES]),
                            preprocess=PreprocessSpec(input_size=32, resize=32, mean=[0.5] * 3, std=[0.5] * 3))
        manifest.record_file(directory, "model.onnx")
        manifest.write(directory)
        out[precision] = directory
    return out


@pytest.fixture(scope="session")
def gpu_artifacts(trt_ready, tmp_path_factory, cifar_dir) -> dict[str, Path]:
    """Artifacts from `trtinfer build` when TRTINFER_TEST_ARTIFACTS names a folder with fp32/ fp16/ int8/,
    else made here from a small CNN trained on the shared CIFAR-10 rows."""
    import shutil

    given = os.environ.get(GPU_ARTIFACTS_ENV)
    root = tmp_path_factory.mktemp("gpu-artifacts")
    if given:
        out = {}
        for precision in ("fp32", "fp16", "int8"):
            source = Path(given) / precision
            if not (source / "manifest.json").is_file():
                pytest.skip(f"{GPU_ARTIFACTS_ENV}={given} has no {precision}/manifest.json")
            out[precision] = Path(shutil.copytree(source, root / precision))
        return out
    return make_gpu_artifacts(root, cifar_dir)


def cifar_test_inputs(cifar_dir: Path) -> np.ndarray:
    from trtinfer.calibration.cifar import load_cifar

    images = load_cifar(cifar_dir, "test").images
    return (((images.transpose(0, 3, 1, 2).astype(np.float32) / 255) - 0.5) / 0.5).copy()


def run_onnxruntime(artifact: Path, x: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    session = ort.InferenceSession(str(artifact / "model.onnx"), providers=["CPUExecutionProvider"])
    return np.concatenate([session.run(["logits"], {"input": x[i:i + 256]})[0] for i in range(0, len(x), 256)])


def run_plan(artifact: Path, x: np.ndarray, chunk: int = 256) -> np.ndarray:
    """Execute model.plan directly (TensorRT + cuda-python): the engine stage's own check, independent of
    the runtime package."""
    from cuda.bindings import runtime as cudart

    from trtinfer.builders.profiles import profiles_from_manifest

    def ok(result):
        return trt_support.cuda_call(cudart, result, "CUDA")

    manifest = Manifest.read(artifact)
    profiles = profiles_from_manifest(manifest.engine["profiles"])
    trt = trt_support.import_tensorrt()
    runtime = trt.Runtime(trt_support.trt_logger())
    engine = runtime.deserialize_cuda_engine((artifact / "model.plan").read_bytes())
    assert engine is not None
    context = engine.create_execution_context()
    out_dtype = np.dtype(trt.nptype(engine.get_tensor_dtype("logits")))
    stream = ok(cudart.cudaStreamCreate())
    handle = int(stream)  # TensorRT takes the stream as an integer handle
    outputs = []
    try:
        for start in range(0, len(x), chunk):
            batch = np.ascontiguousarray(x[start:start + chunk], dtype=np.float32)
            index = select_profile(profiles, len(batch))
            assert index is not None, f"no profile holds batch {len(batch)}"
            context.set_optimization_profile_async(index, handle)
            context.set_input_shape("input", batch.shape)
            out = np.empty(tuple(context.get_tensor_shape("logits")), dtype=out_dtype)
            d_in = ok(cudart.cudaMalloc(batch.nbytes))
            d_out = ok(cudart.cudaMalloc(out.nbytes))
            try:
                ok(cudart.cudaMemcpyAsync(d_in, batch.ctypes.data, batch.nbytes,
                                          cudart.cudaMemcpyKind.cudaMemcpyHostToDevice, stream))
                context.set_tensor_address("input", d_in)
                context.set_tensor_address("logits", d_out)
                assert context.execute_async_v3(handle)
                ok(cudart.cudaMemcpyAsync(out.ctypes.data, d_out, out.nbytes,
                                          cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost, stream))
                ok(cudart.cudaStreamSynchronize(stream))
            finally:
                ok(cudart.cudaFree(d_in))
                ok(cudart.cudaFree(d_out))
            outputs.append(out.astype(np.float32))
    finally:
        ok(cudart.cudaStreamDestroy(stream))
    return np.concatenate(outputs)


@pytest.mark.gpu
@pytest.mark.slow
@pytest.mark.parametrize("precision", ["fp32", "fp16", "int8"])
def test_gpu_engine_matches_onnxruntime(precision, gpu_artifacts, cifar_dir, tmp_path):
    artifact = gpu_artifacts[precision]
    settings = eng.EngineBuildSettings(timing_cache=tmp_path / "timing.cache")
    section = eng.build_engine_into_artifact(artifact, settings)
    manifest = Manifest.read(artifact)
    manifest.verify_files(artifact)
    assert manifest.precision == precision
    layers = section["layer_precisions"]
    if precision != "fp32":
        assert layers.get(precision, 0) > 0, layers
    gpu = trt_support.gpu_info(settings.device)
    trt_support.check_plan_compatible(manifest, trt_support.trt_version(), gpu["name"], gpu["compute_capability"])

    x = cifar_test_inputs(cifar_dir)
    reference = run_onnxruntime(artifact, x)
    got = run_plan(artifact, x)
    assert got.shape == reference.shape
    agreement = float(np.mean(got.argmax(1) == reference.argmax(1)))
    print(f"{precision}: top-1 agreement with ONNX Runtime {agreement:.4f} on {len(x)} images; layers {layers}")
    assert agreement >= AGREEMENT


@pytest.mark.gpu
def test_gpu_timing_cache_is_reused(gpu_artifacts, tmp_path):
    artifact = gpu_artifacts["fp32"]
    settings = eng.EngineBuildSettings(profiles=parse_batch_profiles(["1:8:64"]), timing_cache=tmp_path / "t.cache")
    started = time.perf_counter()
    first = eng.build_engine_into_artifact(artifact, settings)
    first_s = time.perf_counter() - started
    started = time.perf_counter()
    second = eng.build_engine_into_artifact(artifact, settings)
    second_s = time.perf_counter() - started
    print(f"build without cache {first_s:.2f} s, with cache {second_s:.2f} s")
    assert first["timing_cache"]["reused"] is False
    assert second["timing_cache"]["reused"] is True
    assert (tmp_path / "t.cache").stat().st_size > 0


@pytest.mark.gpu
def test_gpu_several_profiles(gpu_artifacts, cifar_dir, tmp_path):
    artifact = gpu_artifacts["fp32"]
    settings = eng.EngineBuildSettings(profiles=parse_batch_profiles(["1:1:8", "16:64:256"]),
                                       timing_cache=tmp_path / "t.cache")
    eng.build_engine_into_artifact(artifact, settings)
    x = cifar_test_inputs(cifar_dir)[:40]
    reference = run_onnxruntime(artifact, x)
    small = run_plan(artifact, x, chunk=4)  # profile 0
    large = run_plan(artifact, x, chunk=20)  # profile 1
    np.testing.assert_allclose(small, reference, rtol=1e-2, atol=1e-2)
    np.testing.assert_allclose(large, reference, rtol=1e-2, atol=1e-2)


@pytest.mark.gpu
def test_gpu_mismatch_errors(gpu_artifacts, tmp_path):
    artifact = gpu_artifacts["fp32"]
    eng.build_engine_into_artifact(artifact, eng.EngineBuildSettings(timing_cache=tmp_path / "t.cache"))
    manifest = Manifest.read(artifact)
    gpu = trt_support.gpu_info()
    version = trt_support.trt_version()
    trt_support.check_plan_compatible(manifest, version, gpu["name"], gpu["compute_capability"])
    with pytest.raises(ArtifactError, match="--from-onnx"):
        trt_support.check_plan_compatible(manifest, version + ".other", gpu["name"], gpu["compute_capability"])
    with pytest.raises(ArtifactError, match="compute capability"):
        trt_support.check_plan_compatible(manifest, version, "Some Other GPU", "1.0")


@pytest.mark.gpu
def test_gpu_parser_error_names_the_node(trt_ready, tmp_path):
    import onnx
    from onnx import TensorProto, helper

    art = write_tiny_artifact(tmp_path / "bad")
    model = onnx.load(str(art / "model.onnx"))
    bogus = helper.make_node("NoSuchOperator", ["logits"], ["out2"], name="the_bad_node", domain="bogus.domain")
    model.graph.node.append(bogus)
    model.graph.output.append(helper.make_tensor_value_info("out2", TensorProto.FLOAT, None))
    model.opset_import.append(helper.make_opsetid("bogus.domain", 1))
    onnx.save(model, str(art / "model.onnx"))
    manifest = Manifest.read(art)
    manifest.record_file(art, "model.onnx")
    manifest.write(art)
    with pytest.raises(eng.EngineBuildError) as info:
        eng.build_engine_into_artifact(art, eng.EngineBuildSettings(timing_cache=tmp_path / "t.cache"))
    assert "the_bad_node" in info.value.one_line()


@pytest.mark.gpu
@pytest.mark.slow
def test_gpu_trtinfer_build_end_to_end(trt_ready, cifar_root, tmp_path):
    """`trtinfer build CHECKPOINT` on a GPU host runs the engine stage itself (--require-engine), and the
    runtime serves the result."""
    import torch
    import torchvision

    import trtinfer
    from trtinfer.builders.archs import apply_cifar_stem
    from trtinfer.cli import main

    torch.manual_seed(0)
    model = apply_cifar_stem(torchvision.models.resnet18(num_classes=NUM_CLASSES)).eval()
    checkpoint = tmp_path / "e2e.pth"
    torch.save(model.state_dict(), checkpoint)
    out = tmp_path / "artifacts"
    code = main(["build", str(checkpoint), "--precision", "fp32,fp16,int8", "--calib-data", str(cifar_root),
                 "--calib-samples", "64", "-o", str(out), "--require-engine", "--batch", "1:8:64",
                 "--timing-cache", str(tmp_path / "t.cache")])
    assert code == 0
    x = cifar_test_inputs(cifar_root / "cifar-10-batches-py")[:32]
    for precision in ("fp32", "fp16", "int8"):
        artifact = out / f"e2e-{precision}"
        manifest = Manifest.read(artifact)
        manifest.verify_files(artifact)
        assert manifest.engine["profiles"] == [{"min": 1, "opt": 8, "max": 64}]
        if precision != "fp32":
            assert manifest.engine["layer_precisions"].get(precision, 0) > 0
        with trtinfer.load(artifact, backend="tensorrt") as served:
            logits = np.asarray(served.infer(x))
        assert logits.shape == (32, NUM_CLASSES) and np.isfinite(logits).all()
