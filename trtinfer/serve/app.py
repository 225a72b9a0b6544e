"""The HTTP server: the Open Inference Protocol (``/v2``, what Triton and KServe clients speak), an
image endpoint (``/v1/models/{name}/predict``), the web page (``/``) and Prometheus metrics.

Every failure a client can cause is a JSON ``{"error": "..."}`` with the status that names it:
400 bad tensor or image, 404 unknown model or version, 413 body too large, 415 not an image
format we decode, 503 queue full (``Retry-After``), draining or not ready, 504 past the timeout.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

import numpy as np
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.formparsers import MultiPartParser
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route

from .._version import __version__
from ..errors import DataError, OverloadedError, TrtInferError
from ..preprocess import decode_image_bytes, preprocess
from ..runtime import ModelClosedError, RequestTimeout
from . import protocol
from .metrics import CONTENT_TYPE, Metrics
from .protocol import ProtocolError
from .registry import IMAGE_SUFFIX, VERSION, ModelSet, ServedModel

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 64 << 20  # a batch of 256 ImageNet-size FP32 tensors is 154 MB; raise --max-body-mb for more
MAX_TOP_K = 100
IMAGE_INPUT = "image"
#: File signatures of the formats decoded (anything else is 415 before a decoder sees it).
_SIGNATURES = ((b"\xff\xd8\xff", "JPEG"), (b"\x89PNG\r\n\x1a\n", "PNG"), (b"RIFF", "WebP"))


@dataclass
class ServerState:
    """What the whole server shares: the models, the metrics, and the draining flag."""

    models: ModelSet
    metrics: Metrics
    max_body: int = MAX_BODY_BYTES
    draining: bool = False
    inflight: int = 0  # HTTP and gRPC requests being served (the drain waits for 0)
    started: float = field(default_factory=time.monotonic)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def ready(self) -> bool:
        return not self.draining and self.models.ready()

    def enter(self) -> None:
        with self._lock:
            self.inflight += 1

    def leave(self) -> None:
        with self._lock:
            self.inflight -= 1


class HttpError(Exception):
    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.headers = status, message, headers or {}


def error_response(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=headers)


def _http_error(exc: BaseException) -> HttpError:
    """The status a failure means to a client."""
    if isinstance(exc, HttpError):
        return exc
    if isinstance(exc, ProtocolError):
        return HttpError(exc.status, exc.message)
    if isinstance(exc, OverloadedError):
        return HttpError(503, exc.one_line(), {"Retry-After": "1"})
    if isinstance(exc, RequestTimeout):
        return HttpError(504, exc.one_line())
    if isinstance(exc, ModelClosedError):
        return HttpError(503, "the server is shutting down", {"Retry-After": "5"})
    if isinstance(exc, DataError):
        return HttpError(400, exc.one_line())
    if isinstance(exc, TrtInferError):
        return HttpError(500, exc.one_line())
    log.exception("unexpected error", exc_info=exc)
    return HttpError(500, f"internal error: {type(exc).__name__}")


async def read_body(request: Request, limit: int) -> bytes:
    """The body, refused with 413 as soon as it passes ``limit`` (declared or streamed)."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise HttpError(413, f"the request body is {int(declared):,} bytes, more than the {limit:,} allowed")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise HttpError(413, f"the request body is more than the {limit:,} bytes allowed")
        chunks.append(chunk)
    return b"".join(chunks)


def _model(state: ServerState, name: str, version: str | None = None) -> tuple[ServedModel, bool]:
    found = state.models.find(name)
    if found is None:
        raise HttpError(404, f"unknown model {name!r}; this server has {', '.join(state.models.names())}")
    if version not in (None, "", VERSION):
        raise HttpError(404, f"model {name!r} has no version {version!r} (it has {VERSION})")
    return found


# -- protocol documents ------------------------------------------------------------------------------
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


