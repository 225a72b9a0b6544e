"""The HTTP server: the Open Inference Protocol (``/v2``, what Triton and KServe clients speak), an
image endpoint (``/v1/models/{name}/predict``), the web page (``/``) and Prometheus metrics.

Every failure a client can cause is a JSON ``{"error": "..."}`` with the status that names it:
400 bad tensor or image, 404 unknown model or version, unrouted path or unimplemented extension, 405 wrong
method, 408 body too slow, 413 body too large, 415 not an image format we decode, 503 queue full
(``Retry-After``), draining or not ready, 504 past the timeout.

Large JSON bodies are parsed in a worker process (:class:`BodyParser`): ``json.loads`` holds the GIL for the
whole call, so in a thread a 20 MB body would still stall every other request, the health probes included.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import sys
import threading
import time
import types
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from importlib import resources
from typing import Any

import numpy as np
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.formparsers import MultiPartParser
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route

from . import protocol, service
from .images import images_to_tensor
from .metrics import CONTENT_TYPE
from .registry import VERSION, ServedModel
from .service import SHUTTING_DOWN, Failure, ServeError, ServerState, failure, find, softmax

log = logging.getLogger(__name__)

MAX_TOP_K = 100
#: JSON bodies up to this size are parsed on the event loop (a few milliseconds); larger ones in the parser
#: process. Binary tensors after a small JSON header are views of the body and cost nothing to parse.
INLINE_JSON_BYTES = 256 << 10
#: Triton's extensions this server does not implement: path -> the extension's name (404 naming it).
UNSUPPORTED = {"/v2/repository/{rest:path}": "model repository",
               "/v2/systemsharedmemory{rest:path}": "system shared memory",
               "/v2/cudasharedmemory{rest:path}": "CUDA shared memory",
               "/v2/trace/setting": "trace", "/v2/models/{name}/trace/setting": "trace",
               "/v2/logging": "logging",
               "/v2/models/{name}/generate": "generate", "/v2/models/{name}/generate_stream": "generate"}


def error_response(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=headers)


def _answer(exc: BaseException) -> Failure:
    answer = failure(exc)
    if answer.internal:
        log.error("internal error", exc_info=exc)
    return answer


async def read_body(request: Request, limit: int) -> bytes:
    """The body, refused with 413 as soon as it passes ``limit`` (declared or streamed). The time it may take
    is bounded by ``DrainGuard`` (``limits.body_timeout_s``, then 408) for every route at once."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise ServeError(413, f"the request body is {int(declared):,} bytes, more than the {limit:,} allowed")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise ServeError(413, f"the request body is more than the {limit:,} bytes allowed")
        chunks.append(chunk)
    return b"".join(chunks)


class BodyParser:
    """Infer request bodies -> :class:`protocol.InferRequest`: small JSON on the event loop, large JSON in one
    worker process (spawned on first use; it imports only ``trtinfer.serve.protocol``), so a large body never
    holds this process's GIL. Its memory (12-14 times the JSON's size as Python objects) is the worker's, given
    back after each request; what comes back is the arrays' data. ``close()`` stops the worker (idempotent)."""

    def __init__(self, inline_bytes: int = INLINE_JSON_BYTES) -> None:
        self.inline_bytes = inline_bytes
        self._pool: ProcessPoolExecutor | None = None
        self._lock = threading.Lock()

    async def parse(self, body: bytes, header_length: str | None,
                    max_bytes_elements: int | None) -> protocol.InferRequest:
        if _json_bytes(body, header_length) <= self.inline_bytes:
            return protocol.parse_infer_request(body, header_length, max_bytes_elements)
        pool = self._started()
        try:
            return await asyncio.wrap_future(pool.submit(protocol.parse_in_worker, body, header_length,
                                                         max_bytes_elements))
        except BrokenProcessPool:  # the worker died (killed for memory?): the next request starts a new one
            with self._lock:
                if self._pool is pool:
                    self._pool = None
            pool.shutdown(wait=False, cancel_futures=True)
            raise ServeError(503, "the JSON parser process ended while parsing this request (out of memory?); "
                                  "retry, or send the tensors as binary data", {"Retry-After": "1"}) from None

    def _started(self) -> ProcessPoolExecutor:
        with self._lock:
            if self._pool is None:
                pool = ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn"),
                                           initializer=protocol.parser_process_init)
                # The worker starts with the first task. A spawned process re-runs the parent's __main__ (a
                # user's script, perhaps without the __main__ guard, would start a second server): hide it, so
                # the worker imports only trtinfer.serve.protocol.
                main = sys.modules["__main__"]
                sys.modules["__main__"] = types.ModuleType("__main__")
                try:
                    pool.submit(protocol.trim_heap)
                finally:
                    sys.modules["__main__"] = main
                self._pool = pool
            return self._pool

    def close(self) -> None:
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)


def _json_bytes(body: bytes, header_length: str | None) -> int:
    """The size of the body's JSON part (0 for a malformed header: the inline parse refuses it)."""
    if header_length is None:
        return len(body)
    try:
        return min(protocol.header_length_value(header_length), len(body))
    except protocol.ProtocolError:
        return 0


