"""builders/precision/tools.py and registry.py: tools found by precision and name; another one registers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from trtinfer.builders.precision import registry, tools
from trtinfer.errors import DataError


def test_registry_is_pluggable(tmp_path: Path):
    calls = []

    @registry.register("test-copy-int8", "int8", needs_calibration=True, description="copies its input")
    def copy_tool(onnx_in, onnx_out, calibration=None, **options):
        calls.append((Path(onnx_in), Path(onnx_out), len(calibration), options))
        return {"tool": "copy"}

    try:
        assert "test-copy-int8" in [t.name for t in tools.tools("int8")]
        facts = tools.reduce_precision("int8", "in.onnx", tmp_path / "out.onnx", np.zeros((2, 3, 8, 8), np.float32),
                                           tool="test-copy-int8", method="max")
        assert facts["tool"] == "copy" and "seconds" in facts
        assert calls == [(Path("in.onnx"), tmp_path / "out.onnx", 2, {"method": "max"})]
    finally:
        registry.TOOLS.pop("test-copy-int8")
    assert tools.get_tool("fp16").name == "modelopt-autocast"
    assert tools.get_tool("int8").name == "modelopt-int8"
    with pytest.raises(DataError, match="no int8 tool named 'nncf'"):
        tools.get_tool("int8", "nncf")
    with pytest.raises(DataError, match="no fp16 tool"):
        tools.get_tool("fp16", "modelopt-int8")  # a tool of another precision
    assert {t["name"] for t in tools.describe_tools()} >= {"modelopt-autocast", "modelopt-int8"}
