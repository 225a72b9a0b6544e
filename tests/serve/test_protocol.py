"""trtinfer/serve/protocol.py: the Open Inference Protocol's request and response forms, on plain bytes."""

from __future__ import annotations

import json

import numpy as np
import pytest

from trtinfer.serve import outputs, protocol
from trtinfer.serve.protocol import HEADER_LENGTH, ProtocolError, parse_infer_request


def binary_request(x: np.ndarray, outputs=None) -> tuple[bytes, str]:
    header = {"inputs": [{"name": "input", "datatype": "FP32", "shape": list(x.shape),
                          "parameters": {"binary_data_size": x.nbytes}}]}
    if outputs is not None:
        header["outputs"] = outputs
    head = json.dumps(header).encode()
    return head + x.astype("<f4").tobytes(), str(len(head))


def test_json_and_binary_tensors_parse_alike():
    x = np.arange(24, dtype=np.float32).reshape(2, 3, 2, 2)
    body = json.dumps({"id": "r1", "inputs": [{"name": "input", "datatype": "FP32", "shape": [2, 3, 2, 2],
                                              "data": x.ravel().tolist()}]}).encode()
    from_json = parse_infer_request(body, None)
    from_binary = parse_infer_request(*binary_request(x))
    assert from_json.id == "r1" and np.array_equal(from_json.inputs[0].array, x)
    assert np.array_equal(from_binary.inputs[0].array, x) and from_binary.inputs[0].array.dtype == np.float32


_RUNS_PAST = b'{"inputs": [{"name": "i", "datatype": "FP32", "shape": [2], "parameters": {"binary_data_size": 12}}]}'


@pytest.mark.parametrize("body, header, message", [
    (b"not json", None, "not JSON"),
    (b"[]", None, "JSON object"),
    (b'{"inputs": []}', None, "no \\\"inputs\\\""),
    (b'{"inputs": [{"name": "input", "datatype": "FP33", "shape": [1], "data": [1]}]}', None, "datatype 'FP33'"),
    (b'{"inputs": [{"name": "input", "datatype": "FP32", "shape": [2, 2], "data": [1, 2, 3]}]}', None,
     "3 elements for shape \\[2, 2\\] \\(4 expected\\)"),
    (b'{"inputs": [{"name": "input", "datatype": "FP32", "shape": "2", "data": [1]}]}', None, "shape '2'"),
    (b'{"inputs": [{"name": "input", "datatype": "FP32", "shape": [1], "data": ["a"]}]}', None, "FP32 data must be numbers"),
    (b'{"inputs": [{"name": "input", "datatype": "FP32", "shape": [2], "parameters": {"binary_data_size": 8}}]}',
     None, "no Inference-Header-Content-Length"),
    (_RUNS_PAST + b"1234", str(len(_RUNS_PAST)), "runs past"),
    (b"{}", "99", "outside the 2-byte body"),
])
def test_bad_requests_name_the_problem(body, header, message):
    with pytest.raises(ProtocolError, match=message) as info:
        parse_infer_request(body, header)
    assert info.value.status == 400


def test_binary_size_must_match_the_shape():
    x = np.zeros((2, 3), np.float32)
    body, length = binary_request(x)
    head = json.loads(body[:int(length)])
    head["inputs"][0]["shape"] = [2, 2]
    new_head = json.dumps(head).encode()
    with pytest.raises(ProtocolError, match="24 bytes of binary data for shape \\[2, 2\\] FP32 \\(16 expected\\)"):
        parse_infer_request(new_head + x.tobytes(), str(len(new_head)))


def test_bytes_tensors_round_trip_and_refuse_truncation():
    values = [b"\x89PNG...", b"", b"\xff\xd8\xffjpeg"]
    raw = outputs.encode_bytes_tensor(values)
    assert list(protocol.decode_bytes_tensor(raw, 3, "image")) == values
    with pytest.raises(ProtocolError, match="ends inside element 2"):
        protocol.decode_bytes_tensor(raw[:-len(values[2]) - 4], 3, "image")
    with pytest.raises(ProtocolError, match="bytes left after 2"):
        protocol.decode_bytes_tensor(raw, 2, "image")


