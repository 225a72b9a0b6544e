"""trtinfer/serve/protocol.py: the Open Inference Protocol's request and response forms, on plain bytes."""

from __future__ import annotations

import json

import numpy as np
import pytest

from trtinfer.serve import protocol
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
    (b'{"inputs": [{"name": "input", "datatype": "FP32", "shape": [1], "data": ["a"]}]}', None, "not FP32 numbers"),
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
    raw = protocol.encode_bytes_tensor(values)
    assert list(protocol.decode_bytes_tensor(raw, 3, "image")) == values
    with pytest.raises(ProtocolError, match="ends inside element 2"):
        protocol.decode_bytes_tensor(raw[:-len(values[2]) - 4], 3, "image")
    with pytest.raises(ProtocolError, match="bytes left after 2"):
        protocol.decode_bytes_tensor(raw, 2, "image")


def test_classification_is_value_index_label_best_first():
    logits = np.array([[0.1, 2.5, -1.0], [3.0, 0.0, 1.0]], np.float32)
    out = protocol.classify(logits, ["cat", "dog", "ship"], 2)
    assert out.tolist() == [[b"2.500000:1:dog", b"0.100000:0:cat"], [b"3.000000:0:cat", b"1.000000:2:ship"]]


def test_responses_json_binary_and_classification():
    logits = np.array([[0.5, -1.25]], np.float32)
    request = parse_infer_request(*binary_request(np.zeros((1, 2), np.float32),
                                                  [{"name": "logits", "parameters": {"binary_data": True}}]))
    body, headers = protocol.build_infer_response("m", "1", request, {"logits": logits}, ["a", "b"])
    length = int(headers[HEADER_LENGTH])
    head = json.loads(body[:length])
    assert head["outputs"][0]["parameters"]["binary_data_size"] == 8
    assert np.array_equal(np.frombuffer(body[length:], "<f4"), logits.ravel())
    request = parse_infer_request(json.dumps({"inputs": [{"name": "input", "datatype": "FP32", "shape": [1],
                                                          "data": [0]}],
                                              "outputs": [{"name": "logits",
                                                           "parameters": {"classification": 1}}]}).encode(), None)
    body, headers = protocol.build_infer_response("m", "1", request, {"logits": logits}, ["a", "b"])
    assert headers == {} and json.loads(body)["outputs"][0] == {"name": "logits", "datatype": "BYTES", "shape": [1, 1],
                                                                 "data": ["0.500000:0:a"]}
    request.outputs[0].name = "nope"
    with pytest.raises(ProtocolError, match="no output 'nope'"):
        protocol.build_infer_response("m", "1", request, {"logits": logits}, ["a", "b"])
