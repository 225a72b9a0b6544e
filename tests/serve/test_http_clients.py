"""`trtinfer serve` spoken to by the HTTP clients teams already have: tritonclient (sync and asyncio) and the
KServe SDK's REST client, for health, metadata, configuration, inference (JSON, binary, classification, the
image twin), statistics and the error paths; then what a hostile client sends (every one a JSON 400 naming the
field, never a traceback), the liveness probe while a 20 MB JSON body is parsed, and a body that stops
arriving."""

from __future__ import annotations

import asyncio
import http.client
import importlib.util
import json
import subprocess
import sys
import socket
import threading
import time
from pathlib import Path

import numpy as np
import pytest

import trtinfer
from trtinfer.preprocess import decode_image_bytes, preprocess

from .conftest import PeakRss, encode, error_of, start_server

httpclient = pytest.importorskip("tritonclient.http")
aioclient = pytest.importorskip("tritonclient.http.aio")
from tritonclient.utils import InferenceServerException  # noqa: E402 -- after the skip

X = np.random.default_rng(1).standard_normal((3, 3, 32, 32)).astype(np.float32)
LIVENESS_BOUND_S = 0.25  # the figure: a probe must answer within 250 ms while a large body is parsed


@pytest.fixture(scope="module")
def served(tiny_served, tmp_path_factory):
    """One server (default limits: 64 MiB bodies, 64 images) for every client; its log must hold no traceback
    after all the hostile requests."""
    running = start_server([tiny_served], tmp_path_factory.mktemp("clients"), "--drain-delay-seconds", "0")
    yield running
    assert running.stop() == 0, running.log.read_text()[-4000:]
    assert "Traceback" not in running.log.read_text(), running.log.read_text()[-4000:]


@pytest.fixture(scope="module")
def reference(tiny_served):
    with trtinfer.load(tiny_served) as model:
        yield model


@pytest.fixture(scope="module")
def twin_batch(cifar_images, reference):
    """Four real CIFAR rows as PNG bytes (shape [4, 1] BYTES) and the runtime's logits for them."""
    blobs = [encode(image, "PNG") for image in cifar_images[:4]]
    expected = reference.infer(preprocess([decode_image_bytes(b) for b in blobs], reference.manifest.preprocess))
    return np.array(blobs, dtype=object).reshape(-1, 1), expected


def _indices(top: np.ndarray) -> list[list[int]]:
    return [[int((v.decode() if isinstance(v, bytes) else v).split(":")[1]) for v in row] for row in top]


# -- tritonclient ---------------------------------------------------------------------------------------------------
def test_tritonclient_sync(served, reference, twin_batch):
    client = httpclient.InferenceServerClient(f"127.0.0.1:{served.port}")
    assert client.is_server_live() and client.is_server_ready()
    assert client.is_model_ready("tiny") and client.is_model_ready("tiny_image") and not client.is_model_ready("nope")
    assert "statistics" in client.get_server_metadata()["extensions"]
    assert client.get_model_metadata("tiny", "1")["inputs"][0]["shape"] == [-1, 3, 32, 32]
    assert client.get_model_config("tiny_image")["input"][0]["data_type"] == "TYPE_STRING"
    expected = reference.infer(X)
    for binary in (True, False):
        tensor = httpclient.InferInput("input", list(X.shape), "FP32")
        tensor.set_data_from_numpy(X, binary_data=binary)
        logits = httpclient.InferRequestedOutput("logits", binary_data=binary)
        result = client.infer("tiny", [tensor], outputs=[logits], request_id="r1")
        np.testing.assert_allclose(result.as_numpy("logits"), expected, rtol=1e-4, atol=1e-4)
        assert result.get_response()["id"] == "r1"
        top = client.infer("tiny", [tensor], outputs=[httpclient.InferRequestedOutput(
            "logits", binary_data=binary, class_count=2)]).as_numpy("logits")
        assert _indices(top) == np.argsort(-expected, axis=1)[:, :2].tolist()
    data, twin_expected = twin_batch
    image = httpclient.InferInput("image", list(data.shape), "BYTES")
    image.set_data_from_numpy(data)
    np.testing.assert_allclose(client.infer("tiny_image", [image]).as_numpy("logits"), twin_expected,
                               rtol=1e-4, atol=1e-4)
    with pytest.raises(InferenceServerException, match="unknown model 'nope'"):
        client.infer("nope", [tensor])
    with pytest.raises(InferenceServerException, match="no endpoint /v2/models/tiny/versions/1/extra"):
        client.get_model_metadata("tiny", "1/extra")  # an unrouted path: a JSON 404 the client can read


