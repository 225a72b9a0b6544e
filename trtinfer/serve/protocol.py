"""The Open Inference Protocol (KServe v2, the protocol Triton speaks) as plain functions: request
parsing and response building for JSON tensors, the binary tensor extension and the classification
extension. No web framework here: ``app.py`` moves bytes, this module decides what they mean.

References: KServe's "Open Inference Protocol (V2 Inference Protocol)" REST spec; Triton's
``binary_data.md`` (``Inference-Header-Content-Length``, ``binary_data_size``,
``binary_data_output``) and ``classification.md`` (``"classification": k`` returns BYTES
``value:index:label``, the output's own value, best first).
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass, field
from typing import Any

import numpy as np

HEADER_LENGTH = "Inference-Header-Content-Length"
#: OIP datatype <-> numpy (BYTES is an object array of bytes).
DATATYPES: dict[str, Any] = {"BOOL": np.bool_, "UINT8": np.uint8, "UINT16": np.uint16, "UINT32": np.uint32,
                             "UINT64": np.uint64, "INT8": np.int8, "INT16": np.int16, "INT32": np.int32,
                             "INT64": np.int64, "FP16": np.float16, "FP32": np.float32, "FP64": np.float64,
                             "BYTES": np.object_}
MAX_CLASSIFICATION = 1000


class ProtocolError(Exception):
    """A request the protocol cannot accept: HTTP ``status`` and one line saying what is wrong."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


@dataclass
class InputTensor:
    name: str
    datatype: str
    shape: list[int]
    array: np.ndarray


@dataclass
class OutputRequest:
    name: str
    binary: bool
    classification: int = 0


@dataclass
class InferRequest:
    id: str | None
    inputs: list[InputTensor]
    outputs: list[OutputRequest] = field(default_factory=list)
    binary_output_default: bool = False  # the request's "binary_data_output" parameter
    timeout_us: int = 0  # the schedule-policy "timeout" parameter (microseconds, as Triton's); 0: the server's


def _check_shape(name: str, shape: Any) -> list[int]:
    if not isinstance(shape, list) or not shape or len(shape) > 8 or \
            not all(isinstance(d, int) and not isinstance(d, bool) and 0 <= d <= 1 << 31 for d in shape):
        raise ProtocolError(f"input {name!r}: shape {shape!r} must be a list of 1 to 8 non-negative integers")
    return shape


def _elements(shape: list[int]) -> int:
    return int(np.prod(shape, dtype=np.int64))


def decode_bytes_tensor(data: bytes, count: int, name: str) -> np.ndarray:
    """BYTES in the binary extension: each element a 4-byte little-endian length, then its bytes."""
    out: list[bytes] = []
    offset = 0
    for _ in range(count):
        if offset + 4 > len(data):
            raise ProtocolError(f"input {name!r}: binary BYTES data ends inside element {len(out)} of {count}")
        (length,) = struct.unpack_from("<I", data, offset)
        offset += 4
        if offset + length > len(data):
            raise ProtocolError(f"input {name!r}: BYTES element {len(out)} says {length} bytes, "
                                f"{len(data) - offset} remain")
        out.append(bytes(data[offset:offset + length]))
        offset += length
    if offset != len(data):
        raise ProtocolError(f"input {name!r}: {len(data) - offset} bytes left after {count} BYTES elements")
    array = np.empty(count, dtype=object)
    array[:] = out
    return array


def encode_bytes_tensor(values: list[bytes]) -> bytes:
    return b"".join(struct.pack("<I", len(v)) + v for v in values)


