"""The infer response for both transports (``outputs.py``): the classification extension and the HTTP body
with JSON or binary outputs, against requests parsed by the protocol."""

from __future__ import annotations

import json

import numpy as np
import pytest

from trtinfer.serve import outputs, protocol
from trtinfer.serve.protocol import HEADER_LENGTH, ProtocolError, parse_infer_request

from .test_protocol import binary_request


def test_classification_is_value_index_label_best_first():
    logits = np.array([[0.1, 2.5, -1.0], [3.0, 0.0, 1.0]], np.float32)
    out = outputs.classify(logits, ["cat", "dog", "ship"], 2)
    assert out.tolist() == [[b"2.500000:1:dog", b"0.100000:0:cat"], [b"3.000000:0:cat", b"1.000000:2:ship"]]


def test_responses_json_binary_and_classification():
    logits = np.array([[0.5, -1.25]], np.float32)
    request = parse_infer_request(*binary_request(np.zeros((1, 2), np.float32),
                                                  [{"name": "logits", "parameters": {"binary_data": True}}]))
    body, headers = outputs.build_infer_response("m", "1", request, {"logits": logits}, ["a", "b"])
    length = int(headers[HEADER_LENGTH])
    head = json.loads(body[:length])
    assert head["outputs"][0]["parameters"]["binary_data_size"] == 8
    assert np.array_equal(np.frombuffer(body[length:], "<f4"), logits.ravel())
    request = parse_infer_request(json.dumps({"inputs": [{"name": "input", "datatype": "FP32", "shape": [1],
                                                          "data": [0]}],
                                              "outputs": [{"name": "logits",
                                                           "parameters": {"classification": 1}}]}).encode(), None)
    body, headers = outputs.build_infer_response("m", "1", request, {"logits": logits}, ["a", "b"])
    assert headers == {} and json.loads(body)["outputs"][0] == {"name": "logits", "datatype": "BYTES", "shape": [1, 1],
                                                                 "data": ["0.500000:0:a"]}
    request.outputs[0].name = "nope"
    with pytest.raises(ProtocolError, match="no output 'nope'"):
        outputs.build_infer_response("m", "1", request, {"logits": logits}, ["a", "b"])


BUILD = [
    # (id, requested outputs, binary_data_output, the message's words or None)
    ("default-json", None, False, None),
    ("default-binary", None, True, None),
    ("named-binary", [protocol.OutputRequest("logits", True)], False, None),
    ("classification-binary", [protocol.OutputRequest("logits", True, 3)], False, None),
    ("classification-past-classes", [protocol.OutputRequest("logits", False, 1000)], False, None),
    ("unknown-output", [protocol.OutputRequest("probs", False)], False, "no output 'probs' \\(it has logits\\)"),
]


@pytest.mark.parametrize("wanted, binary, message", [c[1:] for c in BUILD], ids=[c[0] for c in BUILD])
def test_build_infer_response_table(wanted, binary, message):
    logits = np.array([[0.5, -1.25, 3.0]], np.float32)
    request = protocol.InferRequest("r9", [], wanted or [], binary)
    if message is not None:
        with pytest.raises(ProtocolError, match=message):
            outputs.build_infer_response("m", "1", request, {"logits": logits}, ["a", "b", "c"])
        return
    body, headers = outputs.build_infer_response("m", "1", request, {"logits": logits}, ["a", "b", "c"])
    length = int(headers.get(HEADER_LENGTH, len(body)))
    head = json.loads(body[:length])
    assert head["id"] == "r9" and head["model_name"] == "m" and head["model_version"] == "1"
    (out,) = head["outputs"]
    k = wanted[0].classification if wanted else 0
    if k:
        expected = [b"3.000000:2:c", b"0.500000:0:a", b"-1.250000:1:b"][:k]
        got = protocol.decode_bytes_tensor(body[length:], out["shape"][1], "logits").tolist() \
            if "parameters" in out else [v.encode() for v in out["data"]]
        assert out["datatype"] == "BYTES" and out["shape"] == [1, 3] and got == expected
    elif "parameters" in out:
        assert np.array_equal(np.frombuffer(body[length:], "<f4"), logits.ravel())
    else:
        assert out["data"] == logits.ravel().tolist() and headers == {}