# -- hostile requests: every one a 400 naming the field, never another exception ----------------------------------
def _doc(**changes) -> dict:
    """A good one-input request with ``changes`` merged into its input (None: leave the field out); ``inputs``,
    ``outputs`` and ``id`` are the request's own."""
    top = {k: changes.pop(k) for k in ("inputs", "outputs", "id") if k in changes}
    spec = {k: v for k, v in {"name": "input", "datatype": "FP32", "shape": [1, 2], "data": [0.5, 1.5],
                              **changes}.items() if v is not None}
    return {"inputs": [spec], **top}


def _json(document) -> bytes:
    return json.dumps(document).encode()


def _binary(document: dict, payload: bytes) -> tuple[bytes, str]:
    head = _json(document)
    return head + payload, str(len(head))


_HUGE = [1 << 31] * 4


def _nest(depth: int) -> list:
    value: list = [1.0]
    for _ in range(depth):
        value = [value]
    return value


_DIGITS = "9" * 5000
HOSTILE = [
    # (id, body, Inference-Header-Content-Length, the message's words)
    ("absurd-shape-json", _json(_doc(shape=_HUGE)), None, r"shape \[2147483648.*elements"),
    ("absurd-shape-binary", *_binary(_doc(shape=_HUGE, data=None, parameters={"binary_data_size": 8}),
                                     b"\0" * 8), r"8 bytes of binary data for shape \[2147483648, .*\] FP32 \(\d{30,}"),
    ("absurd-shape-bytes-binary", *_binary(_doc(datatype="BYTES", shape=_HUGE, data=None,
                                                parameters={"binary_data_size": 8}), b"\0" * 8),
     r"input 'input': [\d,]{40,} BYTES elements, more than the 64 allowed per request"),
    ("negative-dim", _json(_doc(shape=[-1, 2])), None, r"shape \[-1, 2\]"),
    ("nine-dims", _json(_doc(shape=[1] * 9)), None, "shape"),
    ("bool-dim", _json(_doc(shape=[True, 2])), None, "shape"),
    ("5000-digit-int-in-data", b'{"inputs":[{"name":"input","datatype":"FP32","shape":[1],"data":[' +
     _DIGITS.encode() + b"]}]}", None, "not JSON.*digits"),
    ("5000-digit-int-in-shape", b'{"inputs":[{"name":"input","datatype":"FP32","shape":[' + _DIGITS.encode() +
     b'],"data":[1]}]}', None, "not JSON.*digits"),
    ("5000-digit-header-length", b"{}", _DIGITS, "Inference-Header-Content-Length '9999.*not a"),
    ("negative-header-length", b"{}", "-2", "Inference-Header-Content-Length '-2' is not"),
    ("header-length-words", b"{}", "two", "Inference-Header-Content-Length 'two' is not"),
    ("nan-literal", b'{"inputs":[{"name":"input","datatype":"FP32","shape":[1],"data":[NaN]}]}', None,
     "NaN is not JSON"),
    ("infinity-literal", b'{"inputs":[{"name":"input","datatype":"FP32","shape":[1],"data":[-Infinity]}]}', None,
     "-Infinity is not JSON"),
    ("fp32-overflow", b'{"inputs":[{"name":"input","datatype":"FP32","shape":[1],"data":[1e39]}]}', None,
     "input 'input': data has values outside FP32's range"),
    ("float-overflow", b'{"inputs":[{"name":"input","datatype":"FP64","shape":[1],"data":[1e999]}]}', None,
     "input 'input': data has values outside FP64's range"),
    ("int8-overflow", _json(_doc(datatype="INT8", data=[1, 300])), None, "outside INT8's range"),
    ("float-for-int", _json(_doc(datatype="INT32", data=[1, 2.5])), None, "INT32 data must be whole numbers"),
    ("not-utf8", b'{"inputs": "\xff\xfe"}', None, "not JSON.*UnicodeDecodeError"),
    ("deep-nesting", b"[" * 100_000 + b"]" * 100_000, None, "not JSON.*nested too deeply"),
    ("deep-data", _json(_doc(shape=[1], data=_nest(40))), None, "input 'input'"),
    ("ragged-data", _json(_doc(data=[[1.0], [1.0, 2.0]])), None, "input 'input': data"),
    ("bytes-where-fp32", _json(_doc(data=["0.5", "1.5"])), None, "input 'input': FP32 data must be numbers"),
    ("bools-where-fp32", _json(_doc(data=[True, False])), None, "input 'input': FP32 data must be numbers"),
    ("object-data", _json(_doc(data={"a": 1})), None, "input 'input': FP32 data must be numbers"),
    ("lone-surrogate", b'{"inputs":[{"name":"input","datatype":"BYTES","shape":[1],"data":["\\ud800"]}]}', None,
     "BYTES element 0 is not valid Unicode"),
    ("numbers-where-bytes", _json(_doc(datatype="BYTES", data=[1, 2])), None, "BYTES data must be strings"),
    ("numbers-where-bool", _json(_doc(datatype="BOOL", data=[1, 0])), None, "BOOL data must be true or false"),
    ("datatype-list", _json(_doc(datatype=["FP32"])), None, r"datatype \['FP32'\] is not one of"),
    ("datatype-missing", _json(_doc(datatype=None)), None, "datatype None is not one of"),
    ("name-number", _json(_doc(name=7)), None, "an input's name must be a non-empty string"),
    ("input-not-object", _json({"inputs": [5]}), None, "each input must be an object"),
    ("inputs-object", _json({"inputs": {"name": "input"}}), None, r"no \"inputs\" list"),
    ("data-and-binary", *_binary(_doc(parameters={"binary_data_size": 8}), b"\0" * 8),
     "input 'input' has both data and binary_data_size"),
    ("binary-size-string", *_binary(_doc(data=None, parameters={"binary_data_size": "8"}), b"\0" * 8),
     "binary_data_size '8'"),
    ("binary-size-negative", *_binary(_doc(data=None, parameters={"binary_data_size": -8}), b"\0" * 8),
     "binary_data_size -8"),
    ("input-parameters-list", _json(_doc(parameters=[1])), None, "input 'input': parameters must be an object"),
    ("input-parameters-zero", _json(_doc(parameters=0)), None, "input 'input': parameters must be an object"),
    ("request-parameters-list", _json(_doc(parameters=None) | {"parameters": []}), None,
     "the request's \"parameters\" must be an object"),
    ("binary-data-output-string", _json(_doc() | {"parameters": {"binary_data_output": "false"}}), None,
     "parameter binary_data_output 'false' must be true or false"),
    ("timeout-string", _json(_doc() | {"parameters": {"timeout": "5"}}), None, "parameter timeout '5'"),
    ("timeout-negative", _json(_doc() | {"parameters": {"timeout": -1}}), None, "parameter timeout -1"),
    ("timeout-float", _json(_doc() | {"parameters": {"timeout": 1.5}}), None, "parameter timeout 1.5"),
    ("priority-1", _json(_doc() | {"parameters": {"priority": 1}}), None, "parameter priority 1 is not supported"),
    ("priority-string", _json(_doc() | {"parameters": {"priority": "0"}}), None, "parameter priority '0'"),
    ("outputs-number", _json(_doc(outputs=5)), None, "\"outputs\" must be a list of objects"),
    ("outputs-object", _json(_doc(outputs={"name": "logits"})), None, "\"outputs\" must be a list of objects"),
    ("outputs-of-strings", _json(_doc(outputs=["logits"])), None, "each requested output must be an object"),
    ("output-name-number", _json(_doc(outputs=[{"name": 3}])), None, "each requested output must be an object "
                                                                      "with a name"),
    ("output-parameters-list", _json(_doc(outputs=[{"name": "logits", "parameters": [1]}])), None,
     "output 'logits': parameters must be an object"),
    ("output-binary-string", _json(_doc(outputs=[{"name": "logits", "parameters": {"binary_data": "yes"}}])), None,
     "output 'logits': binary_data 'yes' must be true or false"),
    ("classification-float", _json(_doc(outputs=[{"name": "logits", "parameters": {"classification": 1.5}}])),
     None, "output 'logits': classification 1.5"),
    ("classification-huge", _json(_doc(outputs=[{"name": "logits", "parameters": {"classification": 10**9}}])),
     None, "output 'logits': classification 1000000000"),
    ("id-number", _json(_doc(id=5)), None, "\"id\" must be a string"),
]


