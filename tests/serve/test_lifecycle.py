"""`trtinfer serve` under pressure and at its end: a full queue answers 503 with Retry-After at once, a
request past its timeout 504, and SIGTERM with no drain delay refuses new requests at once while the requests
in flight finish, and exits 0 within the grace period (test_drain.py: the drain delay under load). Real
processes, real signals, real threads."""

from __future__ import annotations

import json
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from .conftest import error_of, request, start_server

BATCH = 32


def tensor_body(rows: int = BATCH) -> bytes:
    x = np.random.default_rng(rows).standard_normal((rows, 3, 32, 32)).astype(np.float32)
    head = json.dumps({"inputs": [{"name": "input", "datatype": "FP32", "shape": list(x.shape),
                                   "parameters": {"binary_data_size": x.nbytes}}],
                       "outputs": [{"name": "logits", "parameters": {"binary_data": True}}]}).encode()
    return head + x.tobytes(), len(head)


def infer(url: str, body: bytes, header_length: int) -> tuple[int, dict, bytes]:
    return request(url + "/v2/models/resnet/infer", body,
                   {"Inference-Header-Content-Length": str(header_length), "Content-Type": "application/octet-stream"})


def flood(url: str, clients: int, per_client: int) -> list[tuple[int, dict, bytes]]:
    body, length = tensor_body()
    with ThreadPoolExecutor(clients) as pool:
        futures = [pool.submit(infer, url, body, length) for _ in range(clients * per_client)]
        return [f.result() for f in futures]


def test_a_full_queue_is_503_with_retry_after_and_nothing_else_fails(resnet_served, tmp_path):
    server = start_server([resnet_served], tmp_path, "--max-queue", "1", "--max-batch", str(BATCH))
    try:
        results = flood(server.url, clients=24, per_client=2)
        statuses = [status for status, _, _ in results]
        assert set(statuses) <= {200, 503}, statuses
        assert statuses.count(503) >= 1 and statuses.count(200) >= 1
        refused = [(headers, body) for status, headers, body in results if status == 503]
        assert all(h.get("Retry-After") == "1" and "queue is full" in error_of(b) for h, b in refused)
        metrics = server.get("/metrics")[2].decode()
        assert 'status="503"' in metrics
    finally:
        assert server.stop() == 0, server.log.read_text()


def test_a_request_past_its_timeout_is_504(resnet_served, tmp_path):
    server = start_server([resnet_served], tmp_path, "--timeout-ms", "1", "--max-batch", str(BATCH))
    try:
        statuses = [status for status, _, _ in flood(server.url, clients=16, per_client=2)]
        assert set(statuses) <= {200, 504}, statuses
        assert statuses.count(504) >= 1
    finally:
        assert server.stop() == 0, server.log.read_text()


def test_sigterm_with_no_drain_delay_refuses_at_once_and_finishes_in_flight_requests(resnet_served, tmp_path):
    """``--drain-delay-seconds 0`` (a server behind no load balancer): new requests are refused from the signal
    on, the ones in flight finish (test_drain covers the delay)."""
    grace = 20
    server = start_server([resnet_served], tmp_path, "--grace-seconds", str(grace), "--drain-delay-seconds", "0",
                          "--max-batch", "1", "--max-delay-ms", "0")
    body, length = tensor_body()
    results: list[int] = []
    started = threading.Barrier(9)

    def client() -> None:
        started.wait()
        results.append(infer(server.url, body, length)[0])

    threads = [threading.Thread(target=client) for _ in range(8)]
    for t in threads:
        t.start()
    started.wait()
    time.sleep(0.3)  # the requests are in flight (8 batches of 32 rows at max-batch 1 take seconds on 2 cores)
    signalled = time.monotonic()
    server.process.send_signal(signal.SIGTERM)
    readiness, refused = [], []
    while server.process.poll() is None and time.monotonic() - signalled < grace:
        try:
            readiness.append(request(server.url + "/v2/health/ready", timeout=2)[0])
            refused.append(request(server.url + "/v2/models/resnet/ready", timeout=2)[0])
        except OSError:  # the listening socket closed: the drain is over
            break
        time.sleep(0.05)
    for t in threads:
        t.join(timeout=grace)
    code = server.process.wait(timeout=grace)
    elapsed = time.monotonic() - signalled
    assert code == 0, server.log.read_text()
    assert elapsed < grace
    assert results == [200] * 8  # every request in flight finished
    assert readiness and set(readiness) == {503}, readiness  # readiness turned 503 at once
    assert set(refused) == {503}  # and new requests were refused
    assert "draining" in server.log.read_text()