# -- the app ---------------------------------------------------------------------------------------
def create_app(state: ServerState) -> Starlette:
    """The Starlette app over ``state`` (models loaded; warm-up and signals are ``server.py``'s). Its
    ``state.close()`` stops the JSON parser process: call it when the server stops."""
    parser = BodyParser()
    unsupported_logged: set[str] = set()

    async def handle(request: Request, model_name: str, endpoint: str, work: Any) -> Response:
        start = time.perf_counter()
        label = state.metric_name(model_name)
        try:
            response = await work()
        except Exception as exc:  # noqa: BLE001 -- every failure becomes a JSON answer with its status
            answer = _answer(exc)
            state.metrics.record(label, endpoint, answer.status, time.perf_counter() - start)
            return error_response(answer.status, answer.message, answer.headers)
        state.metrics.record(label, endpoint, response.status_code, time.perf_counter() - start)
        return response

    async def live(request: Request) -> Response:
        return JSONResponse({"live": True})

    async def ready(request: Request) -> Response:
        if state.ready():
            return JSONResponse({"ready": True})
        why = "draining" if state.draining else "warming up"
        return error_response(503, f"not ready: {why}")

    async def server_metadata(request: Request) -> Response:
        return JSONResponse(service.server_metadata())

    async def metadata(request: Request) -> Response:
        p = request.path_params
        return await handle(request, p["name"], "metadata", lambda: _json(service.model_metadata(
            *find(state, p["name"], p.get("version")))))

    async def config(request: Request) -> Response:
        p = request.path_params
        return await handle(request, p["name"], "config", lambda: _json(service.model_config(
            *find(state, p["name"], p.get("version")))))

    async def model_ready(request: Request) -> Response:
        p = request.path_params

        async def work() -> Response:
            find(state, p["name"], p.get("version"))  # 404 for an unknown model or version
            if service.model_ready(state, p["name"], p.get("version")):
                return JSONResponse({"name": p["name"], "ready": True})
            raise ServeError(503, f"model {p['name']!r} is not ready")

        return await handle(request, p["name"], "ready", work)

    async def statistics(request: Request) -> Response:
        p = request.path_params

        async def work() -> Response:
            name = p.get("name")
            if name is None:
                return JSONResponse(state.statistics.document())
            served, _ = find(state, name, p.get("version"))
            return JSONResponse(state.statistics.document(served.name))

        return await handle(request, p.get("name", ""), "statistics", work)

    async def infer(request: Request) -> Response:
        p = request.path_params

        async def work() -> Response:
            started = time.perf_counter()
            served, image = find(state, p["name"], p.get("version"))
            ok, reason = False, "OTHER"
            try:
                body = await read_body(request, state.limits.max_body_bytes)
                header = request.headers.get(protocol.HEADER_LENGTH)
                parsed = await parser.parse(body, header, state.limits.max_images if image else 0)
                value = service.input_tensor(served, image, parsed)  # tensors: checked in place, no thread hop
                x = value if isinstance(value, np.ndarray) else await run_in_threadpool(
                    images_to_tensor, value, served, state.limits, state.decode_budget)
                input_s = time.perf_counter() - started
                logits = await asyncio.wrap_future(service.submit(served, x, parsed))
                built = time.perf_counter()
                content, headers = protocol.build_infer_response(
                    p["name"], VERSION, parsed, service.output_tensors(served, logits), served.labels)
                ok = True
            except Exception as exc:
                reason = failure(exc).reason
                raise
            finally:
                now = time.perf_counter()
                state.statistics.record(served.name, ok, now - started, input_s if ok else 0.0,
                                        now - built if ok else 0.0, reason)
            media = "application/octet-stream" if headers else "application/json"
            return Response(content, headers=headers, media_type=media)

        return await handle(request, p["name"], "infer", work)

    async def predict(request: Request) -> Response:
        name = request.path_params["name"]

        async def work() -> Response:
            started = time.perf_counter()
            served, _ = find(state, name)
            top_k = _top_k(request.query_params.get("top_k", "3"), served)
            blob = await _upload(request, state.limits.max_body_bytes)
            x = await run_in_threadpool(images_to_tensor, [blob], served, state.limits,
                                       state.decode_budget)
            logits = await served.model.infer_async(x)
            probabilities = softmax(np.asarray(logits))[0]
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
        Route("/v2/models/stats", statistics),
    ]
    for prefix in ("/v2/models/{name}", "/v2/models/{name}" + version):
        routes += [Route(prefix, metadata), Route(prefix + "/ready", model_ready), Route(prefix + "/config", config),
                   Route(prefix + "/stats", statistics), Route(prefix + "/infer", infer, methods=["POST"])]

    def unsupported(extension: str) -> Any:
        async def answer(request: Request) -> Response:
            if extension not in unsupported_logged:  # once per extension: clients probing at start-up repeat it
                unsupported_logged.add(extension)
                log.warning("a client asked for %s %s: trtinfer serve does not implement the %s extension "
                            "(answered 404; logged once)", request.method, request.url.path, extension)
            return error_response(404, f"trtinfer serve does not implement the {extension} extension "
                                       f"({request.method} {request.url.path}); GET /v2 lists the extensions it has")

        return answer

    routes += [Route(path, unsupported(extension), methods=["GET", "POST", "PUT", "DELETE"])
               for path, extension in UNSUPPORTED.items()]

    async def not_routed(request: Request, exc: Exception) -> Response:
        status = getattr(exc, "status_code", 404)
        if status == 405:
            return error_response(405, f"{request.method} is not allowed on {request.url.path}")
        return error_response(status, f"no endpoint {request.url.path} (this server speaks the Open Inference "
                                      "Protocol under /v2, and /v1/models/<name>/predict)")

    app = Starlette(routes=routes, exception_handlers={HTTPException: not_routed})
    app.state.server = state
    app.state.close = parser.close
    return app