@pytest.mark.parametrize("body, header, message", [case[1:] for case in HOSTILE], ids=[case[0] for case in HOSTILE])
def test_hostile_requests_are_400s_naming_the_field(body, header, message):
    with pytest.raises(ProtocolError, match=message) as info:
        parse_infer_request(body, header, max_bytes_elements=64)
    assert info.value.status == 400 and "\n" not in info.value.message


def test_a_good_request_of_every_kind_still_parses():
    parsed = parse_infer_request(_json(_doc(id="r", outputs=[{"name": "logits", "parameters": {
        "binary_data": False, "classification": 2}}]) | {"parameters": {"binary_data_output": True, "timeout": 7,
                                                                        "priority": 0}}), None)
    assert parsed.id == "r" and parsed.timeout_us == 7 and parsed.binary_output_default
    assert parsed.outputs == [protocol.OutputRequest("logits", False, 2)]
    for datatype, data, expected in [("INT8", [1, -2], np.int8), ("UINT8", [0, 255], np.uint8),
                                     ("BOOL", [True, False], np.bool_), ("FP16", [0.5, 1], np.float16),
                                     ("INT64", [2**62, -1], np.int64), ("BYTES", ["a", "\u00e9"], object)]:
        array = parse_infer_request(_json(_doc(datatype=datatype, data=data)), None).inputs[0].array
        assert array.dtype == expected and array.shape == (1, 2) and list(array.ravel()) == \
            [v.encode() if isinstance(v, str) else v for v in data]
    nested = parse_infer_request(_json(_doc(shape=[2, 2], data=[[1, 2], [3, 4]])), None).inputs[0].array
    assert nested.dtype == np.float32 and nested.tolist() == [[1, 2], [3, 4]]
    empty = parse_infer_request(_json(_doc(shape=[0, 3], data=[])), None).inputs[0].array
    assert empty.shape == (0, 3)