def test_tritonclient_asyncio(served, reference, twin_batch):
    async def run() -> None:
        client = aioclient.InferenceServerClient(f"127.0.0.1:{served.port}")
        try:
            assert await client.is_server_live() and await client.is_model_ready("tiny")
            assert (await client.get_model_metadata("tiny_image"))["inputs"][0]["datatype"] == "BYTES"
            assert (await client.get_model_config("tiny"))["max_batch_size"] >= 1
            tensor = aioclient.InferInput("input", list(X.shape), "FP32")
            tensor.set_data_from_numpy(X)
            results = await asyncio.gather(*[client.infer("tiny", [tensor]) for _ in range(4)])
            for result in results:
                np.testing.assert_allclose(result.as_numpy("logits"), reference.infer(X), rtol=1e-4, atol=1e-4)
            data, expected = twin_batch
            image = aioclient.InferInput("image", list(data.shape), "BYTES")
            image.set_data_from_numpy(data)
            np.testing.assert_allclose((await client.infer("tiny_image", [image])).as_numpy("logits"), expected,
                                       rtol=1e-4, atol=1e-4)
            stats = await client.get_inference_statistics("tiny")
            assert stats["model_stats"][0]["inference_stats"]["success"]["count"] >= 5
            with pytest.raises(InferenceServerException, match="input 'input' has shape \\[3, 3, 32, 31\\]"):
                bad = aioclient.InferInput("input", [3, 3, 32, 31], "FP32")
                bad.set_data_from_numpy(X[..., :31].copy())
                await client.infer("tiny", [bad])
        finally:
            await client.close()

    asyncio.run(run())


# -- the KServe SDK's REST client -------------------------------------------------------------------------------------
def test_kserve_rest_client(served, reference, cifar_images, tmp_path):
    """The KServe SDK's REST client, in its own process (its protocol module and tritonclient's cannot share one)."""
    if importlib.util.find_spec("kserve") is None:
        pytest.skip("the KServe SDK is not installed (pip install kserve)")
    png = tmp_path / "row.png"
    png.write_bytes(encode(cifar_images[0], "PNG"))
    probe = subprocess.run([sys.executable, str(Path(__file__).with_name("kserve_clients.py")), "rest", served.url,
                            str(png)], capture_output=True, text=True, timeout=120)
    assert probe.returncode == 0, probe.stderr[-3000:]
    seen = json.loads(probe.stdout)
    assert (seen["live"], seen["ready"], seen["tiny_ready"], seen["nope_ready"]) == (True, True, True, False)
    expected = reference.infer(X)
    for key in ("logits_binary", "logits_json"):
        np.testing.assert_allclose(seen[key], expected, rtol=1e-4, atol=1e-4)
    want = reference.infer(preprocess([decode_image_bytes(png.read_bytes())], reference.manifest.preprocess))
    np.testing.assert_allclose(seen["image_logits"], want, rtol=1e-4, atol=1e-4)
    errors = seen["errors"]
    assert errors["unknown model"][0] == 404 and "unknown model 'nope'" in errors["unknown model"][1]
    assert errors["shape"][0] == 400 and "has shape [1, 2]; the model takes" in errors["shape"][1]


