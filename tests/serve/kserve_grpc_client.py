"""The KServe SDK's ``InferenceGRPCClient`` against a running server, in its own process: KServe's generated
protocol module and tritonclient's both register the package ``inference`` in protobuf's default descriptor
pool, so one process cannot import both. Prints one JSON document of what the client saw.

Usage: python kserve_grpc_client.py HOST:PORT IMAGE_FILE
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


if __name__ == "__main__":
    import logging

    logging.disable(logging.ERROR)  # the SDK logs each failed call with its traceback; the JSON says what failed
    with open(sys.argv[2], "rb") as f:
        print(json.dumps(asyncio.run(probe(sys.argv[1], f.read()))))
