"""The HTTP server: the Open Inference Protocol (``/v2``, what Triton and KServe clients speak), an
image endpoint (``/v1/models/{name}/predict``), the web page (``/``) and Prometheus metrics.

Every failure a client can cause is a JSON ``{"error": "..."}`` with the status that names it:
400 bad tensor or image, 404 unknown model or version, unrouted path or unimplemented extension, 405 wrong
method, 408 body too slow, 413 body too large, 415 not an image format we decode, 503 queue full
(``Retry-After``), draining or not ready, 504 past the timeout.

Bodies are read and parsed by ``bodies.py``; the middleware that carries the drain is ``middleware.py``.
"""

from __future__ import annotations

import logging
import time
from importlib import resources
from typing import Any

import numpy as np
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route

from ..runtime.model import softmax
from . import outputs, protocol, service
from .bodies import BodyParser, read_body, read_upload
from .images import images_to_tensor
from .metrics import CONTENT_TYPE
from .registry import VERSION, ServedModel
from .responses import error_response
from .service import Failure, ServeError, ServerState, failure, find

log = logging.getLogger(__name__)

MAX_TOP_K = 100
#: Triton's extensions this server does not implement: path -> the extension's name (404 naming it).
UNSUPPORTED = {"/v2/repository/{rest:path}": "model repository",
               "/v2/systemsharedmemory{rest:path}": "system shared memory",
               "/v2/cudasharedmemory{rest:path}": "CUDA shared memory",
               "/v2/trace/setting": "trace", "/v2/models/{name}/trace/setting": "trace",
               "/v2/logging": "logging",
               "/v2/models/{name}/generate": "generate", "/v2/models/{name}/generate_stream": "generate"}


def _answer(exc: BaseException) -> Failure:
    answer = failure(exc)
    if answer.internal:
        log.error("internal error", exc_info=exc)
    return answer


# -- the app ---------------------------------------------------------------------------------------
def create_app(state: ServerState) -> Starlette:
    """The Starlette app over ``state`` (models loaded; warm-up and signals are ``server.py``'s). Its
    ``state.close()`` stops the JSON parser process: call it when the server stops."""
    http = _Handlers(state)
    app = Starlette(routes=http.routes(), exception_handlers={HTTPException: http.not_routed})
    app.state.server = state
    app.state.close = http.parser.close
    return app