# -- statistics ------------------------------------------------------------------------------------------------------
def test_statistics_move_with_inferences(served):
    client = httpclient.InferenceServerClient(f"127.0.0.1:{served.port}")

    def stats() -> dict:
        (entry,) = client.get_inference_statistics("tiny")["model_stats"]
        return entry

    before = stats()
    tensor = httpclient.InferInput("input", list(X.shape), "FP32")
    tensor.set_data_from_numpy(X)
    for _ in range(2):
        client.infer("tiny", [tensor])
    status, _, body = served.post("/v2/models/tiny/infer", b'{"inputs": 5}', {"Content-Type": "application/json"})
    assert status == 400
    after = stats()
    assert after["name"] == "tiny" and after["version"] == "1" and after["last_inference"] > 0
    moved = {k: after["inference_stats"][k]["count"] - before["inference_stats"][k]["count"]
             for k in after["inference_stats"]}
    assert moved["success"] == 2 and moved["fail"] == 1, moved
    for key in ("queue", "compute_input", "compute_infer", "compute_output"):
        assert moved[key] == 2 and after["inference_stats"][key]["ns"] > before["inference_stats"][key]["ns"], key
    assert after["inference_count"] - before["inference_count"] == 2 * len(X)
    assert after["execution_count"] > before["execution_count"]
    assert {e["name"] for e in client.get_inference_statistics()["model_stats"]} == {"tiny"}
    assert client.get_inference_statistics("tiny", "1")["model_stats"][0]["name"] == "tiny"
    for path in ("/v2/models/stats", "/v2/models/tiny/stats", "/v2/models/tiny/versions/1/stats"):
        status, headers, body = served.get(path)
        assert status == 200 and headers["content-type"] == "application/json" and json.loads(body)["model_stats"]
    with pytest.raises(InferenceServerException, match="unknown model 'nope'"):
        client.get_inference_statistics("nope")
    with pytest.raises(InferenceServerException, match="no version '7'"):
        client.get_inference_statistics("tiny", "7")


def test_non_finite_binary_input_is_a_400_naming_its_rows(served):
    """NaN reaches the server as binary FP32 (JSON cannot carry it): the batcher's once-per-batch check fails that
    request's future, which the server answers as a client error; the next clean request is served."""
    client = httpclient.InferenceServerClient(f"127.0.0.1:{served.port}")
    bad = np.array(X[:3], copy=True)
    bad[1, 0, 0, 0] = np.nan
    tensor = httpclient.InferInput("input", list(bad.shape), "FP32")
    tensor.set_data_from_numpy(bad, binary_data=True)
    with pytest.raises(InferenceServerException, match=r"NaN or inf: 1 of 3 row\(s\) \(row 1\)") as info:
        client.infer("tiny", [tensor])
    assert info.value.status() == "400"
    tensor.set_data_from_numpy(np.nan_to_num(bad), binary_data=True)
    assert client.infer("tiny", [tensor]).as_numpy("logits").shape == (3, 10)


# -- schedule policy -------------------------------------------------------------------------------------------------
def test_timeout_parameter_is_the_requests_own_and_priority_is_refused(served):
    from concurrent.futures import ThreadPoolExecutor

    client = httpclient.InferenceServerClient(f"127.0.0.1:{served.port}")
    big = np.zeros((64, 3, 32, 32), np.float32)
    tensor = httpclient.InferInput("input", list(big.shape), "FP32")
    tensor.set_data_from_numpy(big)
    head = json.dumps({"inputs": [{"name": "input", "datatype": "FP32", "shape": list(big.shape),
                                   "parameters": {"binary_data_size": big.nbytes}}]}).encode()
    with ThreadPoolExecutor(8) as pool:  # a queue of work from other clients
        queued = [pool.submit(served.post, "/v2/models/tiny/infer", head + big.tobytes(),
                              {"Inference-Header-Content-Length": str(len(head))}) for _ in range(8)]
        with pytest.raises(InferenceServerException, match="past its timeout") as info:
            client.infer("tiny", [tensor], timeout=1)  # 1 us
        assert info.value.status() == "504"
        assert [f.result()[0] for f in queued] == [200] * 8
    assert client.infer("tiny", [tensor], timeout=30_000_000).as_numpy("logits").shape == (64, 10)
    with pytest.raises(InferenceServerException, match="parameter priority 1 is not supported") as info:
        client.infer("tiny", [tensor], priority=1)
    assert info.value.status() == "400"
    client.close()


