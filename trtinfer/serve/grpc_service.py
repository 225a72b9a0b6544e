"""The Open Inference Protocol over gRPC (KServe v2 ``GRPCInferenceService``, whose definitions ship with
``tritonclient[grpc]``): the same models, checks and errors as HTTP, for clients sending tensors at
high rates, plus Triton's streaming inference and statistics, and the standard ``grpc.health.v1`` service
(Kubernetes' gRPC probes). A thread-pool gRPC server beside uvicorn; each call waits on the dynamic batcher.

Every malformed request is INVALID_ARGUMENT naming the field, checked before anything is allocated for it;
RPCs of extensions this server does not have are UNIMPLEMENTED naming the extension, logged once."""

from __future__ import annotations

import collections
import logging
import threading
import time
from concurrent import futures
from dataclasses import dataclass
from typing import Any, Callable, Iterator, NoReturn

import grpc
import numpy as np
from google.protobuf import json_format
from grpc_health.v1 import health_pb2, health_pb2_grpc  # type: ignore[import-untyped]
from grpc_health.v1.health import HealthServicer  # type: ignore[import-untyped]
from tritonclient.grpc import model_config_pb2, service_pb2, service_pb2_grpc

from ..errors import DataError
from . import protocol, service
from .grpc_messages import infer_response, parse_grpc_request
from .registry import ServedModel
from .service import SHUTTING_DOWN, ServeError, ServerState, failure

log = logging.getLogger(__name__)

#: Requests of one stream read and queued ahead of their answers; the stream's reader waits beyond.
STREAM_WINDOW = 64
#: How often readiness is looked at for health watchers, and an idle stream for the drain (seconds).
POLL_S = 0.1
INFERENCE_SERVICE = "inference.GRPCInferenceService"
#: The extension each RPC of the service belongs to, for those this server does not implement.
UNSUPPORTED = {
    "RepositoryIndex": "model repository extension", "RepositoryModelLoad": "model repository extension",
    "RepositoryModelUnload": "model repository extension",
    "SystemSharedMemoryStatus": "system shared memory extension",
    "SystemSharedMemoryRegister": "system shared memory extension",
    "SystemSharedMemoryUnregister": "system shared memory extension",
    "CudaSharedMemoryStatus": "CUDA shared memory extension",
    "CudaSharedMemoryRegister": "CUDA shared memory extension",
    "CudaSharedMemoryUnregister": "CUDA shared memory extension",
    "TraceSetting": "trace extension", "LogSettings": "logging extension",
}


def _abort(context: Any, exc: BaseException) -> NoReturn:
    answer = failure(exc)
    if answer.internal:
        log.error("internal error", exc_info=exc)
    context.abort(getattr(grpc.StatusCode, answer.code), answer.message)
    raise RuntimeError("grpc's context.abort returned")  # it raises; this line is for the type checker


def _refused() -> ServeError:
    return ServeError(503, SHUTTING_DOWN + "; retry on another replica")


# -- one inference, in two halves: queued (parsed, decoded, submitted), then answered --------------------------------
@dataclass
class _Call:
    request: Any                      # the ModelInferRequest
    started: float
    served: ServedModel | None = None
    parsed: protocol.InferRequest | None = None
    future: futures.Future | None = None
    input_s: float = 0.0
    error: Exception | None = None    # what failed while queueing; answered when the call's turn comes

    def discard(self) -> None:
        if self.future is not None:
            self.future.cancel()


