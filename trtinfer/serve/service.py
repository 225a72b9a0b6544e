"""What serving means, with no transport in it: the shared server state, model lookup, the protocol's
metadata and configuration documents, and inference from parsed tensors. The limits are said once in
``options.py``; the table from a failure to its HTTP status and gRPC code is ``failures.py``.

``app.py`` (HTTP) and ``grpc_service.py`` (gRPC) move bytes and call this module; neither imports the
other.
"""

from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .._version import __version__
from . import protocol
from .failures import SHUTTING_DOWN, Failure, ServeError, failure  # noqa: F401 -- the transports' one import
from .images import PixelBudget, images_to_tensor, pixel_budget
from .metrics import Metrics
from .protocol import ProtocolError
from .options import Limits
from .registry import IMAGE_SUFFIX, VERSION, ModelSet, ServedModel
from .statistics import Statistics

log = logging.getLogger(__name__)

IMAGE_INPUT = "image"
EXTENSIONS = ("classification", "binary_tensor_data", "model_configuration", "statistics", "schedule_policy")


# -- the state every transport shares -------------------------------------------------------------------------
@dataclass
class ServerState:
    """The models, their metrics and statistics, the limits, and the drain."""

    models: ModelSet
    metrics: Metrics
    limits: Limits = field(default_factory=Limits)
    statistics: Statistics = field(init=False)
    decode_budget: PixelBudget = field(init=False)  # decoded pixels in flight, over all requests
    draining: bool = False   # readiness answers 503 (set on the first SIGTERM, before the listeners close)
    refusing: bool = False   # new requests are refused (after the drain delay)
    inflight: int = 0        # HTTP and gRPC requests being served (the drain waits for 0)
    started: float = field(default_factory=time.monotonic)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def __post_init__(self) -> None:
        self.statistics = Statistics(self.models)
        self.decode_budget = pixel_budget(self.limits)
        self.metrics.triton_collector(self.statistics)  # Triton's names on the metrics port, read from these

    def ready(self) -> bool:
        return not self.draining and self.models.ready()

    def enter(self) -> None:
        with self._lock:
            self.inflight += 1

    def leave(self) -> None:
        with self._lock:
            self.inflight -= 1

    def check_accepting(self) -> None:
        if self.refusing:
            raise ServeError(503, SHUTTING_DOWN, {"Retry-After": "5", "Connection": "close"})

    def metric_name(self, name: str) -> str:
        """The model label for metrics: a served name, or one value for every unknown one."""
        return name if self.models.find(name) is not None else "unknown"


def find(state: ServerState, name: str, version: str | None = None) -> tuple[ServedModel, bool]:
    """The model a protocol name means and whether it is the image twin; 404 when unknown."""
    found = state.models.find(name)
    if found is None:
        raise ServeError(404, f"unknown model {name!r}; this server has {', '.join(state.models.names())}")
    if version not in (None, "", VERSION):
        raise ServeError(404, f"model {name!r} has no version {version!r} (it has {VERSION})")
    return found


def model_ready(state: ServerState, name: str, version: str | None = None) -> bool:
    """The same answer on every transport: False for an unknown model or version, or while draining."""
    try:
        served, _ = find(state, name, version)
    except ServeError:
        return False
    return served.ready.is_set() and not state.draining


# -- protocol documents ------------------------------------------------------------------------------------
def server_metadata() -> dict[str, Any]:
    return {"name": "trtinfer", "version": __version__, "extensions": list(EXTENSIONS)}


def _platform(served: ServedModel) -> str:
    return {"tensorrt": "tensorrt_plan", "onnxruntime": "onnxruntime_onnx", "openvino": "openvino"}.get(
        served.model.backend, served.model.backend)


def model_metadata(served: ServedModel, image: bool) -> dict[str, Any]:
    m = served.manifest
    name = served.name + (IMAGE_SUFFIX if image else "")
    inputs = [{"name": IMAGE_INPUT, "datatype": "BYTES", "shape": [-1, 1]}] if image else \
        [{"name": m.input.name, "datatype": "FP32", "shape": [-1, *served.model.row_shape]}]
    return {"name": name, "versions": [VERSION], "platform": _platform(served), "inputs": inputs,
            "outputs": [{"name": m.output.name, "datatype": "FP32", "shape": [-1, m.num_classes]}]}