# -- JSON on every path, and the extensions this server does not implement ----------------------------------------------
def test_unrouted_paths_and_methods_answer_json(served):
    for method, path, status in [("GET", "/nothing/here", 404), ("GET", "/v2/models/tiny/infer", 405),
                                 ("DELETE", "/v2/health/live", 405), ("POST", "/v2/models/tiny/nope", 404)]:
        conn = http.client.HTTPConnection("127.0.0.1", served.port, timeout=10)
        conn.request(method, path, body=b"{}" if method == "POST" else None)
        response = conn.getresponse()
        body = response.read()
        conn.close()
        assert response.status == status and response.getheader("content-type") == "application/json", (path, body)
        assert path in error_of(body)


def test_unsupported_extensions_are_named_and_logged_once(served):
    client = httpclient.InferenceServerClient(f"127.0.0.1:{served.port}")
    calls = [(client.get_model_repository_index, "model repository"),
             (lambda: client.load_model("x"), "model repository"),
             (lambda: client.unload_model("tiny"), "model repository"),
             (client.get_system_shared_memory_status, "system shared memory"),
             (lambda: client.register_system_shared_memory("r", "/r", 8), "system shared memory"),
             (client.get_cuda_shared_memory_status, "CUDA shared memory"),
             (client.get_trace_settings, "trace"),
             (lambda: client.get_trace_settings("tiny"), "trace"),
             (client.get_log_settings, "logging")]
    for call, name in calls * 2:
        with pytest.raises(InferenceServerException, match=f"trtinfer serve does not implement the {name} "
                                                           "extension") as info:
            call()
        assert info.value.status() == "404"
    log = served.log.read_text()
    for name in ("model repository", "system shared memory", "CUDA shared memory", "trace", "logging"):
        assert log.count(f"does not implement the {name} extension") == 1, (name, log[-2000:])


# -- hostile requests over HTTP -------------------------------------------------------------------------------------
def _doc(datatype: str = "FP32", shape=(1, 3, 32, 32), **extra) -> bytes:
    spec = {"name": "input", "datatype": datatype, "shape": list(shape), "data": [0.0] * int(np.prod(shape))}
    spec.update(extra.pop("spec", {}))
    return json.dumps({"inputs": [spec], **extra}).encode()


_HEAD = b'{"inputs":[{"name":"input","datatype":"FP32","shape":[2147483648,2147483648,2147483648,2147483648],' \
        b'"parameters":{"binary_data_size":8}}]}'