def test_bytes_elements_are_bounded_before_they_are_built():
    """Three million empty strings are a 9 MB body; the shape's count is refused before any is built."""
    import time

    many = b'{"inputs":[{"name":"image","datatype":"BYTES","shape":[3000000],"data":[' + \
        b",".join([b'""'] * 3_000_000) + b"]}]}"
    started = time.perf_counter()
    with pytest.raises(ProtocolError, match="input 'image': 3,000,000 BYTES elements, more than the 64 "
                                            "allowed per request; send them in several requests"):
        parse_infer_request(many, None, max_bytes_elements=64)
    lying = b'{"inputs":[{"name":"image","datatype":"BYTES","shape":[2],"data":[' + \
        b",".join([b'""'] * 300_000) + b"]}]}"
    with pytest.raises(ProtocolError, match="input 'image': more than 2 elements for shape \\[2\\]"):
        parse_infer_request(lying, None, max_bytes_elements=64)
    raw = outputs.encode_bytes_tensor([b""] * 1000)
    with pytest.raises(ProtocolError, match="1,000 BYTES elements, more than the 64"):
        parse_infer_request(*_binary({"inputs": [{"name": "image", "datatype": "BYTES", "shape": [1000],
                                                  "parameters": {"binary_data_size": len(raw)}}]}, raw),
                            max_bytes_elements=64)
    assert time.perf_counter() - started < 20  # json.loads of the bodies; nothing per element after it


def test_the_worker_process_returns_compact_arrays_and_errors_with_their_status():
    """What the HTTP server runs in its parser process: the same answers, and what travels back is the arrays'
    data (4 bytes a float), not the JSON's Python objects."""
    import pickle

    x = np.random.default_rng(0).standard_normal((4, 3, 8, 8)).astype(np.float32)
    body = _json({"inputs": [{"name": "input", "datatype": "FP32", "shape": list(x.shape), "data": x.tolist()}]})
    parsed = protocol.parse_in_worker(body, None, 64)
    array = parsed.inputs[0].array
    assert array.dtype == np.float32 and np.array_equal(array, x) and array.flags.c_contiguous
    assert len(pickle.dumps(parsed)) < x.nbytes + 1024 < len(body) / 3
    error = pickle.loads(pickle.dumps(ProtocolError("too large", status=413)))
    assert (error.message, error.status) == ("too large", 413)
