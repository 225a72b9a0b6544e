"""`trtinfer serve` over gRPC with the clients people already have: tritonclient (sync, asyncio, and its
bidirectional streaming API, sync and asyncio), the KServe SDK's ``InferenceGRPCClient``, the standard
``grpc.health.v1`` service, and hand-built malformed requests. One real server process for the module; the
drain and warm-up states are driven on a real gRPC server in this process, over a real ``ServerState``."""

from __future__ import annotations

import asyncio
import importlib.util
import json
import queue
import struct
import subprocess
import sys
from pathlib import Path

import grpc
import numpy as np
import pytest

import trtinfer
from trtinfer.benchmarks.serve_process import free_port
from trtinfer.preprocess import decode_image_bytes, preprocess

from .conftest import encode

grpcclient = pytest.importorskip("tritonclient.grpc")
grpcaio = pytest.importorskip("tritonclient.grpc.aio")
health_pb2 = pytest.importorskip("grpc_health.v1.health_pb2")
from grpc_health.v1 import health_pb2_grpc  # noqa: E402
from tritonclient.grpc import service_pb2, service_pb2_grpc  # noqa: E402
from tritonclient.utils import InferenceServerException  # noqa: E402

X = np.random.default_rng(1).standard_normal((3, 3, 32, 32)).astype(np.float32)
SERVING, NOT_SERVING = health_pb2.HealthCheckResponse.SERVING, health_pb2.HealthCheckResponse.NOT_SERVING


@pytest.fixture(scope="module")
def reference(tiny_served):
    with trtinfer.load(tiny_served) as model:
        yield model


@pytest.fixture(scope="module")
def target(server) -> str:
    return f"127.0.0.1:{server.grpc_port}"


@pytest.fixture(scope="module")
def stub(target):
    with grpc.insecure_channel(target) as channel:
        yield service_pb2_grpc.GRPCInferenceServiceStub(channel)


def tensor_input(x: np.ndarray = X, name: str = "input") -> grpcclient.InferInput:
    tensor = grpcclient.InferInput(name, list(x.shape), "FP32")
    tensor.set_data_from_numpy(x)
    return tensor


def image_input(blobs: list[bytes]) -> grpcclient.InferInput:
    data = np.array(blobs, dtype=object).reshape(-1, 1)
    tensor = grpcclient.InferInput("image", list(data.shape), "BYTES")
    tensor.set_data_from_numpy(data)
    return tensor


def top_indices(values) -> list[list[int]]:
    return [[int((v.decode() if isinstance(v, bytes) else v).split(":")[1]) for v in row] for row in values]


# -- tritonclient, sync --------------------------------------------------------------------------------------------
def test_tritonclient_health_metadata_config_and_model_ready(target):
    client = grpcclient.InferenceServerClient(target)
    assert client.is_server_live() and client.is_server_ready()
    assert client.is_model_ready("tiny") and client.is_model_ready("tiny_image")
    assert client.is_model_ready("nope") is False  # as over HTTP: False, not an error
    assert client.is_model_ready("tiny", "7") is False
    assert "statistics" in client.get_server_metadata().extensions
    meta = client.get_model_metadata("tiny")
    assert [(t.name, t.datatype, list(t.shape)) for t in meta.inputs] == [("input", "FP32", [-1, 3, 32, 32])]
    assert client.get_model_metadata("tiny_image").inputs[0].datatype == "BYTES"
    assert client.get_model_config("tiny").config.input[0].dims == [3, 32, 32]
    with pytest.raises(InferenceServerException, match="unknown model 'nope'") as caught:
        client.get_model_metadata("nope")
    assert caught.value.status() == "StatusCode.NOT_FOUND"


def test_tritonclient_infer_tensor_classification_and_image(target, reference, cifar_images):
    client = grpcclient.InferenceServerClient(target)
    expected = reference.infer(X)
    result = client.infer("tiny", [tensor_input()], request_id="r1")
    assert result.get_response().id == "r1"
    np.testing.assert_allclose(result.as_numpy("logits"), expected, rtol=1e-4, atol=1e-4)
    top = client.infer("tiny", [tensor_input()], outputs=[grpcclient.InferRequestedOutput("logits", class_count=3)])
    assert top_indices(top.as_numpy("logits")) == np.argsort(-expected, axis=1)[:, :3].tolist()
    blobs = [encode(img, "PNG") for img in cifar_images[:2]]
    want = reference.infer(preprocess([decode_image_bytes(b) for b in blobs], reference.manifest.preprocess))
    np.testing.assert_allclose(client.infer("tiny_image", [image_input(blobs)]).as_numpy("logits"), want,
                               rtol=1e-4, atol=1e-4)
    # the schedule-policy timeout is honoured: generous passes, 1 microsecond expires in the queue
    assert client.infer("tiny", [tensor_input()], timeout=10_000_000).as_numpy("logits").shape == (3, 10)
    with pytest.raises(InferenceServerException, match="past its timeout") as caught:
        client.infer("tiny", [tensor_input()], timeout=1)
    assert caught.value.status() == "StatusCode.DEADLINE_EXCEEDED"