# -- inference -------------------------------------------------------------------------------------
def image_format(data: bytes) -> str:
    for signature, name in _SIGNATURES:
        if data.startswith(signature) and (name != "WebP" or data[8:12] == b"WEBP"):
            return name
    raise HttpError(415, f"the upload ({len(data):,} bytes, starting {data[:8]!r}) is not a JPEG, PNG or WebP "
                         "image")


def images_to_tensor(blobs: list[bytes], served: ServedModel) -> np.ndarray:
    """Encoded images -> the model's float32 batch, preprocessed as its manifest says (runs in a thread)."""
    images = []
    try:
        for blob in blobs:
            image_format(blob)
            images.append(decode_image_bytes(blob))
        return preprocess(images, served.manifest.preprocess)
    finally:
        for image in images:
            image.close()


async def run_model(served: ServedModel, x: np.ndarray) -> np.ndarray:
    if x.dtype != np.float32:
        raise ProtocolError(f"input is {x.dtype}; the model takes FP32")
    return np.asarray(await served.model.infer_async(x))


def softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def input_tensor(served: ServedModel, image: bool, parsed: protocol.InferRequest) -> np.ndarray | list[bytes]:
    """The request's one input, checked against the model: the FP32 batch, or (``<name>_image``) the
    encoded images to decode. Shared by HTTP and gRPC."""
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


# -- the app ---------------------------------------------------------------------------------------
def create_app(state: ServerState) -> Starlette:
    """The Starlette app over ``state`` (models loaded; warm-up and signals are ``server.py``'s)."""

    async def handle(request: Request, model_name: str, endpoint: str, work: Any) -> Response:
        start = time.perf_counter()
        try:
            response = await work()
        except Exception as exc:  # noqa: BLE001 -- every failure becomes a JSON answer with its status
            error = _http_error(exc)
            state.metrics.record(model_name, endpoint, error.status)
            return error_response(error.status, error.message, error.headers)
        state.metrics.record(model_name, endpoint, response.status_code, time.perf_counter() - start)
        return response

    async def live(request: Request) -> Response:
        return JSONResponse({"live": True})

    async def ready(request: Request) -> Response:
        if state.ready():
            return JSONResponse({"ready": True})
        why = "draining" if state.draining else "warming up"
        return error_response(503, f"not ready: {why}")

    async def server_metadata(request: Request) -> Response:
        return JSONResponse({"name": "trtinfer", "version": __version__,
                             "extensions": ["classification", "binary_tensor_data", "model_configuration"]})

    async def metadata(request: Request) -> Response:
        p = request.path_params
        return await handle(request, p["name"], "metadata", lambda: _json(model_metadata(
            *_model(state, p["name"], p.get("version")))))

    async def config(request: Request) -> Response:
        p = request.path_params
        return await handle(request, p["name"], "config", lambda: _json(model_config(
            *_model(state, p["name"], p.get("version")))))

    async def model_ready(request: Request) -> Response:
        p = request.path_params

        async def work() -> Response:
            served, _ = _model(state, p["name"], p.get("version"))
            if served.ready.is_set() and not state.draining:
                return JSONResponse({"name": p["name"], "ready": True})
            raise HttpError(503, f"model {p['name']!r} is not ready")

        return await handle(request, p["name"], "ready", work)

    async def infer(request: Request) -> Response:
        p = request.path_params

        async def work() -> Response:
            served, image = _model(state, p["name"], p.get("version"))
            body = await read_body(request, state.max_body)
            header = request.headers.get(protocol.HEADER_LENGTH)
            parsed = (protocol.parse_infer_request(body, header) if header is not None or len(body) < 1 << 16
                      else await run_in_threadpool(protocol.parse_infer_request, body, header))
            value = input_tensor(served, image, parsed)
            x = value if isinstance(value, np.ndarray) else await run_in_threadpool(images_to_tensor, value, served)
            logits = await run_model(served, x)
            content, headers = protocol.build_infer_response(
                p["name"], VERSION, parsed, {served.manifest.output.name: logits}, served.labels)
            media = "application/octet-stream" if headers else "application/json"
            return Response(content, headers=headers, media_type=media)

        return await handle(request, p["name"], "infer", work)

    async def predict(request: Request) -> Response:
        name = request.path_params["name"]

        async def work() -> Response:
            started = time.perf_counter()
            served, _ = _model(state, name)
            top_k = _top_k(request.query_params.get("top_k", "3"), served)
            blob = await _upload(request, state.max_body)
            x = await run_in_threadpool(images_to_tensor, [blob], served)
            probabilities = softmax(await run_model(served, x))[0]
            order = np.argsort(-probabilities, kind="stable")[:top_k]
            facts = served.facts()
            return JSONResponse({
                "model": served.name, "precision": facts["precision"], "backend": facts["backend"],
                "predictions": [{"label": served.labels[i], "index": int(i), "probability": float(probabilities[i])}
                                for i in order],
                "latency_ms": round((time.perf_counter() - started) * 1e3, 3)})

        return await handle(request, name, "predict", work)

    async def models_list(request: Request) -> Response:
        return JSONResponse({"models": [dict(m.facts(), ready=m.ready.is_set())
                                        for m in state.models.models.values()]})

    async def page(request: Request) -> Response:
        return HTMLResponse(resources.files("trtinfer.serve").joinpath("page.html").read_text(encoding="utf-8"))

    async def metrics(request: Request) -> Response:
        return Response(state.metrics.exposition(), media_type=CONTENT_TYPE)

    version = "/versions/{version}"
    routes = [
        Route("/", page), Route("/metrics", metrics), Route("/v1/models", models_list),
        Route("/v1/models/{name}/predict", predict, methods=["POST"]),
        Route("/v2/health/live", live), Route("/v2/health/ready", ready), Route("/v2", server_metadata),
    ]
    for prefix in ("/v2/models/{name}", "/v2/models/{name}" + version):
        routes += [Route(prefix, metadata), Route(prefix + "/ready", model_ready), Route(prefix + "/config", config),
                   Route(prefix + "/infer", infer, methods=["POST"])]
    app = Starlette(routes=routes)
    app.state.server = state
    return app


