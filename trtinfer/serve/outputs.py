"""The infer response, for both transports: Triton's classification extension (``"classification": k`` returns
BYTES ``value:index:label``, the output's own value, best first; Triton's ``classification.md``) and the HTTP
body with JSON or binary outputs (Triton's ``binary_data.md``: ``binary_data``, ``binary_data_output``,
``Inference-Header-Content-Length``)."""

from __future__ import annotations

import json
import struct
from typing import Any

import numpy as np

from .protocol import HEADER_LENGTH, InferRequest, OutputRequest, ProtocolError


def encode_bytes_tensor(values: list[bytes]) -> bytes:
    return b"".join(struct.pack("<I", len(v)) + v for v in values)


def classify(values: np.ndarray, labels: list[str], k: int) -> np.ndarray:
    """Triton's classification extension: per row, the ``k`` largest values as ``value:index:label``."""
    k = min(k, values.shape[-1])
    order = np.argsort(-values, axis=-1, kind="stable")[..., :k]
    out = np.empty(order.shape, dtype=object)
    for index in np.ndindex(order.shape):
        cls = int(order[index])
        value = float(values[index[:-1] + (cls,)])
        out[index] = f"{value:f}:{cls}:{labels[cls]}".encode()
    return out


def build_infer_response(model_name: str, model_version: str, request: InferRequest,
                         outputs: dict[str, np.ndarray], labels: list[str]) -> tuple[bytes, dict[str, str]]:
    """The response body and its extra headers (``Inference-Header-Content-Length`` when binary)."""
    wanted = request.outputs or [OutputRequest(name, request.binary_output_default) for name in outputs]
    header_outputs, chunks = [], []
    for want in wanted:
        if want.name not in outputs:
            raise ProtocolError(f"the model has no output {want.name!r} (it has {', '.join(outputs)})")
        array = outputs[want.name]
        datatype = "FP32"
        if want.classification:
            array = classify(array, labels, want.classification)
            datatype = "BYTES"
        entry: dict[str, Any] = {"name": want.name, "datatype": datatype, "shape": list(array.shape)}
        if want.binary:
            raw = encode_bytes_tensor(list(array.ravel())) if datatype == "BYTES" else \
                np.ascontiguousarray(array, dtype="<f4").tobytes()
            entry["parameters"] = {"binary_data_size": len(raw)}
            chunks.append(raw)
        elif datatype == "BYTES":
            entry["data"] = [v.decode() for v in array.ravel()]
        else:
            entry["data"] = np.asarray(array, dtype=np.float64).ravel().tolist()
        header_outputs.append(entry)
    header: dict[str, Any] = {"model_name": model_name, "model_version": model_version, "outputs": header_outputs}
    if request.id is not None:
        header["id"] = request.id
    head = json.dumps(header, separators=(",", ":")).encode()
    if not chunks:
        return head, {}
    return head + b"".join(chunks), {HEADER_LENGTH: str(len(head))}