def model_config(served: ServedModel, image: bool) -> dict[str, Any]:
    """Triton's model-configuration extension (the JSON form of its ModelConfig)."""
    m, model = served.manifest, served.model
    inputs = [{"name": IMAGE_INPUT, "data_type": "TYPE_STRING", "dims": [1]}] if image else \
        [{"name": m.input.name, "data_type": "TYPE_FP32", "format": "FORMAT_NCHW", "dims": list(model.row_shape)}]
    return {
        "name": served.name + (IMAGE_SUFFIX if image else ""), "platform": _platform(served),
        "backend": model.backend, "max_batch_size": int(model.max_batch), "input": inputs,
        "output": [{"name": m.output.name, "data_type": "TYPE_FP32", "dims": [m.num_classes]}],
        "dynamic_batching": {"max_queue_delay_microseconds": int(model.options.max_delay_ms * 1000)},
        "instance_group": [{"count": int(model.concurrency),
                            "kind": "KIND_GPU" if model.backend == "tensorrt" else "KIND_CPU"}],
        "parameters": {"precision": {"string_value": m.precision}, "arch": {"string_value": m.arch}},
    }


# -- inference from parsed tensors ----------------------------------------------------------------------------
def input_tensor(served: ServedModel, image: bool, parsed: protocol.InferRequest) -> np.ndarray | list[bytes]:
    """The request's one input, checked against the model: the FP32 batch, or (``<name>_image``) the
    encoded images to decode."""
    expected = IMAGE_INPUT if image else served.manifest.input.name
    if len(parsed.inputs) != 1 or parsed.inputs[0].name != expected:
        raise ProtocolError(f"the model takes one input named {expected!r}; got {[t.name for t in parsed.inputs]}")
    tensor = parsed.inputs[0]
    if image:
        if tensor.datatype != "BYTES" or tensor.array.ndim not in (1, 2) or \
                (tensor.array.ndim == 2 and tensor.array.shape[1] != 1):
            raise ProtocolError(f"input {expected!r} must be BYTES of shape [N] or [N, 1] (one encoded image each), "
                                f"got {tensor.datatype} {tensor.shape}")
        return [bytes(b) for b in tensor.array.ravel()]
    want = [-1, *served.model.row_shape]
    if tensor.datatype != "FP32":
        raise ProtocolError(f"input {expected!r} is {tensor.datatype}; the model takes FP32")
    if tensor.array.ndim != len(want) or list(tensor.array.shape[1:]) != want[1:]:
        raise ProtocolError(f"input {expected!r} has shape {tensor.shape}; the model takes {want}")
    return np.ascontiguousarray(tensor.array)


def model_input(state: ServerState, served: ServedModel, image: bool, parsed: protocol.InferRequest) -> np.ndarray:
    """The FP32 batch the model runs: the request's tensor, or its images decoded within the limits (may take
    a while for images: run it off an event loop)."""
    value = input_tensor(served, image, parsed)
    return value if isinstance(value, np.ndarray) else images_to_tensor(value, served, state.limits, state.decode_budget)


def submit(served: ServedModel, x: np.ndarray, parsed: protocol.InferRequest) -> Future:
    """Queue the batch on the model's dynamic batcher, with the request's own ``timeout`` when it has one."""
    return served.model.submit(x, timeout=_timeout_s(x, parsed))


async def infer_async(served: ServedModel, x: np.ndarray, parsed: protocol.InferRequest) -> np.ndarray:
    """:func:`submit` awaited on the event loop (the batch's results wake the loop once)."""
    return await served.model.infer_async(x, timeout=_timeout_s(x, parsed))


def _timeout_s(x: np.ndarray, parsed: protocol.InferRequest) -> float | None:
    """The request's own timeout in seconds (None: the model's); refuses anything but FP32 first."""
    if x.dtype != np.float32:
        raise ProtocolError(f"input is {x.dtype}; the model takes FP32")
    return parsed.timeout_us / 1e6 if parsed.timeout_us else None


def output_tensors(served: ServedModel, logits: np.ndarray) -> dict[str, np.ndarray]:
    return {served.manifest.output.name: np.asarray(logits)}
