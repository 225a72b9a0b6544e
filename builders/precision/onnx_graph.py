"""What every precision tool checks and counts in an ONNX graph: its I/O types and opset, the calibration
data that fits it, that the result runs on ONNX Runtime's CPU provider, and its Q/DQ nodes.

No torch here.
"""

from __future__ import annotations

import shutil
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from trtinfer.errors import DataError, ValidationError

from ..logits import cpu_session

CALIBRATION_BATCH = 32  # images per ONNX Runtime run while calibrating (the model's batch is dynamic)


def io_types(model) -> dict[str, dict[str, str]]:
    from onnx import helper

    def name(vi) -> str:
        return helper.tensor_dtype_to_np_dtype(vi.type.tensor_type.elem_type).name

    return {"inputs": {vi.name: name(vi) for vi in model.graph.input},
            "outputs": {vi.name: name(vi) for vi in model.graph.output}}


def opset(model) -> int:
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)


def check_runs_on_cpu(path: Path, what: str) -> None:
    """The converted model must load in ONNX Runtime's CPU provider (the accuracy guard runs it)."""
    try:
        cpu_session(path)
    except ValidationError as exc:
        raise ValidationError(f"the {what} model does not load in ONNX Runtime (CPU): {exc}",
                              hint="report this with the FP32 model; build fp32 meanwhile") from exc


def static_batch(model) -> int | None:
    """The model's fixed batch size, or None when its batch dimension is dynamic."""
    dims = model.graph.input[0].type.tensor_type.shape.dim
    return dims[0].dim_value if dims and dims[0].HasField("dim_value") and dims[0].dim_value > 0 else None


def check_calibration(calibration: np.ndarray, model) -> None:
    if not isinstance(calibration, np.ndarray) or calibration.dtype != np.float32 or calibration.ndim != 4:
        raise DataError("calibration data must be a float32 NCHW array of preprocessed images, got "
                        f"{getattr(calibration, 'dtype', type(calibration))} {getattr(calibration, 'shape', '')}")
    if len(calibration) == 0:
        raise DataError("the calibration set is empty", hint="pass at least one calibration image")
    dims = [d.dim_value if d.HasField("dim_value") else -1 for d in model.graph.input[0].type.tensor_type.shape.dim]
    want = dims[1:]
    got = list(calibration.shape[1:])
    if len(want) != len(got) or any(w > 0 and w != g for w, g in zip(want, got)):
        raise DataError(f"calibration tensors are {got} per image but the model takes {want}",
                        hint="make the calibration data with the model's --input-size (and 3-channel RGB)")


def int8_source(onnx_in: Path, calibration: np.ndarray | None, method: str,
                methods: tuple[str, ...] | dict[str, Any]) -> tuple[Any, str, np.ndarray]:
    """What every INT8 tool checks first: a known method, calibration data that fits the model, and a
    single-input model; returns the loaded model, its input name and the calibration data."""
    if method not in methods:
        raise DataError(f"unknown calibration method {method!r}", hint=f"use one of {', '.join(methods)}")
    if calibration is None:
        raise DataError("INT8 needs calibration data", hint="pass --calib-data DIR or --calib-set calib.npz")
    import onnx

    source = onnx.load(str(onnx_in), load_external_data=False)
    check_calibration(calibration, source)
    if len(source.graph.input) != 1:
        raise DataError(f"{onnx_in} has {len(source.graph.input)} inputs; trtinfer calibrates single-input classifiers")
    return source, source.graph.input[0].name, calibration


def publish_int8(staged: Path, onnx_out: Path, model: Any, tool: str, onnx_in: Path) -> dict[str, Any]:
    """Move a quantized model from its staging file to ``onnx_out`` once it loads in ONNX Runtime and
    really holds Q/DQ nodes; return its :func:`qdq_counts`."""
    check_runs_on_cpu(staged, "INT8")
    counts = qdq_counts(model)
    if counts["quantize_linear"] == 0:
        raise ValidationError(f"{tool} inserted no Q/DQ nodes into {onnx_in}: the INT8 model would be FP32",
                              hint="check the model's op types (Conv, Gemm, MatMul are quantized), or build fp16")
    onnx_out.parent.mkdir(parents=True, exist_ok=True)
    shutil.move(str(staged), str(onnx_out))
    return counts


COMPUTE_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul")


def qdq_counts(model) -> dict[str, Any]:
    """Q/DQ nodes, which ops read a dequantized input (quantized), and compute ops left in float."""
    producers = {out: node for node in model.graph.node for out in node.output}
    quantized: Counter = Counter()
    float_compute: list[str] = []
    q = dq = 0
    for node in model.graph.node:
        if node.op_type == "QuantizeLinear":
            q += 1
            continue
        if node.op_type == "DequantizeLinear":
            dq += 1
            continue
        fed = [producers.get(i) for i in node.input if i]
        if any(p is not None and p.op_type == "DequantizeLinear" for p in fed):
            quantized[node.op_type] += 1
        elif node.op_type in COMPUTE_OPS:
            float_compute.append(f"{node.op_type}:{node.name}")
    return {"quantize_linear": q, "dequantize_linear": dq, "quantized_ops": dict(sorted(quantized.items())),
            "unquantized_compute_ops": float_compute}
