"""A rollout-safe stop and connection timeouts of `trtinfer serve`, with real processes, real signals, real clients.

SIGTERM under 64 HTTP keep-alive clients and 64 gRPC clients: through the drain delay every request is answered
(readiness alone turns 503), then new requests get 503 with Retry-After or UNAVAILABLE while the listeners stay
open and a request in flight finishes; exit 0 within the grace period, no reset, no refused connection, no CANCELLED.
A gRPC call in flight under a short grace period completes. Connections that never finish their headers, or their
body, get 408 and are closed.
"""

from __future__ import annotations

import http.client
import json
import signal
import socket
import threading
import time
from dataclasses import dataclass, field

import numpy as np
import pytest

from .conftest import request, start_server

grpc = pytest.importorskip("grpc")
service_pb2 = pytest.importorskip("tritonclient.grpc.service_pb2")
service_pb2_grpc = pytest.importorskip("tritonclient.grpc.service_pb2_grpc")

CLIENTS = 64  # per transport
DELAY = 2.0


def infer_body() -> tuple[bytes, int]:
    x = np.random.default_rng(0).standard_normal((1, 3, 32, 32)).astype(np.float32)
    head = json.dumps({"inputs": [{"name": "input", "datatype": "FP32", "shape": list(x.shape),
                                   "parameters": {"binary_data_size": x.nbytes}}],
                       "outputs": [{"name": "logits", "parameters": {"binary_data": True}}]}).encode()
    return head + x.tobytes(), len(head)


def grpc_request(rows: int = 1) -> object:
    x = np.zeros((rows, 3, 32, 32), np.float32)
    req = service_pb2.ModelInferRequest(model_name="tiny")
    req.inputs.add(name="input", datatype="FP32", shape=list(x.shape))
    req.raw_input_contents.append(x.tobytes())
    return req


def grpc_stub(port: int) -> object:
    # One connection per client (gRPC shares subchannels between channels unless told not to).
    channel = grpc.insecure_channel(f"127.0.0.1:{port}", options=[("grpc.use_local_subchannel_pool", 1)])
    return service_pb2_grpc.GRPCInferenceServiceStub(channel)


@dataclass
class Client:
    """One client's requests in order: (sent, answered, outcome); it stops at the first refusal or error."""

    outcomes: list[tuple[float, float, object]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


def http_client(port: int, client: Client, stop: threading.Event) -> None:
    body, length = infer_body()
    headers = {"Inference-Header-Content-Length": str(length), "Content-Type": "application/octet-stream"}
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)  # keep-alive; reconnects on close
    while not stop.is_set():
        sent = time.monotonic()
        try:
            connection.request("POST", "/v2/models/tiny/infer", body, headers)
            response = connection.getresponse()
            response.read()
        except Exception as exc:  # noqa: BLE001 -- a reset, a refused connection: what the test counts
            client.errors.append(f"{type(exc).__name__}: {exc}")
            return
        closing = (response.getheader("Connection") or "").lower() == "close"
        client.outcomes.append((sent, time.monotonic(), (response.status, closing, response.getheader("Retry-After"))))
        if response.status != 200:
            return


def grpc_client(port: int, client: Client, stop: threading.Event) -> None:
    stub, req = grpc_stub(port), grpc_request()
    while not stop.is_set():
        sent = time.monotonic()
        try:
            stub.ModelInfer(req, timeout=30)
            outcome = "OK"
        except grpc.RpcError as exc:
            outcome = f"{exc.code().name}: {exc.details()}"
        client.outcomes.append((sent, time.monotonic(), outcome))
        if outcome != "OK":
            return


def held_request(port: int) -> tuple[socket.socket, bytes]:
    """An HTTP request sent but for the last bytes of its body: in flight until the rest is sent."""
    body, length = infer_body()
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    sock.sendall(b"POST /v2/models/tiny/infer HTTP/1.1\r\nHost: test\r\nContent-Type: application/octet-stream\r\n"
                 b"Inference-Header-Content-Length: %d\r\nContent-Length: %d\r\n\r\n" % (length, len(body))
                 + body[:-10])
    return sock, body[-10:]


def read_response(sock: socket.socket) -> bytes:
    chunks = []
    while chunk := sock.recv(65536):
        chunks.append(chunk)
    return b"".join(chunks)


