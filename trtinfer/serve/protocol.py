"""The Open Inference Protocol (KServe v2, the protocol Triton speaks) as plain functions: request
parsing for JSON tensors and the binary tensor extension, with the schedule-policy parameters; the
response side is ``outputs.py``. No web framework here: ``app.py`` moves bytes, this module decides what
they mean (and it is all the JSON parser process imports).

References: KServe's "Open Inference Protocol (V2 Inference Protocol)" REST spec; Triton's
``binary_data.md`` (``Inference-Header-Content-Length``, ``binary_data_size``,
``binary_data_output``) and ``classification.md`` (``"classification": k`` returns BYTES
``value:index:label``, the output's own value, best first).
"""

from __future__ import annotations

import json
import math
import struct
import sys
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .heap import trim_memory

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

    def __reduce__(self) -> Any:  # the parser process sends these back with their status
        return type(self), (self.message, self.status)


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


MAX_DIMS = 8


def _check_shape(name: str, shape: Any) -> list[int]:
    if not isinstance(shape, list) or not shape or len(shape) > MAX_DIMS or \
            not all(isinstance(d, int) and not isinstance(d, bool) and 0 <= d <= 1 << 31 for d in shape):
        raise ProtocolError(f"input {name!r}: shape {_short(shape)} must be a list of 1 to {MAX_DIMS} non-negative "
                            "integers")
    return shape


