"""The Open Inference Protocol over gRPC (KServe v2 ``GRPCInferenceService``, whose definitions ship with
``tritonclient[grpc]``): the same models, checks and errors as HTTP, for clients sending tensors at
high rates. A thread-pool gRPC server beside uvicorn; each call waits on the dynamic batcher."""

from __future__ import annotations

import logging
import time
from concurrent import futures
from typing import Any

import grpc
import numpy as np
from google.protobuf import json_format
from tritonclient.grpc import model_config_pb2, service_pb2, service_pb2_grpc

from ..errors import DataError
from . import protocol, service
from .protocol import ProtocolError
from .registry import VERSION, ServedModel
from .service import ServeError, ServerState, failure

log = logging.getLogger(__name__)

_CONTENTS = {"FP32": "fp32_contents", "FP64": "fp64_contents", "INT32": "int_contents", "INT64": "int64_contents",
             "UINT32": "uint_contents", "UINT64": "uint64_contents", "BOOL": "bool_contents",
             "BYTES": "bytes_contents"}


def _abort(context: Any, exc: BaseException) -> None:
    answer = failure(exc)
    if answer.internal:
        log.error("internal error", exc_info=exc)
    context.abort(getattr(grpc.StatusCode, answer.code), answer.message)


def parse_grpc_request(request: Any) -> protocol.InferRequest:
    """A ``ModelInferRequest`` -> the protocol's request (raw contents in input order, or typed contents)."""
    raw = list(request.raw_input_contents)
    if raw and len(raw) != len(request.inputs):
        raise ProtocolError(f"{len(raw)} raw_input_contents for {len(request.inputs)} inputs")
    inputs = []
    for i, spec in enumerate(request.inputs):
        if spec.datatype not in protocol.DATATYPES:
            raise ProtocolError(f"input {spec.name!r}: datatype {spec.datatype!r} is not one of "
                                f"{', '.join(protocol.DATATYPES)}")
        shape = [int(d) for d in spec.shape]
        count = int(np.prod(shape, dtype=np.int64))
        if raw:
            if spec.datatype == "BYTES":
                array = protocol.decode_bytes_tensor(raw[i], count, spec.name)
            else:
                dtype = np.dtype(protocol.DATATYPES[spec.datatype])
                if len(raw[i]) != count * dtype.itemsize:
                    raise ProtocolError(f"input {spec.name!r}: {len(raw[i])} raw bytes for shape {shape} "
                                        f"{spec.datatype} ({count * dtype.itemsize} expected)")
                array = np.frombuffer(raw[i], dtype=dtype.newbyteorder("<")).astype(dtype, copy=False)
        else:
            field = _CONTENTS.get(spec.datatype)
            if field is None:
                raise ProtocolError(f"input {spec.name!r}: send {spec.datatype} as raw_input_contents")
            values = list(getattr(spec.contents, field))
            array = np.empty(len(values), dtype=object) if spec.datatype == "BYTES" else \
                np.asarray(values, dtype=protocol.DATATYPES[spec.datatype])
            if spec.datatype == "BYTES":
                array[:] = values
        if array.size != count:
            raise ProtocolError(f"input {spec.name!r}: {array.size} elements for shape {shape} ({count} expected)")
        inputs.append(protocol.InputTensor(spec.name, spec.datatype, shape, array.reshape(shape)))
    if not inputs:
        raise ProtocolError("the request has no inputs")
    outputs = []
    for spec in request.outputs:
        k = spec.parameters["classification"].int64_param if "classification" in spec.parameters else 0
        if not 0 <= k <= protocol.MAX_CLASSIFICATION:
            raise ProtocolError(f"output {spec.name!r}: classification {k} must be 0..{protocol.MAX_CLASSIFICATION}")
        outputs.append(protocol.OutputRequest(spec.name, True, int(k)))
    return protocol.InferRequest(request.id or None, inputs, outputs, True)


class InferenceService(service_pb2_grpc.GRPCInferenceServiceServicer):
    def __init__(self, state: ServerState, timeout_s: float = 120.0) -> None:
        self.state, self.timeout_s = state, timeout_s

    def _find(self, name: str, version: str, context: Any) -> tuple[ServedModel, bool]:
        try:
            return service.find(self.state, name, version)
        except ServeError as exc:
            _abort(context, exc)
            raise  # abort() raises; this line is for the type checker

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
        start = time.perf_counter()
        name = request.model_name
        label = self.state.metric_name(name)
        served = None
        ok = False
        self.state.enter()
        try:
            self.state.check_accepting()
            served, image = service.find(self.state, name, request.model_version)
            parsed = parse_grpc_request(request)
            x = service.model_input(self.state, served, image, parsed)
            input_s = time.perf_counter() - start
            logits = np.asarray(service.submit(served, x, parsed).result(timeout=self.timeout_s))
            built = time.perf_counter()
            response = _infer_response(name, parsed, logits, served)
            ok = True
        except Exception as exc:  # noqa: BLE001 -- every failure is a status the client can read
            self.state.metrics.record(label, "grpc_infer", failure(exc).status, time.perf_counter() - start)
            _abort(context, exc)
        finally:
            self.state.leave()
            if served is not None:
                now = time.perf_counter()
                self.state.statistics.record(served.name, ok, now - start, input_s if ok else 0.0,
                                             now - built if ok else 0.0)
        self.state.metrics.record(label, "grpc_infer", 200, time.perf_counter() - start)
        return response


def _infer_response(name: str, parsed: protocol.InferRequest, logits: np.ndarray, served: ServedModel) -> Any:
    out_name = served.manifest.output.name
    wanted = parsed.outputs or [protocol.OutputRequest(out_name, True)]
    response = service_pb2.ModelInferResponse(model_name=name, model_version=VERSION, id=parsed.id or "")
    for want in wanted:
        if want.name != out_name:
            raise ProtocolError(f"the model has no output {want.name!r} (it has {out_name})")
        if want.classification:
            array = protocol.classify(logits, served.labels, want.classification)
            raw, datatype = protocol.encode_bytes_tensor(list(array.ravel())), "BYTES"
        else:
            array, datatype = logits, "FP32"
            raw = np.ascontiguousarray(logits, dtype="<f4").tobytes()
        response.outputs.add(name=want.name, datatype=datatype, shape=list(array.shape))
        response.raw_output_contents.append(raw)
    return response


def start_grpc(state: ServerState, host: str, port: int, workers: int = 64) -> grpc.Server:
    """A started gRPC server for ``state``'s models; ``stop(grace)`` ends it. A message is bounded as an HTTP
    body is (``--max-body-mb``)."""
    options = [("grpc.max_receive_message_length", state.limits.max_body_bytes),
               ("grpc.max_send_message_length", state.limits.max_body_bytes)]
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="trtinfer-grpc"),
                         options=options)
    service_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(InferenceService(state), server)
    bound = server.add_insecure_port(f"{host}:{port}")
    if bound == 0:
        raise DataError(f"cannot listen for gRPC on {host}:{port}", hint="choose another --grpc-port")
    server.start()
    return server