def _decode_input(spec: Any, binary: memoryview | None, offset: int) -> tuple[InputTensor, int]:
    if not isinstance(spec, dict):
        raise ProtocolError(f"each input must be an object, got {type(spec).__name__}")
    name = spec.get("name")
    if not isinstance(name, str) or not name:
        raise ProtocolError("an input has no name")
    datatype = spec.get("datatype")
    if datatype not in DATATYPES:
        raise ProtocolError(f"input {name!r}: datatype {datatype!r} is not one of {', '.join(DATATYPES)}")
    shape = _check_shape(name, spec.get("shape"))
    count = _elements(shape)
    params = spec.get("parameters") or {}
    if not isinstance(params, dict):
        raise ProtocolError(f"input {name!r}: parameters must be an object")
    size = params.get("binary_data_size")
    if size is not None:
        if binary is None:
            raise ProtocolError(f"input {name!r} has binary_data_size but the request has no "
                                f"{HEADER_LENGTH} header", status=400)
        if not isinstance(size, int) or isinstance(size, bool) or size < 0 or offset + size > len(binary):
            raise ProtocolError(f"input {name!r}: binary_data_size {size!r} runs past the {len(binary) - offset} "
                                "binary bytes left in the request")
        chunk = binary[offset:offset + size]
        offset += size
        if datatype == "BYTES":
            array = decode_bytes_tensor(bytes(chunk), count, name)
        else:
            dtype = np.dtype(DATATYPES[datatype])
            if size != count * dtype.itemsize:
                raise ProtocolError(f"input {name!r}: {size} bytes of binary data for shape {shape} {datatype} "
                                    f"({count * dtype.itemsize} expected)")
            array = np.frombuffer(chunk, dtype=dtype.newbyteorder("<")).astype(dtype, copy=False)
    else:
        data = spec.get("data")
        if data is None:
            raise ProtocolError(f"input {name!r} has neither data nor binary_data_size")
        if datatype == "BYTES":
            flat = np.asarray(data, dtype=object).ravel()
            values = [v.encode() if isinstance(v, str) else v for v in flat]
            if not all(isinstance(v, bytes) for v in values):
                raise ProtocolError(f"input {name!r}: BYTES data must be strings")
            array = np.empty(len(values), dtype=object)
            array[:] = values
        else:
            try:
                array = np.asarray(data, dtype=DATATYPES[datatype]).ravel()
            except (TypeError, ValueError, OverflowError) as exc:
                raise ProtocolError(f"input {name!r}: data is not {datatype} numbers ({exc})") from None
    if array.size != count:
        raise ProtocolError(f"input {name!r}: {array.size} elements for shape {shape} ({count} expected)")
    return InputTensor(name, datatype, shape, array.reshape(shape)), offset


def parse_infer_request(body: bytes, header_length: str | None) -> InferRequest:
    """An infer request body -> its tensors. ``header_length``: the ``Inference-Header-Content-Length``
    header (binary extension: JSON first, the tensors' bytes after it, in input order)."""
    binary = None
    if header_length is not None:
        try:
            length = int(header_length)
        except ValueError:
            raise ProtocolError(f"{HEADER_LENGTH} {header_length!r} is not a number") from None
        if not 0 <= length <= len(body):
            raise ProtocolError(f"{HEADER_LENGTH} {length} is outside the {len(body)}-byte body")
        json_part, binary = body[:length], memoryview(body)[length:]
    else:
        json_part = body
    try:
        header = json.loads(json_part)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise ProtocolError(f"the request is not JSON ({type(exc).__name__}: {exc})") from None
    if not isinstance(header, dict):
        raise ProtocolError("the request must be a JSON object with \"inputs\"")
    raw_inputs = header.get("inputs")
    if not isinstance(raw_inputs, list) or not raw_inputs:
        raise ProtocolError("the request has no \"inputs\" list")
    inputs, offset = [], 0
    for spec in raw_inputs:
        tensor, offset = _decode_input(spec, binary, offset)
        inputs.append(tensor)
    if binary is not None and offset != len(binary):
        raise ProtocolError(f"{len(binary) - offset} binary bytes after the last input's binary_data_size")
    params = header.get("parameters") or {}
    if not isinstance(params, dict):
        raise ProtocolError("the request's \"parameters\" must be an object")
    default_binary = bool(params.get("binary_data_output", False))
    timeout_us = schedule_policy(params.get("timeout"), params.get("priority"))
    outputs = []
    for spec in header.get("outputs") or []:
        if not isinstance(spec, dict) or not isinstance(spec.get("name"), str):
            raise ProtocolError("each requested output must be an object with a name")
        p = spec.get("parameters") or {}
        k = p.get("classification", 0)
        if not isinstance(k, int) or isinstance(k, bool) or not 0 <= k <= MAX_CLASSIFICATION:
            raise ProtocolError(f"output {spec['name']!r}: classification {k!r} must be an integer "
                                f"0..{MAX_CLASSIFICATION}")
        outputs.append(OutputRequest(spec["name"], bool(p.get("binary_data", default_binary)), k))
    request_id = header.get("id")
    return InferRequest(request_id if isinstance(request_id, str) else None, inputs, outputs, default_binary,
                        timeout_us)