class _Stream:
    """One ``ModelStreamInfer`` call's requests between the thread reading them and the handler answering them,
    in order. Each accepted request counts in ``state.inflight`` until answered or discarded, so a drain waits for
    it; a stream ended early discards what it had accepted."""

    END, REFUSED = object(), object()

    def __init__(self, state: ServerState) -> None:
        self.state = state
        self._cond = threading.Condition()
        self._items: collections.deque[Any] = collections.deque()
        self._outstanding = 0  # accepted and not yet answered or discarded
        self._closed = False

    def accept(self) -> bool:
        """The reader has a request: wait for room in the window; False when the stream is over or the server
        refuses new requests (then REFUSED is queued)."""
        with self._cond:
            while self._outstanding >= STREAM_WINDOW and not self._closed:
                self._cond.wait()
            if self._closed:
                return False
            if self.state.refusing:
                self._items.append(self.REFUSED)
                self._cond.notify_all()
                return False
            self._outstanding += 1
            self.state.enter()
            return True

    def put(self, item: Any) -> None:
        with self._cond:
            if self._closed:
                if isinstance(item, _Call):
                    self._release(item)
                return
            self._items.append(item)
            self._cond.notify_all()

    def take(self, timeout: float) -> Any:
        """The next item, or None after ``timeout`` with nothing to take."""
        with self._cond:
            if not self._items:
                self._cond.wait(timeout)
            return self._items.popleft() if self._items else None

    def answered(self) -> None:
        with self._cond:
            self._outstanding -= 1
            self.state.leave()
            self._cond.notify_all()

    def close_if_idle_and_refusing(self) -> bool:
        """Once the server refuses new requests, a stream with nothing accepted ends (UNAVAILABLE), rather than
        wait to be cancelled when the server stops."""
        with self._cond:
            if self.state.refusing and self._outstanding == 0 and not self._items:
                self._closed = True
                self._cond.notify_all()
                return True
            return False

    def close(self) -> None:
        with self._cond:
            self._closed = True
            while self._items:
                item = self._items.popleft()
                if isinstance(item, _Call):
                    self._release(item)
            self._cond.notify_all()

    def _release(self, call: _Call) -> None:
        call.discard()
        self._outstanding -= 1
        self.state.leave()


