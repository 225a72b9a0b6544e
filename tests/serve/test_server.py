"""`trtinfer serve` for real: its own process on loopback ports, spoken to with tritonclient (HTTP and
gRPC, the clients Triton users already have), plain HTTP and multipart uploads of real CIFAR rows."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

import trtinfer
from trtinfer.preprocess import decode_image_bytes, preprocess

from .conftest import encode, error_of

http = pytest.importorskip("tritonclient.http")
grpcclient = pytest.importorskip("tritonclient.grpc")

X = np.random.default_rng(0).standard_normal((5, 3, 32, 32)).astype(np.float32)


@pytest.fixture(scope="module")
def reference(tiny_served):
    with trtinfer.load(tiny_served) as model:
        yield model


# -- health and metadata ----------------------------------------------------------------------------------------
def test_health_metadata_and_config(server):
    assert server.get("/v2/health/live")[0] == 200 and server.get("/v2/health/ready")[0] == 200
    status, _, body = server.get("/v2")
    assert status == 200 and set(json.loads(body)["extensions"]) >= {"binary_tensor_data", "classification"}
    for path in ("/v2/models/tiny", "/v2/models/tiny/versions/1"):
        meta = json.loads(server.get(path)[2])
        assert meta["inputs"] == [{"name": "input", "datatype": "FP32", "shape": [-1, 3, 32, 32]}]
        assert meta["outputs"] == [{"name": "logits", "datatype": "FP32", "shape": [-1, 10]}]
    assert json.loads(server.get("/v2/models/tiny_image")[2])["inputs"][0]["datatype"] == "BYTES"
    config = json.loads(server.get("/v2/models/tiny/config")[2])
    assert config["max_batch_size"] >= 1 and config["input"][0]["dims"] == [3, 32, 32]
    assert server.get("/v2/models/tiny/ready")[0] == 200
    status, _, body = server.get("/v2/models/nope")
    assert status == 404 and "unknown model 'nope'" in error_of(body)
    status, _, body = server.get("/v2/models/tiny/versions/7/ready")
    assert status == 404 and "no version '7'" in error_of(body)


# -- tensors through tritonclient --------------------------------------------------------------------------------
@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_tritonclient_http_gets_the_runtimes_logits(server, reference, binary):
    client = http.InferenceServerClient(f"127.0.0.1:{server.port}")
    assert client.is_server_ready() and client.is_model_ready("tiny")
    assert client.get_model_config("tiny")["name"] == "tiny"
    tensor = http.InferInput("input", list(X.shape), "FP32")
    tensor.set_data_from_numpy(X, binary_data=binary)
    result = client.infer("tiny", [tensor], outputs=[http.InferRequestedOutput("logits", binary_data=binary)])
    np.testing.assert_allclose(result.as_numpy("logits"), reference.infer(X), rtol=1e-4, atol=1e-4)
    top = client.infer("tiny", [tensor], outputs=[http.InferRequestedOutput("logits", binary_data=binary,
                                                                            class_count=3)]).as_numpy("logits")
    expected = np.argsort(-reference.infer(X), axis=1)[:, :3]
    got = [[int(str(v.decode() if isinstance(v, bytes) else v).split(":")[1]) for v in row] for row in top]
    assert got == expected.tolist()
    assert re.fullmatch(r"-?\d+\.\d+:\d+:\w+", (top[0][0].decode() if isinstance(top[0][0], bytes) else top[0][0]))


def test_tritonclient_grpc_gets_the_runtimes_logits(server, reference):
    client = grpcclient.InferenceServerClient(f"127.0.0.1:{server.grpc_port}")
    assert client.is_server_live() and client.is_model_ready("tiny")
    tensor = grpcclient.InferInput("input", list(X.shape), "FP32")
    tensor.set_data_from_numpy(X)
    result = client.infer("tiny", [tensor])
    np.testing.assert_allclose(result.as_numpy("logits"), reference.infer(X), rtol=1e-4, atol=1e-4)
    with pytest.raises(Exception, match="NOT_FOUND"):
        client.infer("nope", [tensor])
    bad = grpcclient.InferInput("input", [2, 3, 31, 32], "FP32")
    bad.set_data_from_numpy(np.zeros((2, 3, 31, 32), np.float32))
    with pytest.raises(Exception, match="INVALID_ARGUMENT.*shape \\[2, 3, 31, 32\\]"):
        client.infer("tiny", [bad])


@pytest.mark.parametrize("use_grpc", [False, True], ids=["http", "grpc"])
def test_image_twin_takes_encoded_cifar_rows(server, reference, cifar_images, use_grpc):
    blobs = [encode(img, "PNG") for img in cifar_images[:4]] + [encode(img, "JPEG", quality=90) for img in
                                                                  cifar_images[4:]]
    expected = reference.infer(preprocess([decode_image_bytes(b) for b in blobs], reference.manifest.preprocess))
    data = np.array(blobs, dtype=object).reshape(-1, 1)
    module = grpcclient if use_grpc else http
    client = module.InferenceServerClient(f"127.0.0.1:{server.grpc_port if use_grpc else server.port}")
    tensor = module.InferInput("image", list(data.shape), "BYTES")
    tensor.set_data_from_numpy(data)
    np.testing.assert_allclose(client.infer("tiny_image", [tensor]).as_numpy("logits"), expected, rtol=1e-4,
                               atol=1e-4)


# -- the image endpoint ----------------------------------------------------------------------------------------
def multipart(data: bytes, filename: str = "cat.png") -> tuple[bytes, dict[str, str]]:
    boundary = "trtinfer-test-boundary"
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{filename}\"\r\n"
            f"Content-Type: application/octet-stream\r\n\r\n").encode() + data + f"\r\n--{boundary}--\r\n".encode()
    return body, {"Content-Type": f"multipart/form-data; boundary={boundary}"}


def test_predict_upload_and_raw_body(server, reference, cifar_images):
    png = encode(cifar_images[0], "PNG")
    expected = reference.predict([decode_image_bytes(png)], top_k=3)[0]
    for body, headers in (multipart(png), (png, {"Content-Type": "image/png"})):
        status, _, answer = server.post("/v1/models/tiny/predict?top_k=3", body, headers)
        document = json.loads(answer)
        assert status == 200 and document["model"] == "tiny" and document["precision"] == "fp32"
        assert document["backend"] and document["latency_ms"] > 0
        assert [p["label"] for p in document["predictions"]] == [label for label, _ in expected]
        np.testing.assert_allclose([p["probability"] for p in document["predictions"]], [p for _, p in expected],
                                   rtol=1e-4, atol=1e-5)


# -- bad input: a JSON error with the status that names it ------------------------------------------------------
def bomb_png() -> bytes:
    """A valid PNG header declaring 60000 x 60000 pixels (3.6 gigapixels) with almost no data."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 60000, 60000, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b""))


