"""The TensorRT build stand-in, installed for the engine tests that build."""

from __future__ import annotations

import pytest

from fakes import tensorrt_build
from fakes.tensorrt_build import FakeTensorRT


@pytest.fixture(params=["10.16.1.11", "11.4.0.106"], ids=["trt10", "trt11"])
def fake_trt(request, monkeypatch) -> FakeTensorRT:
    return tensorrt_build.install(monkeypatch, request.param)
