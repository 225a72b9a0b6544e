"""A stand-in for the ``tensorrt`` module's build side (Builder, network, ONNX parser, config, timing
cache, runtime, engine inspector), shaped like TensorRT 10 and 11.

It checks *our* ordering and control flow in builders/engine/ on a CPU host: what we ask of
TensorRT and what we do with its answers. It says nothing about TensorRT itself; the names we call
are checked against the real TensorRT 10 and 11 bindings by tests/test_trt_api_names.py, and the
real build runs only in the ``gpu`` tests.

Its public names are TensorRT's, of the version it claims, except the state its tests read, which
each class declares in ``_STATE`` (tests/runtime/test_fakes_strict.py checks the rest against the
bindings of that version).
"""

from __future__ import annotations

import json
from typing import Any

from trtinfer.runtime.backends.tensorrt import devices
from trtinfer.runtime.backends.tensorrt import loader as tensorrt_loader

GPU = {"name": "NVIDIA H100 80GB HBM3", "compute_capability": "9.0", "driver": "12.4", "memory_mib": 81000, "device": 0}


class _Flag:
    STRONGLY_TYPED = 0


#: The key TensorRT 11's inspector puts a layer tensor's type under. No host here can print one; TensorRT
#: 11 split TensorRT 10's "Format/Datatype" (10.x-to-11.x migration guide), and NVIDIA's TensorRT 11.1
#: trt-perf-analysis schema gives layer tensors "Datatype" and "Format", so the TensorRT 11 form carries
#: the type there alone, beside a layout-only "Format" (our reader must find it by name, not by the
#: TensorRT 10 spelling). The guide's own "I/O Tensors" example spells it "DataType".
TRT11_TYPE_KEY = "Datatype"
TRT11_IO_TYPE_KEY = "DataType"
DYNAMIC_UNKNOWN = "N/A due to dynamic shapes"


def _io(kind: str, trt11: bool, dynamic_unknown: bool = False, type_key: str = TRT11_TYPE_KEY) -> dict[str, Any]:
    words = {"fp32": ("Row major linear FP32 format", "Float"), "fp16": ("Channel major FP16 format", "Half"),
             "int8": ("Thirty-two wide channel vectorized row major Int8 format", "Int8"),
             "int32": ("Row major linear Int32 format", "Int32")}[kind]
    tensor = {"Name": "t", "Location": "Device", "Dimensions": [-1 if dynamic_unknown else 1]}
    if dynamic_unknown:  # what the inspector prints without an execution context (both versions)
        return {**tensor, ("Format" if trt11 else "Format/Datatype"): DYNAMIC_UNKNOWN}
    if trt11:
        layout = words[0].replace(" FP32", "").replace(" FP16", "").replace(" Int8", "").replace(" Int32", "")
        return {**tensor, "Format": layout, type_key: words[1]}
    return {**tensor, "Format/Datatype": words[0]}


def inspector_json(layers: list[tuple[str, str, str]], trt11: bool = False, dynamic_unknown: bool = False,
                   type_key: str = TRT11_TYPE_KEY) -> str:
    """Engine-inspector JSON (DETAILED) with layers given as (LayerType, input precision, output precision)."""
    body = [{"Name": f"layer{i}", "LayerType": kind, "Inputs": [_io(a, trt11, dynamic_unknown, type_key)],
             "Outputs": [_io(b, trt11, dynamic_unknown, type_key)], "TacticName": "x"}
            for i, (kind, a, b) in enumerate(layers)]
    data: dict[str, Any] = {"Layers": body}
    if trt11:
        data["I/O Tensors"] = [{"Name": "input", "IOMode": "Input", TRT11_IO_TYPE_KEY: "Float"}]
    else:
        data["Bindings"] = ["input", "logits"]
    return json.dumps(data)


FP16_ENGINE = [("Reformat", "fp32", "fp16"), ("CaskConvolution", "fp16", "fp16"), ("CaskGemmMatrixMultiply", "fp16", "fp16"),
               ("Reformat", "fp16", "fp32")]