class InferenceService(service_pb2_grpc.GRPCInferenceServiceServicer):
    def __init__(self, state: ServerState, timeout_s: float = 120.0) -> None:
        self.state, self.timeout_s = state, timeout_s
        self._told: set[str] = set()  # unsupported RPCs already logged
        self._told_lock = threading.Lock()

    def _find(self, name: str, version: str, context: Any) -> tuple[ServedModel, bool]:
        try:
            return service.find(self.state, name, version)
        except ServeError as exc:
            _abort(context, exc)

    def ServerLive(self, request: Any, context: Any) -> Any:  # noqa: N802 -- the protocol's names
        return service_pb2.ServerLiveResponse(live=True)

    def ServerReady(self, request: Any, context: Any) -> Any:  # noqa: N802
        return service_pb2.ServerReadyResponse(ready=self.state.ready())

    def ModelReady(self, request: Any, context: Any) -> Any:  # noqa: N802
        return service_pb2.ModelReadyResponse(ready=service.model_ready(self.state, request.name, request.version))

    def ServerMetadata(self, request: Any, context: Any) -> Any:  # noqa: N802
        meta = service.server_metadata()
        return service_pb2.ServerMetadataResponse(name=meta["name"], version=meta["version"],
                                                  extensions=meta["extensions"])

    def ModelMetadata(self, request: Any, context: Any) -> Any:  # noqa: N802
        served, image = self._find(request.name, request.version, context)
        meta = service.model_metadata(served, image)
        tensor = service_pb2.ModelMetadataResponse.TensorMetadata
        return service_pb2.ModelMetadataResponse(
            name=meta["name"], versions=meta["versions"], platform=meta["platform"],
            inputs=[tensor(name=t["name"], datatype=t["datatype"], shape=t["shape"]) for t in meta["inputs"]],
            outputs=[tensor(name=t["name"], datatype=t["datatype"], shape=t["shape"]) for t in meta["outputs"]])

    def ModelConfig(self, request: Any, context: Any) -> Any:  # noqa: N802
        served, image = self._find(request.name, request.version, context)
        config = json_format.ParseDict(service.model_config(served, image), model_config_pb2.ModelConfig(),
                                       ignore_unknown_fields=True)
        return service_pb2.ModelConfigResponse(config=config)

    def ModelStatistics(self, request: Any, context: Any) -> Any:  # noqa: N802
        name = None
        if request.name:
            served, _ = self._find(request.name, request.version, context)
            name = served.name
        return json_format.ParseDict(self.state.statistics.document(name), service_pb2.ModelStatisticsResponse(),
                                     ignore_unknown_fields=True)

    def ModelInfer(self, request: Any, context: Any) -> Any:  # noqa: N802
        self.state.enter()
        try:
            return self._answer(self._queue(request), "grpc_infer")
        except Exception as exc:  # noqa: BLE001 -- every failure is a status the client can read
            _abort(context, exc)
        finally:
            self.state.leave()

    def ModelStreamInfer(self, request_iterator: Iterator[Any], context: Any) -> Iterator[Any]:  # noqa: N802
        """Triton's streaming inference as triton-inference-server/server's ``src/grpc/stream_infer_handler.cc``
        does it for a model that is not decoupled: requests are read and queued as they arrive (so one stream
        fills the dynamic batcher's batches), each is answered by one ``ModelStreamInferResponse`` in the order
        it came (``triton_final_response`` set, as Triton sets it), and a request that fails is answered in the
        stream with ``error_message`` and its id while the stream goes on. Once the server refuses new requests
        (the drain delay is over), the stream answers what it accepted, then ends UNAVAILABLE, which clients
        retry elsewhere (CANCELLED they would not)."""
        if self.state.refusing:
            _abort(context, _refused())
        stream = _Stream(self.state)
        threading.Thread(target=self._read, args=(stream, request_iterator), name="trtinfer-grpc-stream",
                         daemon=True).start()
        try:
            while True:
                item = stream.take(POLL_S)
                if item is None:
                    if stream.close_if_idle_and_refusing():
                        _abort(context, _refused())
                    continue
                if item is _Stream.END:
                    return
                if item is _Stream.REFUSED:
                    _abort(context, _refused())
                try:
                    yield self._stream_response(item)
                finally:
                    stream.answered()
        finally:
            stream.close()

    def _read(self, stream: _Stream, requests: Iterator[Any]) -> None:
        try:
            for request in requests:
                if not stream.accept():
                    return
                stream.put(self._queue(request))
        except Exception as exc:  # noqa: BLE001 -- the call ended (cancelled, past its deadline) while reading
            log.debug("a gRPC stream ended while its requests were read: %r", exc)
        finally:
            stream.put(_Stream.END)

    def _stream_response(self, call: _Call) -> Any:
        try:
            response = service_pb2.ModelStreamInferResponse(infer_response=self._answer(call, "grpc_stream_infer"))
        except Exception as exc:  # noqa: BLE001 -- answered in the stream, which goes on
            answer = failure(exc)
            if answer.internal:
                log.error("internal error", exc_info=exc)
            request = call.request
            response = service_pb2.ModelStreamInferResponse(error_message=answer.message)
            response.infer_response.id = request.id
            response.infer_response.model_name = request.model_name
            response.infer_response.model_version = request.model_version
        response.infer_response.parameters["triton_final_response"].bool_param = True
        return response

    def _queue(self, request: Any) -> _Call:
        """Find the model, parse and check the request, decode its images, and queue it on the batcher; what
        fails is kept for :meth:`_answer`."""
        call = _Call(request, time.perf_counter())
        try:
            self.state.check_accepting()
            call.served, image = service.find(self.state, request.model_name, request.model_version)
            call.parsed = parse_grpc_request(request, self.state.limits, image)
            x = service.model_input(self.state, call.served, image, call.parsed)
            call.input_s = time.perf_counter() - call.started
            call.future = service.submit(call.served, x, call.parsed)
        except Exception as exc:  # noqa: BLE001 -- answered in turn
            call.error = exc
        return call

    def _answer(self, call: _Call, endpoint: str) -> Any:
        """Wait for a queued call's logits and build its response (raises what failed); count it in the metrics
        and statistics either way."""
        ok, status, reason, built = False, 200, "OTHER", 0.0
        try:
            if call.error is not None:
                raise call.error
            assert call.future is not None and call.parsed is not None and call.served is not None
            wait = self.timeout_s + call.parsed.timeout_us / 1e6
            if not futures.wait([call.future], timeout=wait).done:
                call.future.cancel()
                raise ServeError(504, f"no result within {wait:g} s")
            logits = np.asarray(call.future.result())
            built = time.perf_counter()
            response = infer_response(call.request.model_name, call.parsed, logits, call.served)
            ok = True
            return response
        except Exception as exc:
            answer = failure(exc)
            status, reason = answer.status, answer.reason
            raise
        finally:
            now = time.perf_counter()
            self.state.metrics.record(self.state.metric_name(call.request.model_name), endpoint, status,
                                      now - call.started)
            if call.served is not None:
                self.state.statistics.record(call.served.name, ok, now - call.started, call.input_s if ok else 0.0,
                                             now - built if ok else 0.0, reason)

    def _unsupported(self, method: str, context: Any) -> NoReturn:
        extension = UNSUPPORTED.get(method, f"{method} call")
        message = f"trtinfer serve does not implement the {extension}"
        with self._told_lock:
            first = method not in self._told
            self._told.add(method)
        if first:
            log.warning("gRPC %s: %s; answered UNIMPLEMENTED (said once)", method, message)
        context.abort(grpc.StatusCode.UNIMPLEMENTED, message)
        raise RuntimeError("grpc's context.abort returned")