HOSTILE = [
    # (id, model, body, extra headers, status, the error's words)
    ("absurd-shape", "tiny", _doc(spec={"shape": [1 << 31] * 4, "data": [1.0]}), {}, 400, "shape [2147483648"),
    ("absurd-shape-binary", "tiny", _HEAD + b"\0" * 8, {"Inference-Header-Content-Length": str(len(_HEAD))}, 400,
     "8 bytes of binary data for shape [2147483648"),
    ("5000-digits", "tiny", b'{"inputs":[{"name":"input","datatype":"FP32","shape":[1],"data":[' + b"7" * 5000 +
     b"]}]}", {}, 400, "more than 4300 digits"),
    ("outputs-number", "tiny", _doc(outputs=5), {}, 400, "\"outputs\" must be a list of objects"),
    ("outputs-strings", "tiny", _doc(outputs=["logits"]), {}, 400, "each requested output must be an object"),
    ("output-parameters", "tiny", _doc(outputs=[{"name": "logits", "parameters": [1]}]), {}, 400,
     "output 'logits': parameters must be an object"),
    ("binary-data-output", "tiny", _doc(parameters={"binary_data_output": "yes"}), {}, 400,
     "parameter binary_data_output 'yes' must be true or false"),
    ("parameters-list", "tiny", _doc(parameters=[]), {}, 400, "\"parameters\" must be an object"),
    ("timeout-string", "tiny", _doc(parameters={"timeout": "1"}), {}, 400, "parameter timeout '1'"),
    ("not-utf8", "tiny", b'{"inputs": "\xff\xfe\xfd"}', {}, 400, "not UTF-8"),
    ("deep-nesting", "tiny", b"[" * 50_000 + b"]" * 50_000, {}, 400, "nested too deeply"),
    ("nan", "tiny", b'{"inputs":[{"name":"input","datatype":"FP32","shape":[1],"data":[NaN]}]}', {}, 400,
     "NaN is not JSON"),
    ("strings-for-fp32", "tiny", _doc(spec={"data": ["0.5"] * 3072}), {}, 400, "FP32 data must be numbers"),
    ("bytes-for-fp32", "tiny", _doc("BYTES", spec={"data": ["a"] * 3072}), {}, 400,
     "input 'input' is BYTES; this model takes no BYTES input"),
    ("negative-header-length", "tiny", _doc(), {"Inference-Header-Content-Length": "-5"}, 400,
     "Inference-Header-Content-Length '-5' is not a byte count"),
    ("header-length-past-body", "tiny", _doc(), {"Inference-Header-Content-Length": "99999999"}, 400,
     "outside the"),
    ("id-number", "tiny", _doc(id=7), {}, 400, "\"id\" must be a string"),
    ("3M-empty-strings-to-the-tensor-model", "tiny", b'{"inputs":[{"name":"input","datatype":"BYTES",'
     b'"shape":[3000000],"data":[' + b",".join([b'""'] * 3_000_000) + b"]}]}", {}, 400,
     "input 'input' is BYTES; this model takes no BYTES input"),
    ("65-images", "tiny_image", json.dumps({"inputs": [{"name": "image", "datatype": "BYTES", "shape": [65, 1],
                                                        "data": ["x"] * 65}]}).encode(), {}, 400,
     "input 'image': 65 BYTES elements, more than the 64 allowed per request"),
    ("3M-empty-images", "tiny_image", b'{"inputs":[{"name":"image","datatype":"BYTES","shape":[3000000,1],"data":[' +
     b",".join([b'""'] * 3_000_000) + b"]}]}", {}, 400, "input 'image': 3,000,000 BYTES elements, more than the 64"),
]


@pytest.mark.parametrize("model, body, headers, status, words", [c[1:] for c in HOSTILE], ids=[c[0] for c in HOSTILE])
def test_hostile_requests_are_json_400s(served, model, body, headers, status, words):
    got, answer_headers, answer = served.post(f"/v2/models/{model}/infer", body,
                                              {"Content-Type": "application/json", **headers})
    assert got == status and words in error_of(answer), (got, answer[:300])


# -- liveness while a large body is parsed -------------------------------------------------------------------------------
class _Prober(threading.Thread):
    """GET /v2/health/live every 10 ms on one kept-alive connection; the latencies of the probes."""

    def __init__(self, port: int) -> None:
        super().__init__(daemon=True)
        self.port, self.stop, self.latencies = port, threading.Event(), []

    def run(self) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        while not self.stop.is_set():
            started = time.perf_counter()
            conn.request("GET", "/v2/health/live")
            response = conn.getresponse()
            response.read()
            assert response.status == 200
            self.latencies.append(time.perf_counter() - started)
            time.sleep(0.01)
        conn.close()


