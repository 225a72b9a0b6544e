"""Optional extras (safetensors, transformers, timm), imported when a checkpoint needs them."""

from __future__ import annotations

import importlib
from types import ModuleType

from trtinfer.errors import BackendUnavailable


def require(module: str, extra: str, what: str) -> ModuleType:
    """Import an optional extra, or say in one line how to install it."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise BackendUnavailable(f"{what} needs the {module.partition('.')[0]} package, which is not installed",
                                 hint=f'pip install "trtinfer[{extra}]"') from None