def _unsupported_rpc(method: str) -> Callable[..., Any]:
    def rpc(self: InferenceService, request: Any, context: Any) -> Any:
        self._unsupported(method, context)

    rpc.__name__ = method
    return rpc


# Every RPC of the service this server does not implement (the generated base class would log an ERROR and a
# traceback for each call): UNIMPLEMENTED naming the extension.
for _method in [m for m in vars(service_pb2_grpc.GRPCInferenceServiceServicer) if not m.startswith("_")]:
    if _method not in vars(InferenceService):
        setattr(InferenceService, _method, _unsupported_rpc(_method))


class Health(HealthServicer):
    """``grpc.health.v1`` for the server ("") and ``inference.GRPCInferenceService``: SERVING when ready (the
    models warmed up, not draining), NOT_SERVING otherwise. ``Check`` reads readiness when asked (what
    Kubernetes' gRPC probe calls); a thread follows it for ``Watch`` streams until the server refuses new
    requests, when both stay NOT_SERVING."""

    SERVICES = ("", INFERENCE_SERVICE)

    def __init__(self, state: ServerState) -> None:
        super().__init__()
        self._state = state
        self._serving: bool | None = None
        self._update_lock = threading.Lock()
        self.refresh()
        threading.Thread(target=self._follow, name="trtinfer-grpc-health", daemon=True).start()

    def refresh(self) -> None:
        serving = self._state.ready()
        with self._update_lock:
            if serving != self._serving:
                self._serving = serving
                status = health_pb2.HealthCheckResponse.SERVING if serving else \
                    health_pb2.HealthCheckResponse.NOT_SERVING
                for name in self.SERVICES:
                    self.set(name, status)

    def _follow(self) -> None:
        while not self._state.refusing:
            self.refresh()
            time.sleep(POLL_S)
        self.enter_graceful_shutdown()

    def Check(self, request: Any, context: Any) -> Any:  # noqa: N802
        self.refresh()
        return super().Check(request, context)


def start_grpc(state: ServerState, host: str, port: int, workers: int = 64) -> grpc.Server:
    """A started gRPC server for ``state``'s models, with ``grpc.health.v1``; ``stop(grace)`` ends it. A message
    is bounded as an HTTP body is (``--max-body-mb``). Each open stream holds one of the ``workers`` threads."""
    options = [("grpc.max_receive_message_length", state.limits.max_body_bytes),
               ("grpc.max_send_message_length", state.limits.max_body_bytes)]
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="trtinfer-grpc"),
                         options=options)
    service_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(InferenceService(state), server)
    health_pb2_grpc.add_HealthServicer_to_server(Health(state), server)
    bound = server.add_insecure_port(f"{host}:{port}")
    if bound == 0:
        raise DataError(f"cannot listen for gRPC on {host}:{port}", hint="choose another --grpc-port")
    server.start()
    return server