# -- statistics ------------------------------------------------------------------------------------------------------
def test_statistics_all_models_and_one_and_they_move(target):
    client = grpcclient.InferenceServerClient(target)
    every = client.get_inference_statistics()
    assert [s.name for s in every.model_stats] == ["tiny"]
    before = client.get_inference_statistics("tiny", as_json=True)["model_stats"][0]
    for _ in range(2):
        client.infer("tiny", [tensor_input()])
    with pytest.raises(InferenceServerException):
        client.infer("tiny", [tensor_input(X[:, :, :31])])
    after = client.get_inference_statistics("tiny", as_json=True)["model_stats"][0]
    assert after["name"] == "tiny" and after["version"] == "1"
    stats, old = after["inference_stats"], before["inference_stats"]

    def count(doc, key):  # protobuf's JSON leaves zero counts out and writes 64-bit integers as strings
        return int(doc.get(key, {}).get("count", 0))

    assert count(stats, "success") == count(old, "success") + 2
    assert count(stats, "fail") == count(old, "fail") + 1
    for key in ("queue", "compute_input", "compute_infer", "compute_output"):
        assert count(stats, key) >= count(old, key) + 2, key
        assert int(stats[key]["ns"]) > 0, key
    assert int(after["inference_count"]) >= int(before.get("inference_count", 0)) + 6
    assert int(after["last_inference"]) > 0 and after["batch_stats"]
    assert client.get_inference_statistics("tiny_image").model_stats[0].name == "tiny"
    with pytest.raises(InferenceServerException, match="unknown model 'nope'"):
        client.get_inference_statistics("nope")


# -- tritonclient, asyncio -----------------------------------------------------------------------------------------
def test_tritonclient_aio(target, reference):
    async def main():
        async with grpcaio.InferenceServerClient(target) as client:
            assert await client.is_server_ready() and await client.is_model_ready("tiny")
            assert await client.is_model_ready("nope") is False
            assert (await client.get_model_metadata("tiny")).name == "tiny"
            assert (await client.get_model_config("tiny")).config.max_batch_size >= 1
            result = await client.infer("tiny", [tensor_input()])
            stats = await client.get_inference_statistics("tiny")
            return result.as_numpy("logits"), stats

    logits, stats = asyncio.run(main())
    np.testing.assert_allclose(logits, reference.infer(X), rtol=1e-4, atol=1e-4)
    assert stats.model_stats[0].inference_stats.success.count >= 1


# -- streaming -------------------------------------------------------------------------------------------------------
def stream_requests() -> list[dict]:
    """Good and bad requests interleaved: each bad one is answered in the stream, which stays open."""
    bad_shape = tensor_input(X[:, :, :31])
    return [
        {"model_name": "tiny", "inputs": [tensor_input(X[:1])], "request_id": "a"},
        {"model_name": "nope", "inputs": [tensor_input(X[:1])], "request_id": "b"},
        {"model_name": "tiny", "inputs": [bad_shape], "request_id": "c"},
        {"model_name": "tiny", "inputs": [tensor_input(X)], "request_id": "d",
         "outputs": [grpcclient.InferRequestedOutput("logits", class_count=2)]},
        {"model_name": "tiny", "inputs": [tensor_input(X[1:])], "request_id": "e", "priority": 3},
        {"model_name": "tiny", "inputs": [tensor_input(X)], "request_id": "f"},
    ]


