"""The precision tools' registry: a converter (FP16) or quantizer (INT8) registered by name per precision.

Another quantizer is added with :func:`register` without touching the build pipeline; :mod:`.tools`
imports every tool trtinfer ships (ModelOpt's :mod:`.modelopt`, NNCF's :mod:`.nncf_int8`) and looks
them up. Each returns a small dict of facts for the artifact manifest.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from trtinfer.versions import package_version

DEFAULT_TOOLS = {"fp16": "modelopt-autocast", "int8": "modelopt-int8"}


@dataclass(frozen=True)
class PrecisionTool:
    """A converter (fp16) or quantizer (int8): ``run(onnx_in, onnx_out, calibration=None, **options) -> facts``."""

    name: str
    precision: str
    needs_calibration: bool
    run: Callable[..., dict[str, Any]]
    description: str = ""
    library: str = "nvidia-modelopt"  # the distribution it needs (doctor says whether it is installed)
    methods: tuple[str, ...] = ()  # calibration methods the build tries in turn; the first is the tool's default

    @property
    def available(self) -> bool:
        return package_version(self.library) is not None


TOOLS: dict[str, PrecisionTool] = {}


def register(name: str, precision: str, needs_calibration: bool = False, description: str = "",
             library: str = "nvidia-modelopt", methods: tuple[str, ...] = ()
             ) -> Callable[[Callable[..., dict[str, Any]]], Callable[..., dict[str, Any]]]:
    """Decorator: make ``fn(onnx_in, onnx_out, calibration=None, **options)`` a tool for ``precision``.

    A quantizer with ``methods`` takes ``method=`` and ``nodes_to_exclude=`` (ONNX node names kept
    in float): the build tries each method and falls back layer by layer through them.
    """
    def wrap(fn: Callable[..., dict[str, Any]]) -> Callable[..., dict[str, Any]]:
        TOOLS[name] = PrecisionTool(name, precision, needs_calibration, fn, description, library, methods)
        return fn
    return wrap