def test_sigterm_under_load_serves_through_the_delay_then_refuses_and_loses_nothing(tiny_served, tmp_path):
    grace = 30.0
    server = start_server([tiny_served], tmp_path, "--drain-delay-seconds", str(DELAY), "--grace-seconds", str(grace))
    stop = threading.Event()
    http_clients, grpc_clients = [Client() for _ in range(CLIENTS)], [Client() for _ in range(CLIENTS)]
    threads = [threading.Thread(target=http_client, args=(server.port, c, stop)) for c in http_clients]
    threads += [threading.Thread(target=grpc_client, args=(server.grpc_port, c, stop)) for c in grpc_clients]
    idle = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)  # a keep-alive connection left idle
    try:
        for t in threads:
            t.start()
        deadline = time.monotonic() + 60
        while not all(c.outcomes or c.errors for c in http_clients + grpc_clients) and time.monotonic() < deadline:
            time.sleep(0.05)
        idle.request("GET", "/v2/health/live")
        assert idle.getresponse().read() == b'{"live":true}'
        held, rest = held_request(server.port)
        time.sleep(0.3)  # the held request is in flight (its headers are parsed)

        signalled = time.monotonic()
        server.process.send_signal(signal.SIGTERM)
        time.sleep(0.2)
        readiness = request(server.url + "/v2/health/ready", timeout=5)[0]
        idle.sock.settimeout(DELAY + 5)
        idle_closed = idle.sock.recv(65536) == b""  # the server closes the idle connection during the delay
        idle_closed_after = time.monotonic() - signalled
        for t in threads:
            t.join(timeout=DELAY + 30)
        # Every client has been refused and stopped; the held request keeps the listeners open: a client that
        # connects now is refused with 503 (HTTP) or UNAVAILABLE (gRPC), not reset.
        fresh = [request(server.url + "/v2/models/tiny/infer", b"{}", timeout=5) for _ in range(3)]
        with pytest.raises(grpc.RpcError) as refused:
            grpc_stub(server.grpc_port).ModelInfer(grpc_request(), timeout=5)
        assert server.process.poll() is None, server.log.read_text()
        held.sendall(rest)
        held_answer = read_response(held)
        code = server.process.wait(timeout=grace)
        elapsed = time.monotonic() - signalled
    finally:
        stop.set()
        if server.process.poll() is None:
            server.stop()
    log = server.log.read_text()
    assert code == 0, log
    assert elapsed < grace
    assert "Traceback" not in log, log
    assert readiness == 503
    assert idle_closed and idle_closed_after < DELAY + 1, idle_closed_after
    assert held_answer.startswith(b"HTTP/1.1 200"), held_answer[:300]
    assert [status for status, _, _ in fresh] == [503] * 3
    assert all(headers["Retry-After"] and headers["Connection"] == "close" for _, headers, _ in fresh)
    assert refused.value.code() == grpc.StatusCode.UNAVAILABLE and "shutting down" in refused.value.details()

    for name, clients, ok in (("HTTP", http_clients, 200), ("gRPC", grpc_clients, "OK")):
        assert not [c.errors for c in clients if c.errors], f"{name}: resets or refused connections"
        answers = [(sent, done, outcome if name == "gRPC" else outcome[0]) for c in clients for sent, done, outcome in c.outcomes]
        # Every client was answered until it was refused once (nothing accepted was lost).
        for c in clients:
            *served, last = [o if name == "gRPC" else o[0] for _, _, o in c.outcomes]
            assert set(served) <= {ok}, (name, served)
            assert last == 503 if name == "HTTP" else last.startswith("UNAVAILABLE: the server is shutting down"), last
        # The drain delay served everything: no refusal before it ended, and answers up to its end.
        refusals = [done for _, done, outcome in answers if outcome != ok]
        assert min(refusals) >= signalled + DELAY, (name, min(refusals) - signalled)
        served_late = [done for sent, done, outcome in answers if outcome == ok and sent > signalled + DELAY - 0.5]
        assert len(served_late) >= 10, (name, len(served_late))
    # Every HTTP answer during the drain tells the client to reconnect; each refusal says when to retry.
    during = [o for c in http_clients for sent, _, o in c.outcomes if sent > signalled + 0.3]
    assert during and all(closing for _, closing, _ in during)
    assert all(retry for status, _, retry in during if status == 503)


# -- one server for the timeouts, then its short grace period --------------------------------------------------
@pytest.fixture(scope="module")
def short(tiny_served, tmp_path_factory):
    """Timeouts of 1 s, a 5 s grace with a 1 s drain delay, and batches that wait 6 s to fill (a call stays in
    flight past the grace period unless the drain closes the models in time)."""
    server = start_server([tiny_served], tmp_path_factory.mktemp("short"), "--header-timeout-seconds", "1",
                          "--body-timeout-seconds", "1", "--grace-seconds", "5", "--drain-delay-seconds", "1",
                          "--max-batch", "64", "--max-delay-ms", "6000")
    yield server
    if server.process.poll() is None:
        assert server.stop() == 0, server.log.read_text()


