"""The KServe SDK's clients (``InferenceGRPCClient``, and ``InferenceRESTClient`` speaking v2) against a running
server, in their own process: KServe's generated protocol module and tritonclient's both register the package
``inference`` in protobuf's default descriptor pool, so one process cannot import both. Prints one JSON
document of what the client saw.

Usage: python kserve_clients.py grpc HOST:PORT IMAGE_FILE
       python kserve_clients.py rest http://HOST:PORT IMAGE_FILE
"""

from __future__ import annotations

import asyncio
import json
import sys

import grpc
import numpy as np


async def probe(target: str, png: bytes) -> dict:
    import kserve
    from kserve.protocol.infer_type import RequestedOutput
    from kserve.protocol.grpc.grpc_predict_v2_pb2 import ModelMetadataRequest

    x = np.random.default_rng(1).standard_normal((3, 3, 32, 32)).astype(np.float32)
    client = kserve.InferenceGRPCClient(target, timeout=30)
    try:
        seen: dict = {"live": await client.is_server_live(), "ready": await client.is_server_ready(),
                      "tiny_ready": await client.is_model_ready("tiny"),
                      "nope_ready": await client.is_model_ready("nope")}
        meta = await client._client_stub.ModelMetadata(ModelMetadataRequest(name="tiny"), timeout=30)
        seen["metadata"] = [meta.name, [(t.name, t.datatype, list(t.shape)) for t in meta.inputs]]
        tensor = kserve.InferInput("input", list(x.shape), "FP32")
        tensor.set_data_from_numpy(x)
        plain = await client.infer(kserve.InferRequest("tiny", [tensor], request_id="k1"))
        seen["id"], seen["logits"] = plain.id, plain.outputs[0].as_numpy().tolist()
        top = await client.infer(kserve.InferRequest(
            "tiny", [tensor], request_outputs=[RequestedOutput("logits", {"classification": 3})]))
        seen["top"] = [[v.decode() if isinstance(v, bytes) else str(v) for v in row]
                       for row in top.outputs[0].as_numpy().tolist()]
        image = kserve.InferInput("image", [1], "BYTES", data=[png])
        seen["image_logits"] = (await client.infer(kserve.InferRequest("tiny_image", [image]))).outputs[0] \
            .as_numpy().tolist()
        errors = {}
        for case, request in {
            "timeout": kserve.InferRequest("tiny", [tensor], parameters={"timeout": -1}),
            "unknown model": kserve.InferRequest("nope", [tensor]),
            "shape": kserve.InferRequest("tiny", [kserve.InferInput("input", [1, 3, 32, 31], "FP32",
                                                                    data=[0.0] * 3 * 32 * 31)]),
        }.items():
            try:
                await client.infer(request)
                errors[case] = None
            except grpc.aio.AioRpcError as exc:
                errors[case] = [exc.code().name, exc.details()]
        seen["errors"] = errors
        return seen
    finally:
        await client.close()


async def probe_rest(url: str, png: bytes) -> dict:
    import httpx
    import kserve

    x = np.random.default_rng(1).standard_normal((3, 3, 32, 32)).astype(np.float32)
    async with kserve.InferenceRESTClient(kserve.RESTConfig(protocol="v2", retries=0, timeout=60)) as client:
        seen: dict = {"live": await client.is_server_live(url), "ready": await client.is_server_ready(url),
                      "tiny_ready": await client.is_model_ready(url, "tiny"),
                      "nope_ready": await client.is_model_ready(url, "nope")}
        for binary in (True, False):
            tensor = kserve.InferInput("input", list(x.shape), "FP32")
            tensor.set_data_from_numpy(x, binary_data=binary)
            response = await client.infer(url, kserve.InferRequest("tiny", [tensor]), model_name="tiny")
            seen[f"logits_{'binary' if binary else 'json'}"] = response.outputs[0].as_numpy().tolist()
        image = kserve.InferInput("image", [1, 1], "BYTES")
        image.set_data_from_numpy(np.array([[png]], dtype=object), binary_data=True)
        response = await client.infer(url, kserve.InferRequest("tiny_image", [image]), model_name="tiny_image")
        seen["image_logits"] = response.outputs[0].as_numpy().tolist()
        bad = kserve.InferInput("input", [1, 2], "FP32")
        bad.set_data_from_numpy(np.zeros((1, 2), np.float32), binary_data=False)
        errors = {}
        for case, model, request in (("unknown model", "nope", kserve.InferRequest("nope", [tensor])),
                                     ("shape", "tiny", kserve.InferRequest("tiny", [bad]))):
            try:
                await client.infer(url, request, model_name=model)
                errors[case] = None
            except httpx.HTTPStatusError as exc:
                errors[case] = [exc.response.status_code, str(exc)]
        seen["errors"] = errors
        return seen


if __name__ == "__main__":
    import logging

    logging.disable(logging.ERROR)  # the SDK logs each failed call with its traceback; the JSON says what failed
    with open(sys.argv[3], "rb") as f:
        run = probe if sys.argv[1] == "grpc" else probe_rest
        print(json.dumps(asyncio.run(run(sys.argv[2], f.read()))))
