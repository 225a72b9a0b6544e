"""The precision tools trtinfer ships, each registered, found by precision and name, and run.

Importing this module registers ModelOpt's FP16 and INT8 tools (:mod:`.modelopt`) and NNCF's INT8
(:mod:`.nncf_int8`) in :mod:`.registry`.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from trtinfer.errors import DataError

from . import modelopt, nncf_int8  # noqa: F401  each registers its tools on import
from .registry import DEFAULT_TOOLS, TOOLS, PrecisionTool


def tools(precision: str | None = None) -> list[PrecisionTool]:
    return [t for t in TOOLS.values() if precision is None or t.precision == precision]


def get_tool(precision: str, name: str | None = None) -> PrecisionTool:
    name = name or DEFAULT_TOOLS.get(precision)
    tool = TOOLS.get(name or "")
    if tool is None or tool.precision != precision:
        known = ", ".join(t.name for t in tools(precision)) or "none"
        raise DataError(f"no {precision} tool named {name!r}", hint=f"{precision} tools: {known}")
    return tool


def reduce_precision(precision: str, onnx_in: str | Path, onnx_out: str | Path,
                     calibration: np.ndarray | None = None, tool: str | None = None, **options: Any) -> dict[str, Any]:
    """Run the registered tool for ``precision``; facts for the manifest, with the wall time."""
    chosen = get_tool(precision, tool)
    if chosen.needs_calibration and calibration is None:
        raise DataError(f"{precision} needs calibration data",
                        hint="pass --calib-data DIR (images) or --calib-set calib.npz")
    start = time.perf_counter()
    facts = chosen.run(Path(onnx_in), Path(onnx_out), calibration=calibration, **options)
    facts["seconds"] = round(time.perf_counter() - start, 2)
    return facts


def describe_tools() -> list[dict[str, Any]]:
    """For ``trtinfer doctor``: the registered tools and whether their library is installed."""
    return [{"name": t.name, "precision": t.precision, "calibration": t.needs_calibration, "available": t.available,
             "methods": list(t.methods), "description": t.description} for t in TOOLS.values()]