def _json(document: dict[str, Any]) -> Any:
    async def respond() -> Response:
        return JSONResponse(document)

    return respond()


def _top_k(text: str, served: ServedModel) -> int:
    try:
        k = int(text)
    except ValueError:
        raise HttpError(400, f"top_k {text!r} is not a whole number") from None
    if not 1 <= k <= MAX_TOP_K:
        raise HttpError(400, f"top_k {k} must be 1..{MAX_TOP_K}")
    return min(k, served.manifest.num_classes)


async def _upload(request: Request, limit: int) -> bytes:
    """The image of a predict request: a multipart file field, or the raw body."""
    body = await read_body(request, limit)
    content_type = request.headers.get("content-type", "")
    if not content_type.startswith("multipart/form-data"):
        if not body:
            raise HttpError(400, "the request has no image: send it as the body or as a multipart file field")
        return body

    async def stream() -> Any:
        yield body
        yield b""

    try:
        form = await MultiPartParser(request.headers, stream(), max_files=1, max_fields=16).parse()
    except Exception as exc:  # noqa: BLE001 -- a malformed multipart body is the client's
        raise HttpError(400, f"malformed multipart upload: {exc}") from None
    files = [v for _, v in form.multi_items() if isinstance(v, UploadFile)]
    if not files:
        raise HttpError(400, "the multipart upload has no file field")
    try:
        return await files[0].read()
    finally:
        await form.close()


class DrainGuard:
    """ASGI middleware: counts requests in flight, and refuses new ones (503) while draining; health
    and metrics keep answering so probes see the drain."""

    def __init__(self, app: Any, state: ServerState) -> None:
        self.app, self.state = app, state

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope.get("path", "")
        if self.state.draining and not path.startswith(("/v2/health", "/metrics")):
            response = error_response(503, "the server is shutting down", {"Retry-After": "5", "Connection": "close"})
            await response(scope, receive, send)
            return
        self.state.enter()
        try:
            await self.app(scope, receive, send)
        finally:
            self.state.leave()
