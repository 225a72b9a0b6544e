"""The runtime: one API over TensorRT (GPU) and ONNX Runtime / OpenVINO (CPU), with dynamic batching.

``trtinfer.load(ARTIFACT_DIR)`` returns a :class:`Model`: ``infer`` (float32 NCHW batches of any
size), ``predict`` (images -> labels), ``submit``/``infer_async`` (through the dynamic batcher),
``stats()`` and ``close()``. Importing this package needs only numpy: each backend imports its
library when it is loaded, and nothing here imports torch or ModelOpt.
"""

from __future__ import annotations

from .batcher import DynamicBatcher, ModelClosedError, RequestTimeout
from .loader import choose_backend, load
from .model import Model, top_k_labels
from .options import BACKENDS, RuntimeOptions
from .stats import StatsSnapshot

__all__ = [
    "load", "Model", "RuntimeOptions", "StatsSnapshot", "DynamicBatcher", "RequestTimeout", "ModelClosedError",
    "BACKENDS", "choose_backend", "top_k_labels",
]
