"""The precision each layer of a built engine computes in, read from the engine inspector's JSON, and the
rule an FP16 or INT8 build must meet: an engine whose layers hold no FP16 or INT8 work fails instead of
shipping an FP32 engine. Plain functions, tested on any host.
"""

from __future__ import annotations

import collections
import json
import re
from dataclasses import dataclass
from typing import Any

from .settings import EngineBuildError

# Words in the inspector's type descriptions -> precision classes. TensorRT 10 writes
# "Format/Datatype": "Row major linear FP16 format" (or "Half" for kgen layers). TensorRT 11 split that
# field (its 10.x-to-11.x migration guide, IEngineInspector JSON Output): its "I/O Tensors" say "DataType",
# while NVIDIA's TensorRT 11.1 trt-perf-analysis tooling reads layer tensors' "Datatype" beside "Format".
# No host here can print one, so any key whose letters, lowercased, hold "datatype" or are "format" is
# read, the data type first: see _tensor_type.
_TYPE_WORDS = {
    "int4": "int4", "fp4": "fp4", "int8": "int8", "fp8": "fp8", "e4m3": "fp8",
    "half": "fp16", "fp16": "fp16", "bf16": "bf16", "bfloat16": "bf16", "float": "fp32", "fp32": "fp32",
    "float32": "fp32", "int32": "int32", "int64": "int64", "bool": "bool", "uint8": "uint8",
}


# Lowest precision first: a layer reading INT8 and writing FP16 is an INT8 layer.
_FLOAT_ORDER = ("int4", "fp4", "int8", "fp8", "fp16", "bf16", "fp32")


_COMPUTE_LAYER = re.compile(r"conv|matrixmultiply|gemm|fullyconnected|matmul", re.IGNORECASE)


# The floor each requested precision must show in the engine that came out.
REQUIRED_LAYER_PRECISION = {"fp16": "fp16", "int8": "int8"}


def tensor_precision(description: Any) -> str | None:
    """``"Row major linear FP16 format"`` -> ``"fp16"``; ``"Half"`` -> ``"fp16"``; unknown -> None."""
    for word in re.findall(r"[a-z0-9]+", str(description or "").lower()):
        if word in _TYPE_WORDS:
            return _TYPE_WORDS[word]
    return None


def _letters(key: Any) -> str:
    return re.sub(r"[^a-z]", "", str(key).lower())


def _type_key(key: Any) -> bool:
    """``Format/Datatype``, ``Datatype``, ``DataType``, ``data_type``, ``Format``: keys that hold a tensor's type."""
    letters = _letters(key)
    return "datatype" in letters or letters in ("format", "type", "dtype")


def _tensor_type(record: Any) -> str | None:
    """A tensor's precision from whichever type key the inspector used; None when it says none
    (``"N/A due to dynamic shapes"`` without an execution context). A key naming the data type is
    read before a format key, whose layout text may also name a type."""
    if not isinstance(record, dict):
        return None
    keys = sorted((k for k in record if _type_key(k)), key=lambda k: "datatype" not in _letters(k))
    for key in keys:
        found = tensor_precision(record[key])
        if found:
            return found
    return None


def layer_precision(layer: Any) -> str:
    """The precision a layer computes in, from its tensors' types (``"unknown"`` without detail)."""
    if not isinstance(layer, dict):
        return "unknown"
    types = {_tensor_type(t) for key in ("Inputs", "Outputs") for t in (layer.get(key) or [])}
    weights = layer.get("Weights")
    if isinstance(weights, dict):
        types.add(tensor_precision(weights.get("Type")))
    types.discard(None)
    for precision in _FLOAT_ORDER:
        if precision in types:
            return precision
    return "other" if types else "unknown"


def is_compute_layer(layer: Any) -> bool:
    if not isinstance(layer, dict):
        return False
    kind = f"{layer.get('LayerType', '')} {layer.get('ParameterType', '')}"
    return bool(_COMPUTE_LAYER.search(kind))


@dataclass
class LayerSummary:
    total: int
    precisions: dict[str, int]
    compute_precisions: dict[str, int]

    def to_manifest(self) -> dict[str, Any]:
        return {"total": self.total, **self.precisions}


def summarize_layers(engine_information: str | dict | list) -> LayerSummary:
    """Count layers per precision from ``IEngineInspector.get_engine_information(JSON)``.

    Accepts TensorRT 10's and 11's JSON (11 replaced "Bindings" with "I/O Tensors" and split
    "Format/Datatype"; "Layers" is in both).
    """
    data = engine_information
    if isinstance(data, (str, bytes)):
        try:
            data = json.loads(data)
        except json.JSONDecodeError as exc:
            raise EngineBuildError(f"the engine inspector's output is not JSON ({exc})",
                                   hint="report this with `trtinfer doctor --json`") from exc
    layers = data.get("Layers", []) if isinstance(data, dict) else data
    if not isinstance(layers, list):
        raise EngineBuildError("the engine inspector's output has no layer list",
                               hint="report this with `trtinfer doctor --json`")
    counts: collections.Counter[str] = collections.Counter()
    compute: collections.Counter[str] = collections.Counter()
    for layer in layers:
        precision = layer_precision(layer)
        counts[precision] += 1
        if is_compute_layer(layer):
            compute[precision] += 1
    return LayerSummary(total=len(layers), precisions=dict(sorted(counts.items())),
                        compute_precisions=dict(sorted(compute.items())))


def check_engine_precision(requested: str, summary: LayerSummary) -> None:
    """An FP16 (INT8) build must contain FP16 (INT8) work; check what was built, not what was asked.

    Where the inspector shows convolution/matrix layers, those are what must run in the requested
    precision; otherwise any layer will do.
    """
    want = REQUIRED_LAYER_PRECISION.get(requested)
    if want is None:
        return
    known = summary.total - summary.precisions.get("unknown", 0)
    if summary.total == 0 or known == 0:
        raise EngineBuildError(f"cannot verify the {requested.upper()} engine: the engine inspector reported no "
                               "per-layer types", hint="report this with `trtinfer doctor --json`")
    pool = summary.compute_precisions if sum(summary.compute_precisions.values()) else summary.precisions
    if pool.get(want, 0) == 0:
        seen = ", ".join(f"{n} {p}" for p, n in sorted(pool.items())) or "none"
        raise EngineBuildError(
            f"the {requested.upper()} build produced an engine with no {want.upper()} layers ({seen}); "
            f"it would be an FP32 engine labelled {requested.upper()}",
            hint=f"check that model.onnx really holds {want.upper()} tensors (`trtinfer inspect`) and rebuild "
                 "the artifact with `trtinfer build`")
