"""Where an artifact is meant to run (``--target cpu|gpu``) and which INT8 quantizer serves it.

The two deployments want different INT8 graphs: TensorRT fuses ModelOpt's Q/DQ placement, while
OpenVINO's CPU kernels run NNCF's placement faster (1.15x on ResNet-18 at batch 32, one
AVX-512 VNNI host) with the same accuracy. ``--quantizer auto`` therefore follows the target, and
the target defaults to where this build can make an engine: ``gpu`` when TensorRT and a GPU are
present, else ``cpu``.
"""

from __future__ import annotations

from trtinfer.defaults import QUANTIZERS
from trtinfer.manifest import TARGETS
from trtinfer.errors import DataError

from .registry import PrecisionTool
from .tools import get_tool

_TOOL_NAMES = {"modelopt": "modelopt-int8", "nncf": "nncf-int8"}


def default_target() -> tuple[str, str]:
    """(target, why) when ``--target`` is not given."""
    from trtinfer.runtime.backends.tensorrt import loader as tensorrt_loader

    ok, why = tensorrt_loader.tensorrt_available(0)
    if ok:
        return "gpu", f"TensorRT and a GPU are present ({why})"
    return "cpu", f"no TensorRT engine can be built here ({why})"


def resolve_target(target: str | None) -> tuple[str, str]:
    if target is None:
        return default_target()
    if target not in TARGETS:
        raise DataError(f"unknown --target {target!r}", hint=f"use one of {', '.join(TARGETS)}")
    return target, "given"


def int8_tool(quantizer: str, target: str) -> tuple[PrecisionTool, str]:
    """The INT8 quantizer for ``target`` (``auto``) or the one named, and why."""
    if quantizer not in QUANTIZERS:
        raise DataError(f"unknown --quantizer {quantizer!r}", hint=f"use one of {', '.join(QUANTIZERS)}")
    if quantizer != "auto":
        tool = get_tool("int8", _TOOL_NAMES[quantizer])
        if target == "gpu" and quantizer == "nncf":
            raise DataError("--quantizer nncf makes Q/DQ placed for OpenVINO's CPU kernels, not for TensorRT",
                            hint="use --quantizer modelopt (or auto) with --target gpu")
        return tool, "given"
    if target == "gpu":
        return get_tool("int8", "modelopt-int8"), "auto: ModelOpt's Q/DQ is the graph TensorRT fuses"
    nncf = get_tool("int8", "nncf-int8")
    if nncf.available:
        return nncf, "auto: NNCF places Q/DQ where OpenVINO's CPU kernels run INT8"
    return get_tool("int8", "modelopt-int8"), ("auto: NNCF is not installed (pip install 'trtinfer[build]'), "
                                               "so ModelOpt; OpenVINO runs its Q/DQ about 15 % slower")


__all__ = ["TARGETS", "QUANTIZERS", "default_target", "resolve_target", "int8_tool"]