def _json(document: dict[str, Any]) -> Any:
    async def respond() -> Response:
        return JSONResponse(document)

    return respond()


def _top_k(text: str, served: ServedModel) -> int:
    try:
        k = int(text)
    except ValueError:
        raise ServeError(400, f"top_k {text!r} is not a whole number") from None
    if not 1 <= k <= MAX_TOP_K:
        raise ServeError(400, f"top_k {k} must be 1..{MAX_TOP_K}")
    return min(k, served.manifest.num_classes)


async def _upload(request: Request, limit: int) -> bytes:
    """The image of a predict request: a multipart file field, or the raw body."""
    body = await read_body(request, limit)
    content_type = request.headers.get("content-type", "")
    if not content_type.startswith("multipart/form-data"):
        if not body:
            raise ServeError(400, "the request has no image: send it as the body or as a multipart file field")
        return body

    async def stream() -> Any:
        yield body
        yield b""

    try:
        form = await MultiPartParser(request.headers, stream(), max_files=1, max_fields=16).parse()
    except Exception as exc:  # noqa: BLE001 -- a malformed multipart body is the client's
        raise ServeError(400, f"malformed multipart upload: {exc}") from None
    files = [v for _, v in form.multi_items() if isinstance(v, UploadFile)]
    if not files:
        raise ServeError(400, "the multipart upload has no file field")
    try:
        return await files[0].read()
    finally:
        await form.close()


class DrainGuard:
    """ASGI middleware for the life of a request: counts it while in flight, bounds the time its body may take
    (``limits.body_timeout_s``: then 408), and carries the drain. Once draining (the first SIGTERM), every
    response says ``Connection: close`` so clients reconnect elsewhere while still being served; once the drain
    delay is over (``refusing``), new requests get 503 with Retry-After, what is being sent of their body read
    first (up to :data:`REFUSED_BODY_BYTES`) so that the answer reaches the client rather than a reset. Health and
    metrics keep answering, so probes see the drain."""

    REFUSED_BODY_BYTES = 1 << 20

    def __init__(self, app: Any, state: ServerState) -> None:
        self.app, self.state = app, state

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope.get("path", "")
        if self.state.refusing and not path.startswith(("/v2/health", "/metrics")):
            await self._discard_body(receive)
            response = error_response(503, SHUTTING_DOWN, {"Retry-After": "5", "Connection": "close"})
            await response(scope, receive, send)
            return
        self.state.enter()
        try:
            await self.app(scope, self._timed(receive), self._closing(send))
        finally:
            self.state.leave()

    def _timed(self, receive: Any) -> Any:
        """``receive`` with the body's deadline: a ServeError(408) once it passes before the body is complete."""
        timeout = self.state.limits.body_timeout_s
        deadline = asyncio.get_running_loop().time() + timeout
        complete = False

        async def receive_in_time() -> Any:
            nonlocal complete
            if complete:  # after the body: waiting for a disconnect is not bounded
                return await receive()
            try:
                message = await asyncio.wait_for(receive(), max(0.0, deadline - asyncio.get_running_loop().time()))
            except asyncio.TimeoutError:
                raise ServeError(408, f"the request body did not arrive within {timeout:g} s "
                                      "(--body-timeout-seconds)", {"Connection": "close"}) from None
            complete = message["type"] != "http.request" or not message.get("more_body", False)
            return message

        return receive_in_time

    def _closing(self, send: Any) -> Any:
        """``send`` that adds ``Connection: close`` to a response started while the server drains."""

        async def send_closing(message: Any) -> None:
            if message["type"] == "http.response.start" and self.state.draining:
                headers = list(message.get("headers", []))
                if not any(name.lower() == b"connection" for name, _ in headers):
                    message = {**message, "headers": [*headers, (b"connection", b"close")]}
            await send(message)

        return send_closing

    async def _discard_body(self, receive: Any) -> None:
        """Read what the client sends of a refused request's body, up to a bound and for at most a second."""

        async def discard() -> None:
            size = 0
            while size <= self.REFUSED_BODY_BYTES:
                message = await receive()
                if message["type"] != "http.request" or not message.get("more_body", False):
                    return
                size += len(message.get("body", b""))

        try:
            await asyncio.wait_for(discard(), 1.0)
        except asyncio.TimeoutError:
            pass
