"""trtinfer: fast inference for fine-tuned torchvision classifiers.

Importing this package needs only numpy: backends (TensorRT, CUDA, ONNX Runtime, OpenVINO) and
the build tooling (torch, ModelOpt) are imported when first used.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ._version import __version__
from .errors import (AccuracyError, ArtifactError, BackendUnavailable, CheckpointError, DataError,
                     InternalError, OverloadedError, TrtInferError, ValidationError)
from .manifest import Manifest

__all__ = [
    "__version__", "load", "Manifest", "TrtInferError", "ArtifactError", "CheckpointError", "DataError",
    "ValidationError", "AccuracyError", "BackendUnavailable", "OverloadedError", "InternalError",
]


def load(artifact_dir: str | Path, backend: str = "auto", **options: Any) -> Any:
    """Open an artifact directory for inference; see :func:`trtinfer.runtime.load`."""
    from .runtime import load as _load

    return _load(artifact_dir, backend=backend, **options)