FP32_ENGINE = [("CaskConvolution", "fp32", "fp32"), ("CaskPooling", "fp32", "fp32"), ("Shape", "int32", "int32")]
INT8_ENGINE = [("Reformat", "fp32", "int8"), ("CaskConvolution", "int8", "int8"), ("CaskConvolution", "int8", "fp32")]
# A cast to FP16 around FP32 convolutions: what a mislabelled "FP16" engine looks like.
FAKE_FP16_ENGINE = [("Reformat", "fp32", "fp16"), ("CaskConvolution", "fp32", "fp32"), ("Reformat", "fp16", "fp32")]


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


class _Enum:
    def __init__(self, **members):
        self.__dict__.update(members)


class FakeDims(list):
    pass


class FakeTensor:
    def __init__(self, name, shape, dtype="FLOAT"):
        self.name, self.shape, self.dtype = name, FakeDims(shape), type("DataType", (), {"name": dtype})()


class FakeNetwork:
    _STATE = frozenset({"flags", "inputs"})

    def __init__(self, flags):
        self.flags = flags
        self.inputs: list[FakeTensor] = []

    @property
    def num_inputs(self):
        return len(self.inputs)

    def get_input(self, i):
        return self.inputs[i]


class FakeParser:
    _STATE = frozenset({"trt", "network", "errors"})

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
    _STATE = frozenset({"shapes"})

    def __init__(self):
        self.shapes = {}

    def set_shape(self, name, mn, opt, mx):
        self.shapes[name] = (tuple(mn), tuple(opt), tuple(mx))


class FakeCache:
    _STATE = frozenset({"data"})

    def __init__(self, data: bytes):
        self.data = bytes(data)

    def serialize(self):
        return memoryview(self.data + b"|entries")


class FakeConfig:
    _STATE = frozenset({"trt", "pool_limits", "profiles", "cache", "flags_set"})

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
    _STATE = frozenset({"trt"})

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


class FakeBuildContext:
    _STATE = frozenset({"shapes"})

    def __init__(self) -> None:
        self.shapes: dict[str, tuple] = {}

    def set_input_shape(self, name, shape) -> bool:
        self.shapes[name] = tuple(shape)
        return True


class FakeInspector:
    """``IEngineInspector``: with a dynamic batch and no execution context whose input shapes are set,
    every tensor's type reads "N/A due to dynamic shapes", as TensorRT prints it."""

    _STATE = frozenset({"trt"})

    def __init__(self, trt):
        self.trt = trt
        self.execution_context = None

    def get_engine_information(self, fmt):
        assert fmt == "JSON"
        context = self.execution_context
        known = context is not None and "input" in context.shapes
        return inspector_json(self.trt.layers, trt11=self.trt.__version__.startswith("11"),
                              dynamic_unknown=not known)


class FakeEngine:
    _STATE = frozenset({"trt"})

    def __init__(self, trt):
        self.trt = trt

    def create_engine_inspector(self):
        return FakeInspector(self.trt)

    def create_execution_context(self):
        self.trt.contexts.append(FakeBuildContext())
        return self.trt.contexts[-1]


class FakeRuntime:
    _STATE = frozenset({"trt"})

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
    """Only what builders/engine/ uses, with TensorRT's names (checked by test_trt_api_names.py)."""

    _STATE = frozenset({"layers", "plan", "parse_ok", "calls", "logger", "network", "config", "contexts"})

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
        self.contexts: list[FakeBuildContext] = []

    def Builder(self, logger):  # noqa: N802 - TensorRT's name
        return FakeBuilder(self, logger)

    def OnnxParser(self, network, logger):  # noqa: N802
        return FakeParser(self, network, logger)

    def Runtime(self, logger):  # noqa: N802
        return FakeRuntime(self, logger)


def install(monkeypatch, version: str) -> FakeTensorRT:
    """Patch builders/engine/'s TensorRT and CUDA onto the stand-in; returns it for inspection."""
    trt = FakeTensorRT(version)
    monkeypatch.setattr(tensorrt_loader, "import_tensorrt", lambda: trt)
    monkeypatch.setattr(devices, "gpu_info", lambda device=0: dict(GPU, device=device))
    monkeypatch.setattr(devices, "set_device", lambda device: None)
    monkeypatch.setattr(tensorrt_loader, "trt_logger", lambda: trt.logger)
    return trt