def test_bad_uploads(server, cifar_images):
    png = encode(cifar_images[0], "PNG")
    cases = [
        ("/v1/models/tiny/predict", b"hello, not an image", 415, "not a JPEG, PNG or WebP"),
        ("/v1/models/tiny/predict", png[:200], 400, "truncated or corrupt"),
        ("/v1/models/tiny/predict", bomb_png(), 400, "more than the"),
        ("/v1/models/tiny/predict?top_k=0", png, 400, "top_k 0"),
        ("/v1/models/nope/predict", png, 404, "unknown model"),
    ]
    for path, body, status, message in cases:
        got, _, answer = server.post(path, body, {"Content-Type": "application/octet-stream"})
        assert got == status and message in error_of(answer), (path, got, answer[:200])
    status, answer = post_oversized(server, "/v1/models/tiny/predict", 3 << 20)
    assert status == 413 and "more than the 2,097,152 allowed" in error_of(answer)


def post_oversized(server, path: str, size: int) -> tuple[int, bytes]:
    """A body past the limit: the server answers 413 from Content-Length and may close before it is all
    sent, so the client sends what it can and then reads the answer (what a well-behaved client does)."""
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    conn.putrequest("POST", path)
    conn.putheader("Content-Length", str(size))
    conn.putheader("Content-Type", "application/octet-stream")
    conn.endheaders()
    try:
        conn.send(b"\x00" * size)
    except (BrokenPipeError, ConnectionResetError):
        pass
    response = conn.getresponse()
    try:
        return response.status, response.read()
    finally:
        conn.close()


def test_bad_tensors(server):
    def infer(document: dict, model: str = "tiny") -> tuple[int, str]:
        status, _, body = server.post(f"/v2/models/{model}/infer", json.dumps(document).encode(),
                                      {"Content-Type": "application/json"})
        return status, error_of(body)

    good = {"name": "input", "datatype": "FP32", "shape": [1, 3, 32, 32], "data": [0.0] * 3072}
    for change, message in [
        ({"shape": [1, 3, 31, 32], "data": [0.0] * 2976}, "has shape [1, 3, 31, 32]; the model takes [-1, 3, 32, 32]"),
        ({"datatype": "FP64"}, "is FP64; the model takes FP32"),
        ({"data": [0.0] * 3071}, "3071 elements for shape [1, 3, 32, 32] (3072 expected)"),
        ({"name": "pixels"}, "one input named 'input'"),
    ]:
        status, error = infer({"inputs": [{**good, **change}]})
        assert status == 400 and message in error
    assert infer({"inputs": [good]}, model="nope")[0] == 404
    status, _, body = server.post("/v2/models/tiny/infer", b"{broken", {"Content-Type": "application/json"})
    assert status == 400 and "not JSON" in error_of(body)


# -- metrics -------------------------------------------------------------------------------------------------------
def counter(text: str, name: str, **labels: str) -> float:
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


def test_metrics_move_as_requests_are_served(server):
    before = server.get("/metrics")[2].decode()
    body = json.dumps({"inputs": [{"name": "input", "datatype": "FP32", "shape": [2, 3, 32, 32],
                                   "data": [0.5] * 6144}]}).encode()
    for _ in range(3):
        assert server.post("/v2/models/tiny/infer", body, {"Content-Type": "application/json"})[0] == 200
    assert server.get("/v2/models/nope/ready")[0] == 404
    after = server.get("/metrics")[2].decode()
    assert counter(after, "trtinfer_requests_total", model="tiny", endpoint="infer", status="200") == \
        counter(before, "trtinfer_requests_total", model="tiny", endpoint="infer", status="200") + 3
    assert counter(after, "trtinfer_requests_total", model="unknown", status="404") >= 1  # one label for every unknown name
    assert counter(after, "trtinfer_inference_count_total", model="tiny") >= \
        counter(before, "trtinfer_inference_count_total", model="tiny") + 6
    for name in ("trtinfer_request_duration_seconds_count", "trtinfer_queue_duration_seconds_count",
                 "trtinfer_compute_duration_seconds_count", "trtinfer_batch_size_count"):
        assert counter(after, name, model="tiny") > counter(before, name, model="tiny"), name
    assert "trtinfer_queue_depth{" in after


def test_web_page_is_served_without_external_assets(server):
    status, headers, body = server.get("/")
    page = body.decode()
    assert status == 200 and "text/html" in headers["content-type"]
    assert "/v1/models" in page and "predict" in page
    assert not re.search(r"(src|href)=\"https?://", page)  # everything local