MAX_TIMEOUT_US = 3600 * 10**6


def schedule_policy(timeout: Any, priority: Any) -> int:
    """The request's schedule-policy parameters (Triton's ``schedule_policy`` extension): ``timeout`` in
    microseconds (0 or absent: the server's own), ``priority`` (one level here: 0 or absent). Returns the
    timeout."""
    if priority not in (None, 0) and not (isinstance(priority, int) and not isinstance(priority, bool)
                                          and priority == 0):
        raise ProtocolError(f"parameter priority {priority!r} is not supported: this server has one priority "
                            "level (send 0 or leave it out)")
    if timeout is None:
        return 0
    if not isinstance(timeout, int) or isinstance(timeout, bool) or not 0 <= timeout <= MAX_TIMEOUT_US:
        raise ProtocolError(f"parameter timeout {timeout!r} must be a whole number of microseconds, "
                            f"0..{MAX_TIMEOUT_US}")
    return timeout


def classify(values: np.ndarray, labels: list[str], k: int) -> np.ndarray:
    """Triton's classification extension: per row, the ``k`` largest values as ``value:index:label``."""
    k = min(k, values.shape[-1])
    order = np.argsort(-values, axis=-1, kind="stable")[..., :k]
    out = np.empty(order.shape, dtype=object)
    for index in np.ndindex(order.shape):
        cls = int(order[index])
        value = float(values[index[:-1] + (cls,)])
        out[index] = f"{value:f}:{cls}:{labels[cls]}".encode()
    return out


def build_infer_response(model_name: str, model_version: str, request: InferRequest,
                         outputs: dict[str, np.ndarray], labels: list[str]) -> tuple[bytes, dict[str, str]]:
    """The response body and its extra headers (``Inference-Header-Content-Length`` when binary)."""
    wanted = request.outputs or [OutputRequest(name, request.binary_output_default) for name in outputs]
    header_outputs, chunks = [], []
    for want in wanted:
        if want.name not in outputs:
            raise ProtocolError(f"the model has no output {want.name!r} (it has {', '.join(outputs)})")
        array = outputs[want.name]
        datatype = "FP32"
        if want.classification:
            array = classify(array, labels, want.classification)
            datatype = "BYTES"
        entry: dict[str, Any] = {"name": want.name, "datatype": datatype, "shape": list(array.shape)}
        if want.binary:
            raw = encode_bytes_tensor(list(array.ravel())) if datatype == "BYTES" else \
                np.ascontiguousarray(array, dtype="<f4").tobytes()
            entry["parameters"] = {"binary_data_size": len(raw)}
            chunks.append(raw)
        elif datatype == "BYTES":
            entry["data"] = [v.decode() for v in array.ravel()]
        else:
            entry["data"] = np.asarray(array, dtype=np.float64).ravel().tolist()
        header_outputs.append(entry)
    header: dict[str, Any] = {"model_name": model_name, "model_version": model_version, "outputs": header_outputs}
    if request.id is not None:
        header["id"] = request.id
    head = json.dumps(header, separators=(",", ":")).encode()
    if not chunks:
        return head, {}
    return head + b"".join(chunks), {HEADER_LENGTH: str(len(head))}