class _Handlers:
    """The HTTP endpoints over one server's state. Each model endpoint runs its work through :meth:`handle`,
    which turns every failure into its JSON answer and records the request in the metrics."""

    def __init__(self, state: ServerState) -> None:
        self.state = state
        self.parser = BodyParser()
        self._unsupported_logged: set[str] = set()

    def routes(self) -> list[Route]:
        version = "/versions/{version}"
        routes = [
            Route("/", self.page), Route("/metrics", self.metrics), Route("/v1/models", self.models_list),
            Route("/v1/models/{name}/predict", self.predict, methods=["POST"]),
            Route("/v2/health/live", self.live), Route("/v2/health/ready", self.ready),
            Route("/v2", self.server_metadata), Route("/v2/models/stats", self.statistics),
        ]
        for prefix in ("/v2/models/{name}", "/v2/models/{name}" + version):
            routes += [Route(prefix, self.metadata), Route(prefix + "/ready", self.model_ready),
                       Route(prefix + "/config", self.config), Route(prefix + "/stats", self.statistics),
                       Route(prefix + "/infer", self.infer, methods=["POST"])]
        routes += [Route(path, self._unsupported(extension), methods=["GET", "POST", "PUT", "DELETE"])
                   for path, extension in UNSUPPORTED.items()]
        return routes

    async def handle(self, model_name: str, endpoint: str, work: Any) -> Response:
        start = time.perf_counter()
        label = self.state.metric_name(model_name)
        try:
            response = await work()
        except Exception as exc:  # noqa: BLE001 -- every failure becomes a JSON answer with its status
            answer = _answer(exc)
            self.state.metrics.record(label, endpoint, answer.status, time.perf_counter() - start)
            return error_response(answer.status, answer.message, answer.headers)
        self.state.metrics.record(label, endpoint, response.status_code, time.perf_counter() - start)
        return response

    # -- health, documents, statistics ---------------------------------------------------------------------
    async def live(self, request: Request) -> Response:
        return JSONResponse({"live": True})

    async def ready(self, request: Request) -> Response:
        if self.state.ready():
            return JSONResponse({"ready": True})
        why = "draining" if self.state.draining else "warming up"
        return error_response(503, f"not ready: {why}")

    async def server_metadata(self, request: Request) -> Response:
        return JSONResponse(service.server_metadata())

    async def metadata(self, request: Request) -> Response:
        p = request.path_params
        return await self.handle(p["name"], "metadata", lambda: _json(service.model_metadata(
            *find(self.state, p["name"], p.get("version")))))

    async def config(self, request: Request) -> Response:
        p = request.path_params
        return await self.handle(p["name"], "config", lambda: _json(service.model_config(
            *find(self.state, p["name"], p.get("version")))))

    async def model_ready(self, request: Request) -> Response:
        p = request.path_params

        async def work() -> Response:
            find(self.state, p["name"], p.get("version"))  # 404 for an unknown model or version
            if service.model_ready(self.state, p["name"], p.get("version")):
                return JSONResponse({"name": p["name"], "ready": True})
            raise ServeError(503, f"model {p['name']!r} is not ready")

        return await self.handle(p["name"], "ready", work)

    async def statistics(self, request: Request) -> Response:
        p = request.path_params

        async def work() -> Response:
            name = p.get("name")
            if name is None:
                return JSONResponse(self.state.statistics.document())
            served, _ = find(self.state, name, p.get("version"))
            return JSONResponse(self.state.statistics.document(served.name))

        return await self.handle(p.get("name", ""), "statistics", work)

    # -- inference --------------------------------------------------------------------------------------------
    async def infer(self, request: Request) -> Response:
        name = request.path_params["name"]
        return await self.handle(name, "infer", lambda: self._infer(request, name))

    async def _infer(self, request: Request, name: str) -> Response:
        state = self.state
        started = time.perf_counter()
        served, image = find(state, name, request.path_params.get("version"))
        ok, reason = False, "OTHER"
        try:
            body = await read_body(request, state.limits.max_body_bytes)
            header = request.headers.get(protocol.HEADER_LENGTH)
            parsed = await self.parser.parse(body, header, state.limits.max_images if image else 0)
            value = service.input_tensor(served, image, parsed)  # tensors: checked in place, no thread hop
            x = value if isinstance(value, np.ndarray) else await run_in_threadpool(
                images_to_tensor, value, served, state.limits, state.decode_budget)
            input_s = time.perf_counter() - started
            logits = await service.infer_async(served, x, parsed)
            built = time.perf_counter()
            content, headers = outputs.build_infer_response(
                name, VERSION, parsed, service.output_tensors(served, logits), served.labels)
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

    async def predict(self, request: Request) -> Response:
        name = request.path_params["name"]
        return await self.handle(name, "predict", lambda: self._predict(request, name))

    async def _predict(self, request: Request, name: str) -> Response:
        started = time.perf_counter()
        served, _ = find(self.state, name)
        top_k = _top_k(request.query_params.get("top_k", "3"), served)
        blob = await read_upload(request, self.state.limits.max_body_bytes)
        x = await run_in_threadpool(images_to_tensor, [blob], served, self.state.limits, self.state.decode_budget)
        probabilities = softmax(np.asarray(await served.model.infer_async(x)))[0]
        order = np.argsort(-probabilities, kind="stable")[:top_k]
        facts = served.facts()
        return JSONResponse({
            "model": served.name, "precision": facts["precision"], "backend": facts["backend"],
            "predictions": [{"label": served.labels[i], "index": int(i), "probability": float(probabilities[i])}
                            for i in order],
            "latency_ms": round((time.perf_counter() - started) * 1e3, 3)})

    # -- the page, the model list, metrics, and what is not here ----------------------------------------------
    async def models_list(self, request: Request) -> Response:
        return JSONResponse({"models": [dict(m.facts(), ready=m.ready.is_set())
                                        for m in self.state.models.models.values()]})

    async def page(self, request: Request) -> Response:
        return HTMLResponse(resources.files("trtinfer.serve").joinpath("page.html").read_text(encoding="utf-8"))

    async def metrics(self, request: Request) -> Response:
        return Response(self.state.metrics.exposition(), media_type=CONTENT_TYPE)

    def _unsupported(self, extension: str) -> Any:
        async def answer(request: Request) -> Response:
            if extension not in self._unsupported_logged:  # once per extension: clients probing at start-up repeat it
                self._unsupported_logged.add(extension)
                log.warning("a client asked for %s %s: trtinfer serve does not implement the %s extension "
                            "(answered 404; logged once)", request.method, request.url.path, extension)
            return error_response(404, f"trtinfer serve does not implement the {extension} extension "
                                       f"({request.method} {request.url.path}); GET /v2 lists the extensions it has")

        return answer

    async def not_routed(self, request: Request, exc: Exception) -> Response:
        status = getattr(exc, "status_code", 404)
        if status == 405:
            return error_response(405, f"{request.method} is not allowed on {request.url.path}")
        return error_response(status, f"no endpoint {request.url.path} (this server speaks the Open Inference "
                                      "Protocol under /v2, and /v1/models/<name>/predict)")


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