def test_liveness_answers_while_a_20mb_json_body_is_parsed(served, reference):
    x = np.random.default_rng(2).standard_normal((320, 3, 32, 32)).astype(np.float32)
    head = json.dumps({"inputs": [{"name": "input", "datatype": "FP32", "shape": list(x.shape),
                                   "data": x.ravel().tolist()}]}).encode()
    assert len(head) > 20e6
    expected = reference.infer(x)
    for headers in ({}, {"Inference-Header-Content-Length": str(len(head))}):
        prober = _Prober(served.port)
        prober.start()
        time.sleep(0.1)
        try:
            with PeakRss(served.process.pid) as peak:  # JSON costs 12-14x its size as Python lists: not here
                status, response_headers, body = served.post("/v2/models/tiny/infer", head,
                                                              {"Content-Type": "application/json", **headers})
        finally:
            prober.stop.set()
            prober.join()
        assert status == 200, body[:300]
        peak.check()
        logits = np.array(json.loads(body)["outputs"][0]["data"], np.float32).reshape(expected.shape)
        np.testing.assert_allclose(logits, expected, rtol=1e-4, atol=1e-4)
        assert len(prober.latencies) >= 5 and max(prober.latencies) < LIVENESS_BOUND_S, \
            (headers, sorted(prober.latencies)[-5:])


def test_the_parser_process_imports_only_the_protocol(tmp_path):
    """A script embedding the app without a ``__main__`` guard: the spawned parser must not run it again (it
    would start a second server), and it imports only ``trtinfer.serve.protocol``."""
    import subprocess
    import sys

    script = tmp_path / "embed.py"
    script.write_text(
        "import asyncio, json\n"
        "from trtinfer.serve.bodies import BodyParser\n"
        "print('main ran', flush=True)\n"
        "body = json.dumps({'inputs': [{'name': 'x', 'datatype': 'FP32', 'shape': [2], 'data': [1, 2]}]}).encode()\n"
        "async def main():\n"
        "    parser = BodyParser(inline_bytes=0)\n"
        "    parsed = await parser.parse(body, None, 0)\n"
        "    modules = parser._started().submit(eval, \"sorted(m for m in __import__('sys').modules \""
        " \"if m.startswith(('trtinfer.', 'starlette', 'uvicorn', 'grpc', 'PIL')))\").result()\n"
        "    print(parsed.inputs[0].array.tolist(), modules)\n"
        "    parser.close(); parser.close()\n"
        "asyncio.run(main())\n")
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stdout.count("main ran") == 1, done.stdout + done.stderr
    assert "[1.0, 2.0]" in done.stdout and "trtinfer.serve.protocol" in done.stdout, done.stdout
    assert "starlette" not in done.stdout.split("[1.0, 2.0]")[1] and "Traceback" not in done.stderr


# -- a body that stops arriving ----------------------------------------------------------------------------------------
def test_a_body_that_stops_arriving_is_cut_off_with_408(tiny_served):
    """The app as the server composes it, on a real uvicorn in this process, with a 0.5 s body timeout (the
    server's default is 60 s): a JSON infer and a multipart upload whose bodies stop after a few bytes."""
    import uvicorn

    from trtinfer.serve.app import create_app
    from trtinfer.serve.middleware import DrainGuard
    from trtinfer.serve.metrics import Metrics
    from trtinfer.serve.options import Limits
    from trtinfer.serve.registry import ModelSet
    from trtinfer.serve.service import ServerState

    models = ModelSet.load([tiny_served])
    state = ServerState(models=models, metrics=Metrics(models), limits=Limits(body_timeout_s=0.5))
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    app = create_app(state)
    server = uvicorn.Server(uvicorn.Config(DrainGuard(app, state), host="127.0.0.1", port=port, lifespan="off",
                                           log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 20
        while not server.started and time.monotonic() < deadline:
            time.sleep(0.05)
        for path, content_type in (("/v2/models/tiny/infer", "application/json"),
                                   ("/v1/models/tiny/predict", "multipart/form-data; boundary=b")):
            with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
                sock.sendall(f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: {content_type}\r\n"
                             "Content-Length: 1000\r\n\r\n{\"inputs\": [".encode())
                started = time.perf_counter()
                answer = b""
                while chunk := sock.recv(65536):  # the server closes the connection after the 408
                    answer += chunk
                waited = time.perf_counter() - started
            head, _, body = answer.partition(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 408"), answer[:300]
            assert "did not arrive within 0.5 s" in error_of(body) and 0.4 < waited < 5, (path, waited)
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        app.state.close()
        models.close()