def test_connections_that_never_finish_their_headers_get_408_and_are_closed(short):
    partial = []
    for i in range(50):
        sock = socket.create_connection(("127.0.0.1", short.port), timeout=10)
        sock.sendall(b"GET /v2/health/live HTTP/1.1\r\nHost: test\r\nX-Slow: " if i % 2 else b"")
        partial.append(sock)
    started = time.monotonic()
    assert short.get("/v2/health/live")[0] == 200  # other clients are served meanwhile
    answers = [read_response(sock) for sock in partial]  # each ends with the server closing it
    elapsed = time.monotonic() - started
    for sock in partial:
        sock.close()
    assert all(a.startswith(b"HTTP/1.1 408") for a in answers), {a[:40] for a in answers}
    assert all(json.loads(a.split(b"\r\n\r\n", 1)[1])["error"].startswith("the request headers did not arrive")
               for a in answers)
    assert elapsed < 1 + 5, elapsed


def test_a_body_that_stops_arriving_gets_408(short):
    body, length = infer_body()
    sock = socket.create_connection(("127.0.0.1", short.port), timeout=10)
    sock.sendall(b"POST /v2/models/tiny/infer HTTP/1.1\r\nHost: test\r\nInference-Header-Content-Length: %d\r\n"
                 b"Content-Length: %d\r\n\r\n" % (length, len(body)) + body[:100])
    started = time.monotonic()
    answer = read_response(sock)
    elapsed = time.monotonic() - started
    sock.close()
    assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
    assert b"connection: close" in answer.lower()
    assert "body did not arrive" in json.loads(answer.split(b"\r\n\r\n", 1)[1])["error"]
    assert elapsed < 1 + 5, elapsed
    assert "Traceback" not in short.log.read_text()


def test_a_grpc_call_in_flight_completes_within_a_short_grace(short):
    """``--grace-seconds 5 --drain-delay-seconds 1``: a gRPC call waiting in the batcher at SIGTERM is answered
    (not CANCELLED), and the process exits 0 within the grace period."""
    result: dict[str, object] = {}

    def call() -> None:
        try:
            grpc_stub(short.grpc_port).ModelInfer(grpc_request(), timeout=30)
            result["outcome"] = "OK"
        except grpc.RpcError as exc:
            result["outcome"] = f"{exc.code().name}: {exc.details()}"
        result["at"] = time.monotonic()

    caller = threading.Thread(target=call)
    caller.start()
    time.sleep(0.5)  # the call waits for its batch to fill (6 s: longer than the grace period)
    signalled = time.monotonic()
    short.process.send_signal(signal.SIGTERM)
    code = short.process.wait(timeout=30)
    elapsed = time.monotonic() - signalled
    caller.join(timeout=30)
    log = short.log.read_text()
    assert result["outcome"] == "OK", (result, log)
    assert code == 0, log
    assert elapsed < 5 + 0.5, elapsed
    assert float(result["at"]) - signalled > 1  # it was still in flight when the drain delay ended


@pytest.mark.parametrize("parser", ["httptools", "h11"])
def test_the_header_timeout_on_either_parser(parser):
    """Both protocol classes (httptools where installed, h11 otherwise): a connection that sends nothing, one that
    stops inside its headers, and a keep-alive connection whose second request stops inside its headers each get
    408 and are closed; a complete request is answered meanwhile."""
    if parser == "httptools":
        pytest.importorskip("httptools")
    import uvicorn

    from trtinfer.benchmarks.serve_process import free_port
    from trtinfer.serve.options import Limits
    from trtinfer.serve.server import http_protocol

    protocol, chosen = http_protocol(Limits(header_timeout_s=0.5), parser)
    assert chosen == parser

    async def app(scope, receive, send):
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]})
        await send({"type": "http.response.body", "body": b"ok"})

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, lifespan="off", loop="asyncio",
                                           http=protocol, ws="none", log_level="warning"))
    thread = threading.Thread(target=server.run)
    thread.start()
    try:
        deadline = time.monotonic() + 10
        while not server.started and time.monotonic() < deadline:
            time.sleep(0.02)
        silent = socket.create_connection(("127.0.0.1", port), timeout=5)
        partial = socket.create_connection(("127.0.0.1", port), timeout=5)
        partial.sendall(b"GET / HTTP/1.1\r\nHost: test\r\n")
        second = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        second.request("GET", "/")
        assert second.getresponse().read() == b"ok"
        second.sock.sendall(b"GET / HTTP/1.1\r\nHo")
        assert request(f"http://127.0.0.1:{port}/", timeout=5)[2] == b"ok"
        answers = [read_response(sock) for sock in (silent, partial, second.sock)]
    finally:
        server.should_exit = True
        thread.join(timeout=10)
    assert all(a.startswith(b"HTTP/1.1 408") and b"connection: close" in a for a in answers), answers