def check_stream_answers(answers: list, reference) -> None:
    expected = reference.infer(X)
    assert len(answers) == 6
    ok = {r.get_response().id: r for r, e in answers if e is None}
    errors = [str(e) for r, e in answers if e is not None]
    assert sorted(ok) == ["a", "d", "f"]  # in order, one answer per request
    assert [r.get_response().id if e is None else None for r, e in answers] == ["a", None, None, "d", None, "f"]
    assert "unknown model 'nope'" in errors[0] and "shape [3, 3, 31, 32]" in errors[1] and "priority" in errors[2]
    np.testing.assert_allclose(ok["a"].as_numpy("logits"), expected[:1], rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(ok["f"].as_numpy("logits"), expected, rtol=1e-4, atol=1e-4)
    assert top_indices(ok["d"].as_numpy("logits")) == np.argsort(-expected, axis=1)[:, :2].tolist()
    assert ok["f"].get_response().parameters["triton_final_response"].bool_param


def test_stream_sync_answers_every_request_in_order(target, reference):
    answers: queue.Queue = queue.Queue()
    client = grpcclient.InferenceServerClient(target)
    client.start_stream(callback=lambda result, error: answers.put((result, error)))
    try:
        for kwargs in stream_requests():
            client.async_stream_infer(**kwargs)
        got = [answers.get(timeout=30) for _ in range(6)]
    finally:
        client.stop_stream()
        client.close()
    check_stream_answers(got, reference)


def test_stream_aio_answers_every_request_in_order(target, reference):
    async def main():
        async def requests():
            for kwargs in stream_requests():
                yield kwargs

        async with grpcaio.InferenceServerClient(target) as client:
            got = []
            async for answer in client.stream_infer(requests()):
                got.append(answer)
                if len(got) == 6:
                    break
            return got

    check_stream_answers(asyncio.run(main()), reference)


# -- the KServe SDK (its own process: its protocol module and tritonclient's cannot share one) ------------------
def test_kserve_grpc_client(target, reference, cifar_images, tmp_path):
    if importlib.util.find_spec("kserve") is None:
        pytest.skip("the KServe SDK is not installed (pip install kserve)")
    png = tmp_path / "row.png"
    png.write_bytes(encode(cifar_images[0], "PNG"))
    probe = subprocess.run([sys.executable, str(Path(__file__).with_name("kserve_clients.py")), "grpc", target, str(png)],
                           capture_output=True, text=True, timeout=120)
    assert probe.returncode == 0, probe.stderr[-3000:]
    seen = json.loads(probe.stdout)
    assert (seen["live"], seen["ready"], seen["tiny_ready"], seen["nope_ready"]) == (True, True, True, False)
    assert seen["metadata"] == ["tiny", [["input", "FP32", [-1, 3, 32, 32]]]]
    expected = reference.infer(X)
    assert seen["id"] == "k1"
    np.testing.assert_allclose(seen["logits"], expected, rtol=1e-4, atol=1e-4)
    assert top_indices(seen["top"]) == np.argsort(-expected, axis=1)[:, :3].tolist()
    want = reference.infer(preprocess([decode_image_bytes(png.read_bytes())], reference.manifest.preprocess))
    np.testing.assert_allclose(seen["image_logits"], want, rtol=1e-4, atol=1e-4)
    errors = seen["errors"]
    assert errors["timeout"][0] == "INVALID_ARGUMENT" and "timeout -1" in errors["timeout"][1]
    assert errors["unknown model"][0] == "NOT_FOUND" and "unknown model 'nope'" in errors["unknown model"][1]
    assert errors["shape"][0] == "INVALID_ARGUMENT" and "[1, 3, 32, 31]" in errors["shape"][1]


# -- malformed requests: INVALID_ARGUMENT naming the field, on ModelInfer and in the stream ----------------------
def raw_request(shape, datatype="FP32", raw=None, model="tiny", name="input", extra_raw=(), **parameters):
    request = service_pb2.ModelInferRequest(model_name=model)
    request.inputs.add(name=name, datatype=datatype, shape=shape)
    if raw is not None:
        request.raw_input_contents.append(raw)
    request.raw_input_contents.extend(extra_raw)
    for key, (kind, value) in parameters.items():
        setattr(request.parameters[key], kind, value)
    return request


def bytes_tensor(count: int, element: bytes = b"x") -> bytes:
    return (struct.pack("<I", len(element)) + element) * count


ROW = bytes(3 * 32 * 32 * 4)


def classification(k_kind, k_value):
    request = raw_request([1, 3, 32, 32], raw=ROW)
    output = request.outputs.add(name="logits")
    setattr(output.parameters["classification"], k_kind, k_value)
    return request


MALFORMED = {
    "negative dimension": (raw_request([-1, 3, 32, 32], raw=ROW), "shape [-1, 3, 32, 32]"),
    "2^40 elements": (raw_request([1 << 20, 1 << 20], raw=b""), "1,099,511,627,776 elements"),
    "2^31 x 2^31, no data": (raw_request([1 << 31, 1 << 31]), "elements"),
    "2^124 elements": (raw_request([1 << 31] * 4, raw=b""), "elements"),
    "70 dimensions": (raw_request([1] * 70, raw=b"\0\0\0\0"), "70 dimensions"),
    "raw count": (raw_request([1, 3, 32, 32], raw=ROW, extra_raw=[b"x"]), "2 raw_input_contents for 1 input"),
    "raw size": (raw_request([1, 3, 32, 32], raw=b"\0" * 100), "100 raw bytes"),
    "unknown datatype": (raw_request([1, 3, 32, 32], datatype="FP8", raw=ROW), "datatype 'FP8'"),
    "wrong datatype": (raw_request([1, 3, 32, 32], datatype="FP64", raw=ROW * 2), "is FP64; the model takes FP32"),
    "classification above": (classification("int64_param", 1001), "classification 1001"),
    "classification below": (classification("int64_param", -1), "classification -1"),
    "classification string": (classification("string_param", "3"), "classification '3'"),
    "timeout negative": (raw_request([1, 3, 32, 32], raw=ROW, timeout=("int64_param", -5)), "timeout -5"),
    "timeout text": (raw_request([1, 3, 32, 32], raw=ROW, timeout=("string_param", "1s")), "timeout '1s'"),
    "priority": (raw_request([1, 3, 32, 32], raw=ROW, priority=("uint64_param", 1)), "priority 1"),
    "images over --max-images": (raw_request([65, 1], "BYTES", bytes_tensor(65), model="tiny_image", name="image"),
                                 "--max-images"),
    "a million images declared": (raw_request([1 << 20], "BYTES", bytes_tensor(2), model="tiny_image", name="image"),
                                  "--max-images"),
    "BYTES count past the data": (raw_request([1 << 20], "BYTES", bytes_tensor(2)), "BYTES"),
}


@pytest.mark.parametrize("case", list(MALFORMED))
def test_malformed_request_is_invalid_argument_naming_the_field(stub, case):
    request, message = MALFORMED[case]
    with pytest.raises(grpc.RpcError) as caught:
        stub.ModelInfer(request, timeout=30)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT, (case, caught.value.details())
    assert message in caught.value.details(), (case, caught.value.details())


def test_malformed_requests_in_a_stream_are_answered_in_it(stub):
    cases = list(MALFORMED.values())
    requests = [request for request, _ in cases] + [raw_request([1, 3, 32, 32], raw=ROW)]
    answers = list(stub.ModelStreamInfer(iter(requests), timeout=60))
    assert len(answers) == len(requests)
    for (_, message), answer in zip(cases, answers):
        assert message in answer.error_message, (message, answer.error_message)
    assert answers[-1].error_message == "" and answers[-1].infer_response.outputs[0].shape == [1, 10]


# -- grpc.health.v1 and the unimplemented extensions ---------------------------------------------------------------
def test_grpc_health_check_and_watch(target):
    with grpc.insecure_channel(target) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        for service in ("", "inference.GRPCInferenceService"):
            assert health.Check(health_pb2.HealthCheckRequest(service=service), timeout=10).status == SERVING
        with pytest.raises(grpc.RpcError) as caught:
            health.Check(health_pb2.HealthCheckRequest(service="nope"), timeout=10)
        assert caught.value.code() == grpc.StatusCode.NOT_FOUND
        watch = health.Watch(health_pb2.HealthCheckRequest(service=""), timeout=10)
        assert next(watch).status == SERVING
        watch.cancel()


UNIMPLEMENTED = {
    "RepositoryIndex": (service_pb2.RepositoryIndexRequest(), "model repository extension"),
    "RepositoryModelLoad": (service_pb2.RepositoryModelLoadRequest(model_name="tiny"), "model repository extension"),
    "RepositoryModelUnload": (service_pb2.RepositoryModelUnloadRequest(model_name="tiny"),
                              "model repository extension"),
    "SystemSharedMemoryStatus": (service_pb2.SystemSharedMemoryStatusRequest(), "system shared memory extension"),
    "CudaSharedMemoryRegister": (service_pb2.CudaSharedMemoryRegisterRequest(name="r"),
                                 "CUDA shared memory extension"),
    "TraceSetting": (service_pb2.TraceSettingRequest(), "trace extension"),
    "LogSettings": (service_pb2.LogSettingsRequest(), "logging extension"),
}


def test_unimplemented_rpcs_name_the_extension_and_log_once_without_traceback(stub, server):
    for method, (request, extension) in UNIMPLEMENTED.items():
        for _ in range(2):
            with pytest.raises(grpc.RpcError) as caught:
                getattr(stub, method)(request, timeout=10)
            assert caught.value.code() == grpc.StatusCode.UNIMPLEMENTED, method
            assert f"trtinfer serve does not implement the {extension}" in caught.value.details(), method
    log = server.log.read_text()
    assert "Traceback" not in log, log[-3000:]
    for method in UNIMPLEMENTED:
        assert log.count(method) == 1, (method, log[-3000:])  # once per RPC name, however often called


def test_no_client_error_left_a_traceback(server):
    """Runs after every error path above (tests run in file order)."""
    log = server.log.read_text()
    assert "Traceback" not in log and "ERROR" not in log, log[-3000:]


# -- warm-up and drain: health and refusals on a real gRPC server over a real ServerState, in this process ------
def test_health_follows_warm_up_and_drain_and_calls_are_refused_unavailable(tiny_served):
    from trtinfer.serve.grpc_service import start_grpc
    from trtinfer.serve.metrics import Metrics
    from trtinfer.serve.registry import ModelSet
    from trtinfer.serve.service import ServerState

    models = ModelSet.load([tiny_served])
    state = ServerState(models=models, metrics=Metrics(models))
    port = free_port()
    server = start_grpc(state, "127.0.0.1", port, workers=8)
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            health, infer = health_pb2_grpc.HealthStub(channel), service_pb2_grpc.GRPCInferenceServiceStub(channel)
            check = health_pb2.HealthCheckRequest(service="inference.GRPCInferenceService")
            assert health.Check(check, timeout=10).status == NOT_SERVING  # still warming up
            watch = health.Watch(health_pb2.HealthCheckRequest(service=""), timeout=30)
            assert next(watch).status == NOT_SERVING
            models.warm_up()
            assert next(watch).status == SERVING
            assert health.Check(check, timeout=10).status == SERVING
            ok = infer.ModelInfer(raw_request([1, 3, 32, 32], raw=ROW), timeout=30)
            assert list(ok.outputs[0].shape) == [1, 10]

            # a stream opened before the drain: its requests are answered until new ones are refused
            sent: queue.Queue = queue.Queue()
            stream = infer.ModelStreamInfer(iter(sent.get, None), timeout=30)
            sent.put(raw_request([1, 3, 32, 32], raw=ROW))
            assert next(stream).error_message == ""

            state.draining = True  # SIGTERM: readiness off, still serving
            assert next(watch).status == NOT_SERVING
            assert health.Check(check, timeout=10).status == NOT_SERVING
            assert infer.ModelInfer(raw_request([1, 3, 32, 32], raw=ROW), timeout=30).outputs

            state.refusing = True  # the drain delay is over: new calls are refused, UNAVAILABLE (retried)
            with pytest.raises(grpc.RpcError) as caught:
                infer.ModelInfer(raw_request([1, 3, 32, 32], raw=ROW), timeout=30)
            assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
            with pytest.raises(grpc.RpcError) as caught:
                next(infer.ModelStreamInfer(iter([raw_request([1, 3, 32, 32], raw=ROW)]), timeout=30))
            assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
            sent.put(raw_request([1, 3, 32, 32], raw=ROW))
            with pytest.raises(grpc.RpcError) as caught:
                next(stream)
            assert caught.value.code() == grpc.StatusCode.UNAVAILABLE, caught.value.details()
            sent.put(None)
            watch.cancel()
            assert state.inflight == 0
    finally:
        server.stop(grace=None)
        models.close()


def test_typed_contents_cost_their_array_not_a_list_of_python_numbers():
    """A tensor sent in typed ``contents`` (fp32_contents) is read element by element into its array: the
    parse's peak is about the array itself, where converting through a list of Python floats costs ~9x."""
    import tracemalloc

    from trtinfer.serve.grpc_messages import parse_grpc_request
    from trtinfer.serve.options import Limits

    x = np.random.default_rng(2).standard_normal((64, 3, 32, 32)).astype(np.float32)
    request = service_pb2.ModelInferRequest(model_name="tiny")
    tensor = request.inputs.add(name="input", datatype="FP32", shape=list(x.shape))
    tensor.contents.fp32_contents.extend(x.ravel().tolist())
    tracemalloc.start()
    try:
        parsed = parse_grpc_request(request, Limits())
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    np.testing.assert_array_equal(parsed.inputs[0].array, x)
    assert peak < 2 * x.nbytes, f"parsing took {peak:,} bytes at peak for a {x.nbytes:,}-byte tensor"
