"""Versions of the libraries that shape an artifact, read from package metadata (nothing imported)."""

from __future__ import annotations

import importlib.util
import platform
from importlib import metadata

TRACKED = ("trtinfer", "numpy", "torch", "torchvision", "onnx", "onnxscript", "onnxruntime", "onnxruntime-gpu",
           "nvidia-modelopt", "tensorrt", "tensorrt-cu12", "tensorrt-cu13", "cuda-python", "cuda-bindings",
           "openvino")


def package_version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def require_package(name: str, message: str, hint: str = "pip install 'trtinfer[build]'") -> str:
    """The installed version of ``name``; BackendUnavailable(``message``, ``hint``) when it is not installed."""
    from .errors import BackendUnavailable

    version = package_version(name)
    if version is None:
        raise BackendUnavailable(message, hint=hint)
    return version


def module_available(name: str) -> bool:
    """Whether ``import name`` would find a module, without importing it (heavy libraries stay unloaded)."""
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def library_versions(names: tuple[str, ...] = TRACKED) -> dict[str, str]:
    found = {name: package_version(name) for name in names}
    out = {"python": platform.python_version()}
    out.update({k: v for k, v in found.items() if v is not None})
    return out
