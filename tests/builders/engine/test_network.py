"""builders/engine/network.py's decisions that need no GPU: the network flags of TensorRT 10 and 11, parser
errors naming the node, TensorRT data type names."""

from __future__ import annotations

from pathlib import Path

from fakes.tensorrt_build import FakeParserError, _Flag
from trtinfer.builders.engine.network import format_parser_error, network_creation_flags, parser_failure, trt_dtype_name


def test_strongly_typed_on_10_and_default_on_11():
    trt10 = type("trt", (), {"__version__": "10.16.1.11", "NetworkDefinitionCreationFlag": _Flag})
    trt11 = type("trt", (), {"__version__": "11.4.0.106", "NetworkDefinitionCreationFlag": _Flag})
    assert network_creation_flags(trt10) == 1 << 0
    assert network_creation_flags(trt11) == 0


def test_parser_errors_name_the_node():
    text = format_parser_error(FakeParserError())
    assert text == "node 7 '/layer1/conv/Conv' (Conv): Assertion failed: kernel shape unsupported"
    assert format_parser_error(FakeParserError(node=-1, name="", op="")) == \
        "Assertion failed: kernel shape unsupported"
    error = parser_failure(Path("a/model.onnx"), [text, "second"])
    line = error.one_line()
    assert "\n" not in line
    assert "model.onnx at node 7 '/layer1/conv/Conv' (Conv)" in line and "+1 more" in line


def test_trt_dtype_names():
    assert trt_dtype_name(type("D", (), {"name": "FLOAT"})()) == "float32"
    assert trt_dtype_name("DataType.HALF") == "float16"
