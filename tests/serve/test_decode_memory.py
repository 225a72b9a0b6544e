"""Decoding bounded by cost, not bytes (issue 28): a real ``trtinfer serve`` refuses an image request by its images'
decoded pixels and by their count, read from each image's header before any pixels are decoded, and its PEAK
resident memory during each request (``VmHWM``, reset before it) stays within 200 MiB of its level before, over
HTTP and gRPC alike. Legitimate requests at the default limits still succeed within the same bound."""

from __future__ import annotations

import json
import struct
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest

import trtinfer
from trtinfer.preprocess import decode_image_bytes, preprocess
from trtinfer.serve.options import Limits

from .conftest import PEAK_MARGIN, PeakRss, encode, error_of, start_server

grpcclient = pytest.importorskip("tritonclient.grpc")

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/<pid>/status")


@pytest.fixture(scope="module")
def server(tiny_served, tmp_path_factory):
    """The default limits (16 MiP, 64 MiB bodies) but 100 images a request, so that the issue's 100 pixel bombs
    meet the pixel limit rather than the count."""
    running = start_server([tiny_served], tmp_path_factory.mktemp("decode-memory"), "--max-images", "100")
    cmdline = Path(f"/proc/{running.process.pid}/cmdline").read_bytes().split(b"\0")
    assert b"trtinfer.cli" in cmdline, cmdline  # the pid measured is the server, not a wrapper around it
    yield running
    assert running.stop() == 0, running.log.read_text()
    assert "Traceback" not in running.log.read_text(), running.log.read_text()


# -- images ---------------------------------------------------------------------------------------------------------
def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def blank_png(width: int, height: int) -> bytes:
    """A complete, valid 1-bit grayscale PNG of zeros: a few KB that decode to ``width x height`` pixels."""
    row = b"\x00" * (1 + (width + 7) // 8)  # filter byte, then the packed bits
    return (b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0))
            + _chunk(b"IDAT", zlib.compress(row * height, 9)) + _chunk(b"IEND", b""))


def photo(width: int, height: int, seed: int) -> np.ndarray:
    """A smooth colour image with some texture (compresses like a photo, not like noise)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    channels = [127 + 100 * np.sin(x / (40 + 30 * c) + rng.uniform(0, 6)) * np.cos(y / (50 + 20 * c)) for c in range(3)]
    return np.clip(np.stack(channels, axis=2), 0, 255).astype(np.uint8)


# -- transports -----------------------------------------------------------------------------------------------------
def infer_http(server, blobs: list[bytes]) -> tuple[int, bytes]:
    """The binary tensor extension: a BYTES input "image" whose elements are 4-byte lengths then the files."""
    data = b"".join(struct.pack("<I", len(blob)) + blob for blob in blobs)
    header = json.dumps({"inputs": [{"name": "image", "datatype": "BYTES", "shape": [len(blobs)],
                                     "parameters": {"binary_data_size": len(data)}}],
                         "outputs": [{"name": "logits", "parameters": {"binary_data": False}}]}).encode()
    status, _, body = server.post("/v2/models/tiny_image/infer", header + data,
                                  {"Inference-Header-Content-Length": str(len(header)),
                                   "Content-Type": "application/octet-stream"})
    return status, body


def infer_grpc(server, blobs: list[bytes]):
    client = grpcclient.InferenceServerClient(f"127.0.0.1:{server.grpc_port}")
    try:
        tensor = grpcclient.InferInput("image", [len(blobs)], "BYTES")
        tensor.set_data_from_numpy(np.array(blobs, dtype=np.object_))
        return client.infer("tiny_image", [tensor], client_timeout=120)
    finally:
        client.close()


def refused_http(server, blobs: list[bytes], status: int, message: str) -> None:
    with PeakRss(server.process.pid) as peak:
        got, body = infer_http(server, blobs)
    assert got == status and message in error_of(body), (got, body[:300])
    peak.check()


def refused_grpc(server, blobs: list[bytes], code: str, message: str) -> None:
    with PeakRss(server.process.pid) as peak:
        with pytest.raises(grpcclient.InferenceServerException) as caught:
            infer_grpc(server, blobs)
    assert caught.value.status() == f"StatusCode.{code}" and message in caught.value.message(), caught.value
    peak.check()


# -- refusals: decided from the headers, before anything is decoded ------------------------------------------------
@pytest.fixture(scope="module")
def bombs() -> list[bytes]:
    """The issue's request: 100 PNGs of about 8 KB that each decode to 8000x8000 pixels (64 MP)."""
    return [blank_png(8000, 8000)] * 100


def test_a_request_of_pixel_bombs_is_413_over_http(server, bombs):
    assert sum(map(len, bombs)) < 1 << 20
    refused_http(server, bombs, 413, "--max-request-mpixels")


def test_a_request_of_pixel_bombs_is_resource_exhausted_over_grpc(server, bombs):
    refused_grpc(server, bombs, "RESOURCE_EXHAUSTED", "--max-request-mpixels")


def test_twenty_thousand_tiny_images_are_400_on_both_transports(server):
    tiny = [blank_png(1, 1)] * 20_000
    refused_http(server, tiny, 400, "--max-images")
    refused_grpc(server, tiny, "INVALID_ARGUMENT", "--max-images")


# -- what the limits let through still works, within the same bound ------------------------------------------------
@pytest.fixture(scope="module")
def reference(tiny_served):
    with trtinfer.load(tiny_served) as model:
        yield model


def test_images_at_the_limits_succeed_within_the_bound(server, reference):
    limits, count, side = Limits(), 64, 512
    assert count * side * side == limits.max_request_pixels and count == limits.max_images  # both default limits
    blobs = [encode(photo(side, side, seed), "JPEG", quality=90) for seed in range(8)] * (count // 8)
    with PeakRss(server.process.pid) as peak:
        status, body = infer_http(server, blobs)
    assert status == 200, body[:300]
    logits = np.asarray(json.loads(body)["outputs"][0]["data"], np.float32).reshape(count, -1)
    expected = reference.infer(preprocess([decode_image_bytes(b) for b in blobs[:8]], reference.manifest.preprocess))
    np.testing.assert_allclose(logits[:8], expected, rtol=1e-4, atol=1e-5)
    np.testing.assert_array_equal(logits[8:16], logits[:8])
    peak.check()

    big = encode(photo(4000, 3000, 9), "JPEG", quality=90)  # a 12 MP phone photo
    for infer in (lambda: infer_http(server, [big]), lambda: infer_grpc(server, [big])):
        with PeakRss(server.process.pid) as peak:
            answer = infer()
        if isinstance(answer, tuple):
            assert answer[0] == 200, answer[1][:300]
        else:
            expected = reference.infer(preprocess([decode_image_bytes(big)], reference.manifest.preprocess))
            np.testing.assert_allclose(answer.as_numpy("logits"), expected, rtol=1e-4, atol=1e-5)
        peak.check()
