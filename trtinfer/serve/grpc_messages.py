"""gRPC messages <-> the protocol: a ``ModelInferRequest`` parsed into the protocol's request (raw or typed
contents, every field checked before anything is allocated for it, INVALID_ARGUMENT naming it), and the
``ModelInferResponse`` built from the logits (raw FP32, or the classification extension's BYTES)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from tritonclient.grpc import service_pb2

from . import outputs, protocol
from .options import Limits
from .protocol import ProtocolError
from .registry import VERSION, ServedModel

_CONTENTS = {"FP32": "fp32_contents", "FP64": "fp64_contents", "INT32": "int_contents", "INT64": "int64_contents",
             "UINT32": "uint_contents", "UINT64": "uint64_contents", "BOOL": "bool_contents",
             "BYTES": "bytes_contents"}


# -- parsing: a ModelInferRequest -> the protocol's request ---------------------------------------------------------
def _param(parameters: Any, key: str) -> Any:
    """An ``InferParameter``'s value, whichever kind was sent (None when absent; reading a protobuf map's missing
    key would add it)."""
    if key not in parameters:
        return None
    kind = parameters[key].WhichOneof("parameter_choice")
    return None if kind is None else getattr(parameters[key], kind)


def _shape(name: str, dims: Any, limits: Limits) -> tuple[list[int], int]:
    """A checked shape and its element count, before anything is allocated for it: the count is an exact
    integer (``np.prod`` wraps 2^31 x 2^31 x 2^31 x 2^31 around to 0) and at most what one message carries."""
    shape = [int(d) for d in dims]
    if not 1 <= len(shape) <= protocol.MAX_DIMS:
        raise ProtocolError(f"input {name!r}: a shape of {len(shape)} dimensions; send 1 to {protocol.MAX_DIMS}")
    if any(d < 0 for d in shape):
        raise ProtocolError(f"input {name!r}: shape {shape} has a negative dimension; send the tensor's actual "
                            "sizes")
    count = math.prod(shape)
    if count > limits.max_body_bytes:  # every element takes at least one byte of the message
        raise ProtocolError(f"input {name!r}: shape {shape} declares {count:,} elements, more than a message of "
                            f"{limits.max_body_bytes:,} bytes (--max-body-mb) can carry")
    return shape, count


def _input(spec: Any, raw: bytes | None, limits: Limits, image: bool) -> protocol.InputTensor:
    name, datatype = spec.name, spec.datatype
    if datatype not in protocol.DATATYPES:
        raise ProtocolError(f"input {name!r}: datatype {datatype!r} is not one of {', '.join(protocol.DATATYPES)}")
    shape, count = _shape(name, spec.shape, limits)
    if image and datatype == "BYTES" and count > limits.max_images:  # before thousands of objects are built
        raise ProtocolError(f"input {name!r}: {count:,} images in one request, more than --max-images "
                            f"{limits.max_images}; send them in several requests")
    if raw is not None:
        if datatype == "BYTES":
            if 4 * count > len(raw):
                raise ProtocolError(f"input {name!r}: {count:,} BYTES elements take at least {4 * count:,} bytes; "
                                    f"its raw_input_contents has {len(raw):,}")
            array = protocol.decode_bytes_tensor(raw, count, name)
        else:
            dtype = np.dtype(protocol.DATATYPES[datatype])
            if len(raw) != count * dtype.itemsize:
                raise ProtocolError(f"input {name!r}: {len(raw):,} raw bytes for shape {shape} {datatype} "
                                    f"({count * dtype.itemsize:,} expected)")
            array = np.frombuffer(raw, dtype=dtype.newbyteorder("<")).astype(dtype, copy=False)
    else:
        field = _CONTENTS.get(datatype)
        if field is None:
            raise ProtocolError(f"input {name!r}: send {datatype} as raw_input_contents (contents has no "
                                f"{datatype} field)")
        values = getattr(spec.contents, field)
        if len(values) != count:
            raise ProtocolError(f"input {name!r}: {len(values):,} elements in contents.{field} for shape {shape} "
                                f"({count:,} expected)")
        if datatype == "BYTES":
            array = np.empty(count, dtype=object)
            array[:] = list(values)
        else:  # element by element into the array: np.asarray would first copy them into a list (9x the array)
            array = np.fromiter(values, dtype=protocol.DATATYPES[datatype], count=count)
    return protocol.InputTensor(name, datatype, shape, array.reshape(shape))


def parse_grpc_request(request: Any, limits: Limits, image: bool = False) -> protocol.InferRequest:
    """A ``ModelInferRequest`` -> the protocol's request (raw contents in input order, or typed contents),
    with the schedule-policy parameters (``timeout`` in microseconds, ``priority``) and the classification
    extension. ``image``: the request is for a ``<model>_image`` twin (its images are bounded by count)."""
    if not request.inputs:
        raise ProtocolError("the request has no inputs")
    raw = list(request.raw_input_contents)
    if raw and len(raw) != len(request.inputs):
        raise ProtocolError(f"{len(raw)} raw_input_contents for {len(request.inputs)} inputs; send one per input, "
                            "in input order")
    timeout_us = protocol.schedule_policy(_param(request.parameters, "timeout"),
                                          _param(request.parameters, "priority"))
    if _param(request.parameters, "sequence_id") not in (None, 0, ""):
        raise ProtocolError("parameter sequence_id: this server's models are stateless (no sequence batching); "
                            "leave it out")
    inputs = [_input(spec, raw[i] if raw else None, limits, image) for i, spec in enumerate(request.inputs)]
    outputs = []
    for spec in request.outputs:
        k = _param(spec.parameters, "classification")
        if k is None:
            k = 0
        if not isinstance(k, int) or isinstance(k, bool) or not 0 <= k <= protocol.MAX_CLASSIFICATION:
            raise ProtocolError(f"output {spec.name!r}: classification {k!r} must be an integer "
                                f"0..{protocol.MAX_CLASSIFICATION}")
        outputs.append(protocol.OutputRequest(spec.name, True, k))
    return protocol.InferRequest(request.id or None, inputs, outputs, True, timeout_us)


def infer_response(name: str, parsed: protocol.InferRequest, logits: np.ndarray, served: ServedModel) -> Any:
    out_name = served.manifest.output.name
    wanted = parsed.outputs or [protocol.OutputRequest(out_name, True)]
    response = service_pb2.ModelInferResponse(model_name=name, model_version=VERSION, id=parsed.id or "")
    for want in wanted:
        if want.name != out_name:
            raise ProtocolError(f"the model has no output {want.name!r} (it has {out_name})")
        if want.classification:
            array = outputs.classify(logits, served.labels, want.classification)
            raw, datatype = outputs.encode_bytes_tensor(list(array.ravel())), "BYTES"
        else:
            array, datatype = logits, "FP32"
            raw = np.ascontiguousarray(logits, dtype="<f4").tobytes()
        response.outputs.add(name=want.name, datatype=datatype, shape=list(array.shape))
        response.raw_output_contents.append(raw)
    return response