def _short(value: Any, limit: int = 80) -> str:
    """``repr`` cut to ``limit`` characters: client values quoted in an error stay one short line."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


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


def _check_bytes_count(name: str, count: int, max_elements: int | None) -> None:
    if max_elements == 0 and count:
        raise ProtocolError(f"input {name!r} is BYTES; this model takes no BYTES input (encoded images go to the "
                            "model's _image twin)")
    if max_elements is not None and count > max_elements:
        raise ProtocolError(f"input {name!r}: {count:,} BYTES elements, more than the {max_elements:,} allowed per "
                            "request; send them in several requests, or start the server with a higher --max-images")


def _strings(name: str, data: Any, shape: list[int], count: int) -> list[bytes]:
    """JSON BYTES data (strings, flat or nested) -> the elements' UTF-8 bytes, refused as soon as there are more
    than ``count`` (the shape's, already bounded) so a lying shape builds nothing big."""
    out: list[bytes] = []
    stack = [iter([data])]
    while stack:
        for item in stack[-1]:
            if isinstance(item, list):
                if len(stack) > MAX_DIMS:
                    raise ProtocolError(f"input {name!r}: data is nested deeper than {MAX_DIMS} levels")
                stack.append(iter(item))
                break
            if not isinstance(item, str):
                raise ProtocolError(f"input {name!r}: BYTES data must be strings, got {type(item).__name__}")
            if len(out) == count:
                raise ProtocolError(f"input {name!r}: more than {count:,} elements for shape {shape}")
            try:
                out.append(item.encode())
            except UnicodeEncodeError:
                raise ProtocolError(f"input {name!r}: BYTES element {len(out)} is not valid Unicode (a lone "
                                    "surrogate escape)") from None
        else:
            stack.pop()
    return out


def _numbers(name: str, datatype: str, data: Any, shape: list[int]) -> np.ndarray:
    """JSON numbers (flat, or nested as the shape) -> a compact array of ``datatype``; strings, booleans for
    numbers, fractions for integers and values outside the type's range are refused, not converted."""
    dtype = np.dtype(DATATYPES[datatype])
    try:
        raw = np.asarray(data)
    except (ValueError, TypeError, OverflowError, RecursionError):
        raise ProtocolError(f"input {name!r}: data must be a flat list of numbers, or lists nested as the shape "
                            f"{shape}") from None
    if raw.ndim > 1 and list(raw.shape) != shape:
        raise ProtocolError(f"input {name!r}: data nested as {list(raw.shape)} does not match shape {shape}")
    if raw.size:
        kind = raw.dtype.kind
        if dtype.kind == "b" and kind != "b":
            raise ProtocolError(f"input {name!r}: BOOL data must be true or false")
        if dtype.kind in "iuf" and kind not in "iuf":
            what = {"U": "strings", "b": "booleans", "O": "numbers too large or mixed values"}.get(kind, raw.dtype.name)
            raise ProtocolError(f"input {name!r}: {datatype} data must be numbers, got {what}")
        if dtype.kind in "iu":
            if kind == "f":
                raise ProtocolError(f"input {name!r}: {datatype} data must be whole numbers")
            info = np.iinfo(dtype)
            if int(raw.min()) < info.min or int(raw.max()) > info.max:
                raise ProtocolError(f"input {name!r}: data has values outside {datatype}'s range "
                                    f"{info.min}..{info.max}")
    with np.errstate(over="ignore", invalid="ignore"):
        array = raw.astype(dtype).ravel()
    if dtype.kind == "f" and not np.isfinite(array).all():
        raise ProtocolError(f"input {name!r}: data has values outside {datatype}'s range (or not finite)")
    return array


def _decode_input(spec: Any, binary: memoryview | None, offset: int, json_size: int,
                  max_bytes_elements: int | None) -> tuple[InputTensor, int]:
    if not isinstance(spec, dict):
        raise ProtocolError(f"each input must be an object, got {type(spec).__name__}")
    name = spec.get("name")
    if not isinstance(name, str) or not name:
        raise ProtocolError(f"an input's name must be a non-empty string, got {_short(name)}")
    datatype = spec.get("datatype")
    if not isinstance(datatype, str) or datatype not in DATATYPES:
        raise ProtocolError(f"input {name!r}: datatype {_short(datatype)} is not one of {', '.join(DATATYPES)}")
    shape = _check_shape(name, spec.get("shape"))
    count = math.prod(shape)  # exact: [2^31] * 8 is 2^248, checked against the body before anything is allocated
    if datatype == "BYTES":
        _check_bytes_count(name, count, max_bytes_elements)
    params = spec.get("parameters")
    if params is None:
        params = {}
    if not isinstance(params, dict):
        raise ProtocolError(f"input {name!r}: parameters must be an object, got {_short(params)}")
    size = params.get("binary_data_size")
    data = spec.get("data")
    if size is not None:
        if data is not None:
            raise ProtocolError(f"input {name!r} has both data and binary_data_size: send one")
        if binary is None:
            raise ProtocolError(f"input {name!r} has binary_data_size but the request has no "
                                f"{HEADER_LENGTH} header", status=400)
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise ProtocolError(f"input {name!r}: binary_data_size {_short(size)} must be a byte count")
        if offset + size > len(binary):
            raise ProtocolError(f"input {name!r}: binary_data_size {size} runs past the {len(binary) - offset} "
                                "binary bytes left in the request")
        chunk = binary[offset:offset + size]
        offset += size
        if datatype == "BYTES":
            if count * 4 > size:
                raise ProtocolError(f"input {name!r}: {size} bytes of binary data cannot hold the {count:,} BYTES "
                                    f"elements of shape {shape} (4 bytes of length each, at least)")
            array = decode_bytes_tensor(bytes(chunk), count, name)
        else:
            dtype = np.dtype(DATATYPES[datatype])
            if size != count * dtype.itemsize:
                raise ProtocolError(f"input {name!r}: {size} bytes of binary data for shape {shape} {datatype} "
                                    f"({count * dtype.itemsize} expected)")
            array = np.frombuffer(chunk, dtype=dtype.newbyteorder("<")).astype(dtype, copy=False)
    else:
        if data is None:
            raise ProtocolError(f"input {name!r} has neither data nor binary_data_size")
        if count > json_size:  # each JSON element takes a byte at least
            raise ProtocolError(f"input {name!r}: shape {shape} has {count:,} elements, more than the "
                                f"{json_size:,}-byte request can hold")
        if datatype == "BYTES":
            values = _strings(name, data, shape, count)
            array = np.empty(len(values), dtype=object)
            array[:] = values
        else:
            array = _numbers(name, datatype, data, shape)
    if array.size != count:
        raise ProtocolError(f"input {name!r}: {array.size} elements for shape {shape} ({count} expected)")
    return InputTensor(name, datatype, shape, array.reshape(shape)), offset


def _refuse_constant(name: str) -> Any:
    raise ProtocolError(f"the request is not JSON: {name} is not JSON (send finite numbers)")


def load_json(data: bytes | memoryview) -> Any:
    """Strict JSON: UTF-8, no NaN or Infinity literals, numbers of at most 4300 digits, nesting bounded by the
    interpreter's recursion limit; every refusal a :class:`ProtocolError`."""
    try:
        return json.loads(bytes(data), parse_constant=_refuse_constant)
    except RecursionError:
        raise ProtocolError("the request is not JSON this server reads: it is nested too deeply") from None
    except UnicodeDecodeError as exc:
        raise ProtocolError(f"the request is not JSON (UnicodeDecodeError: not UTF-8 at byte {exc.start})") from None
    except ValueError as exc:  # JSONDecodeError, and the int-string conversion limit
        if "digits" in str(exc) and not isinstance(exc, json.JSONDecodeError):
            raise ProtocolError("the request is not JSON this server reads: a number has more than "
                                f"{sys.get_int_max_str_digits()} digits") from None
        raise ProtocolError(f"the request is not JSON ({type(exc).__name__}: {exc})") from None


def _flag(value: Any, what: str, default: bool) -> bool:
    if value is None:
        return default
    if not isinstance(value, bool):
        raise ProtocolError(f"{what} {_short(value)} must be true or false")
    return value


def _object(value: Any, what: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ProtocolError(f"{what} must be an object, got {_short(value)}")
    return value


def header_length_value(header_length: str) -> int:
    """The ``Inference-Header-Content-Length`` header as a byte count (ASCII digits only)."""
    if not (header_length.isascii() and header_length.isdigit() and len(header_length) <= 18):
        raise ProtocolError(f"{HEADER_LENGTH} {_short(header_length, 24)} is not a byte count")
    return int(header_length)


def parse_infer_request(body: bytes, header_length: str | None,
                        max_bytes_elements: int | None = None) -> InferRequest:
    """An infer request body -> its tensors. ``header_length``: the ``Inference-Header-Content-Length``
    header (binary extension: JSON first, the tensors' bytes after it, in input order).
    ``max_bytes_elements``: the most BYTES elements an input may declare (checked before any is built; 0: the
    model takes no BYTES)."""
    binary = None
    if header_length is not None:
        length = header_length_value(header_length)
        if length > len(body):
            raise ProtocolError(f"{HEADER_LENGTH} {length} is outside the {len(body)}-byte body")
        json_part: bytes | memoryview = memoryview(body)[:length]
        binary = memoryview(body)[length:]
    else:
        json_part = body
    header = load_json(json_part)
    if not isinstance(header, dict):
        raise ProtocolError("the request must be a JSON object with \"inputs\"")
    raw_inputs = header.get("inputs")
    if not isinstance(raw_inputs, list) or not raw_inputs:
        raise ProtocolError("the request has no \"inputs\" list")
    inputs, offset = [], 0
    for spec in raw_inputs:
        tensor, offset = _decode_input(spec, binary, offset, len(json_part), max_bytes_elements)
        inputs.append(tensor)
    if binary is not None and offset != len(binary):
        raise ProtocolError(f"{len(binary) - offset} binary bytes after the last input's binary_data_size")
    params = _object(header.get("parameters"), "the request's \"parameters\"")
    default_binary = _flag(params.get("binary_data_output"), "parameter binary_data_output", False)
    timeout_us = schedule_policy(params.get("timeout"), params.get("priority"))
    raw_outputs = header.get("outputs")
    if raw_outputs is None:
        raw_outputs = []
    if not isinstance(raw_outputs, list):
        raise ProtocolError(f"\"outputs\" must be a list of objects, got {_short(raw_outputs)}")
    outputs = []
    for spec in raw_outputs:
        if not isinstance(spec, dict) or not isinstance(spec.get("name"), str):
            raise ProtocolError(f"each requested output must be an object with a name, got {_short(spec)}")
        out_name = spec["name"]
        p = _object(spec.get("parameters"), f"output {out_name!r}: parameters")
        k = p.get("classification", 0)
        if not isinstance(k, int) or isinstance(k, bool) or not 0 <= k <= MAX_CLASSIFICATION:
            raise ProtocolError(f"output {out_name!r}: classification {_short(k)} must be an integer "
                                f"0..{MAX_CLASSIFICATION}")
        binary_out = _flag(p.get("binary_data"), f"output {out_name!r}: binary_data", default_binary)
        outputs.append(OutputRequest(out_name, binary_out, k))
    request_id = header.get("id")
    if request_id is not None and not isinstance(request_id, str):
        raise ProtocolError(f"the request's \"id\" must be a string, got {_short(request_id)}")
    return InferRequest(request_id, inputs, outputs, default_binary, timeout_us)


def parse_in_worker(body: bytes, header_length: str | None, max_bytes_elements: int | None) -> InferRequest:
    """:func:`parse_infer_request` as the HTTP server's parser process runs it: a large JSON body costs 12-14
    times its size as Python objects there; the arrays sent back own only their data, and the process gives
    the freed heap back to the system after each request."""
    try:
        return parse_infer_request(body, header_length, max_bytes_elements)
    finally:
        trim_memory()


def parser_process_init() -> None:
    """The parser process leaves SIGINT to its parent (a Ctrl-C in a terminal reaches the whole process group;
    the parent shuts the worker down)."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)


MAX_TIMEOUT_US = 3600 * 10**6


def schedule_policy(timeout: Any, priority: Any) -> int:
    """The request's schedule-policy parameters (Triton's ``schedule_policy`` extension): ``timeout`` in
    microseconds (0 or absent: the server's own), ``priority`` (one level here: 0 or absent). Returns the
    timeout."""
    if priority is not None and not (type(priority) is int and priority == 0):
        raise ProtocolError(f"parameter priority {_short(priority)} is not supported: this server has one priority "
                            "level (send 0 or leave it out)")
    if timeout is None:
        return 0
    if type(timeout) is not int or not 0 <= timeout <= MAX_TIMEOUT_US:
        raise ProtocolError(f"parameter timeout {_short(timeout)} must be a whole number of microseconds, "
                            f"0..{MAX_TIMEOUT_US}")
    return timeout
