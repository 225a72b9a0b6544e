"""Quantization-aware training for the GPU target: ModelOpt's PyTorch fake quantizers in, Q/DQ ONNX out.

:func:`prepare` puts ModelOpt's INT8 fake quantizers (``mtq.INT8_DEFAULT_CFG``: per-channel signed INT8
weights on axis 0, per-tensor signed INT8 activations at every Conv/Linear input) into an FP32 torchvision
classifier and calibrates them (max) on the artifact's calibration images; the caller fine-tunes the
result (ModelOpt's CNN QAT recipe: the amax values stay fixed while the weights adapt). :func:`export`
then writes the fine-tuned model as ONNX whose QuantizeLinear/DequantizeLinear pairs TensorRT builds as
INT8 layers, and :func:`check_tensorrt_qdq` holds it to what TensorRT's explicit quantization needs.

Everything here runs on the CPU; ONNX Runtime's CPU provider runs the exported model (the accuracy guard).
"""

from __future__ import annotations

import contextlib
import io
import logging
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from trtinfer.defaults import OPSET
from trtinfer.errors import BackendUnavailable, DataError, InternalError, ValidationError
from trtinfer.versions import require_package

log = logging.getLogger(__name__)

CONFIG = "INT8_DEFAULT_CFG"  # the config ModelOpt documents for CNNs (modelopt/torch/quantization/config.py)
ALGORITHM = "max"  # INT8_DEFAULT_CFG's calibration: amax = the largest |value| seen
CALIBRATION_BATCH = 64
_EXPORT_BATCH = 2  # rows of the example input the exporter traces with (the batch dimension is dynamic)
_HINT = "pip install 'trtinfer[build]' requests  (ModelOpt's PyTorch quantization imports requests)"
# torch loggers that warn on every import of modelopt.torch on a host without CUDA (cpp_extension) or
# with torchao (pytree registrations): not ours to show.
_IMPORT_NOISE = ("torch.utils.cpp_extension", "torch.utils._pytree")


# -- ModelOpt plumbing ------------------------------------------------------------------------

@contextlib.contextmanager
def _quiet(what: str) -> Iterator[None]:
    """Keep ModelOpt's prints ("Inserted 107 quantizers"), its warnings and torch's import-time log
    lines off the terminal; what it printed is logged at DEBUG."""
    saved = {name: logging.getLogger(name).level for name in _IMPORT_NOISE}
    for name in _IMPORT_NOISE:
        logging.getLogger(name).setLevel(logging.ERROR)
    buffer = io.StringIO()
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(buffer):
            warnings.simplefilter("ignore")
            yield
    finally:
        for name, level in saved.items():
            logging.getLogger(name).setLevel(level)
        if buffer.getvalue().strip():
            log.debug("modelopt (%s):\n%s", what, buffer.getvalue().rstrip())


def need_modelopt() -> str:
    """ModelOpt's version, once its PyTorch quantization imports; else BackendUnavailable with the fix."""
    version = require_package("nvidia-modelopt", "quantization-aware training for the GPU target needs NVIDIA "
                              "ModelOpt (nvidia-modelopt)", hint=_HINT)
    try:
        with _quiet("import"):
            import modelopt.torch.quantization  # noqa: F401
    except ImportError as exc:  # e.g. `requests`, which nvidia-modelopt does not declare
        raise BackendUnavailable(f"ModelOpt {version} is installed but its PyTorch quantization does not "
                                 f"import: {exc}", hint=_HINT) from exc
    return version


def _mtq():
    need_modelopt()
    import modelopt.torch.quantization as mtq

    return mtq


# -- prepare ----------------------------------------------------------------------------------

def _check_calibration(calibration: np.ndarray) -> None:
    if not isinstance(calibration, np.ndarray) or calibration.dtype != np.float32 or calibration.ndim != 4:
        raise DataError("calibration data must be a float32 NCHW array of preprocessed images, got "
                        f"{getattr(calibration, 'dtype', type(calibration))} {getattr(calibration, 'shape', '')}")
    if len(calibration) == 0:
        raise DataError("the calibration set is empty", hint="pass at least one calibration image")


def prepare(model, calibration: np.ndarray, batch_size: int = CALIBRATION_BATCH):
    """An FP32 classifier (CPU, either mode) -> the same module, with ModelOpt's INT8 fake quantizers
    calibrated on ``calibration`` (float32 NCHW, preprocessed), ``batch_size`` images per forward pass.

    ModelOpt replaces the Conv/Linear modules in place; calibration runs in eval mode (BatchNorm's running
    statistics are not touched) and the model is handed back in the mode it came in.
    """
    import torch

    _check_calibration(calibration)
    if batch_size < 1:
        raise DataError(f"calibration batch size {batch_size} must be at least 1")
    mtq = _mtq()
    images = torch.from_numpy(np.ascontiguousarray(calibration))
    training = model.training

    def forward_loop(m) -> None:
        m.eval()
        with torch.no_grad():
            for start in range(0, len(images), batch_size):
                m(images[start:start + batch_size])

    try:
        with _quiet("quantize"):
            quantized = mtq.quantize(model, getattr(mtq, CONFIG), forward_loop)
    except Exception as exc:  # ModelOpt raises assorted types
        raise InternalError(f"ModelOpt could not quantize {type(model).__name__}: {exc}") from exc
    floored = _floor_amax(quantized)
    quantized.train(training)
    log.info("ModelOpt %s: %d quantizer range(s) raised to the floor %g", CONFIG, floored, AMAX_FLOOR)
    log.info("ModelOpt %s: %d quantizers enabled, calibrated (%s) on %d images", CONFIG,
             _enabled_quantizers(quantized), ALGORITHM, len(images))
    return quantized


#: The smallest range a quantizer keeps: a dead channel or a vanishing activation calibrates to an amax of (nearly)
#: 0, and a scale of amax / 127 that small turns the fake quantizer's backward pass into NaN (a randomly initialised
#: MobileNetV2 at width 0.25 did on its first step). Below it nothing a float32 classifier carries is lost.
AMAX_FLOOR = 1e-6


def _floor_amax(model) -> int:
    """Raise every calibrated range below :data:`AMAX_FLOOR` to it; the number of quantizers changed."""
    import torch
    from modelopt.torch.quantization.nn import TensorQuantizer

    changed = 0
    with torch.no_grad():
        for m in model.modules():
            amax = getattr(m, "amax", None) if isinstance(m, TensorQuantizer) else None
            if isinstance(amax, torch.Tensor) and bool((amax < AMAX_FLOOR).any()):
                m.amax = amax.clamp(min=AMAX_FLOOR)
                changed += 1
    return changed


def _enabled_quantizers(model) -> int:
    from modelopt.torch.quantization.nn import TensorQuantizer

    return sum(1 for m in model.modules() if isinstance(m, TensorQuantizer) and m.is_enabled)


# -- export -----------------------------------------------------------------------------------

def export(model, path: str | Path, input_size: int) -> dict[str, Any]:
    """The fine-tuned fake-quant model -> ONNX at ``path`` with QuantizeLinear/DequantizeLinear pairs that
    TensorRT runs in INT8; the artifact's I/O contract (``input`` -> ``logits``, dynamic batch). Returns
    the facts for the manifest.

    ModelOpt's TensorQuantizer exports through the TorchScript-based exporter as a Q/DQ pair
    (``modelopt/torch/quantization/export_onnx.py``, ``export_int8``: scale = amax / 127, a zero point of
    0 cast to INT8 when the quantizer is signed, ``axis`` set for per-channel amax); ModelOpt's own
    ``torch_onnx.get_onnx_bytes_and_metadata`` uses the same ``torch.onnx.export``, which is why
    ``dynamo=False`` here. BatchNormalization stays after each Conv: TensorRT folds it into the INT8
    convolution while building (NVIDIA/TensorRT#1407 shows it removing them in a Q/DQ graph).
    """
    import onnx
    import torch

    from ..export.onnx_export import check_io, export_torchscript
    from ..precision.onnx_graph import qdq_counts

    version = need_modelopt()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    training = model.training
    model.eval()
    example = torch.randn(_EXPORT_BATCH, 3, input_size, input_size)
    try:
        with _quiet("export"), torch.no_grad():
            export_torchscript(model, example, path, OPSET)
    except Exception as exc:  # exporter internals raise many types
        raise ValidationError(f"ONNX export of the fake-quantized model failed: {str(exc).splitlines()[0][:200]}",
                              hint="check that the model runs on a 1x3xNxN float32 input (--input-size)") from exc
    finally:
        model.train(training)
    proto = onnx.load(str(path))
    casts = drop_float_casts(proto)
    if casts:
        onnx.save(proto, str(path))
    onnx.checker.check_model(proto)
    check_io(proto)
    check_tensorrt_qdq(proto)
    counts = qdq_counts(proto)
    if counts["quantize_linear"] == 0:
        raise ValidationError("the exported QAT model holds no Q/DQ nodes: it would run in float",
                              hint="check that prepare() ran on this model (Conv and Linear are quantized)")
    return {
        "tool": "modelopt", "version": version, "precision": "int8", "config": CONFIG, "algorithm": ALGORITHM,
        "weights": "int8 per-channel symmetric", "activations": "int8 per-tensor symmetric",
        "exporter": "torchscript", "opset": OPSET, "torch": torch.__version__, "float_casts_removed": casts,
        **counts,
    }


def drop_float_casts(model) -> int:
    """Remove ``Cast(to=FLOAT)`` nodes whose input is already float32 (ModelOpt's INT8 symbolic leaves
    one beside each quantizer whose input type the tracer did not know, feeding the residual Adds);
    returns how many went. A graph output keeps its Cast."""
    import onnx

    inferred = onnx.shape_inference.infer_shapes(model)
    types = {vi.name: vi.type.tensor_type.elem_type
             for vi in [*inferred.graph.input, *inferred.graph.value_info, *inferred.graph.output]}
    types.update({t.name: t.data_type for t in model.graph.initializer})
    outputs = {o.name for o in model.graph.output}
    doomed = [n for n in model.graph.node
              if n.op_type == "Cast" and n.output[0] not in outputs
              and types.get(n.input[0]) == onnx.TensorProto.FLOAT
              and any(a.name == "to" and a.i == onnx.TensorProto.FLOAT for a in n.attribute)]
    for cast in doomed:
        source, gone = cast.input[0], cast.output[0]
        for node in model.graph.node:
            for i, name in enumerate(node.input):
                if name == gone:
                    node.input[i] = source
        model.graph.node.remove(cast)
    return len(doomed)


def check_tensorrt_qdq(model) -> None:
    """What TensorRT's explicit INT8 quantization needs of the Q/DQ nodes: signed INT8 with zero points
    of 0 (symmetric), and each Conv/Gemm weight quantized per output channel (one scale per channel on
    axis 0: Conv weights are [out, in, ...], torch's Linear exports as Gemm with transB=1, [out, in])."""
    from onnx import numpy_helper

    consts = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value":
            consts[node.output[0]] = numpy_helper.to_array(node.attribute[0].t)
    producers = {out: node for node in model.graph.node for out in node.output}
    problems: list[str] = []
    for node in model.graph.node:
        if node.op_type in ("QuantizeLinear", "DequantizeLinear"):
            zero = consts.get(node.input[2]) if len(node.input) > 2 else None
            if zero is None or zero.dtype != np.int8 or np.any(zero != 0):
                got = "none" if zero is None else f"{zero.dtype} {zero.ravel()[:4]}"
                problems.append(f"{node.op_type} {node.name}: zero point {got}, want int8 0")
        if node.op_type not in ("Conv", "Gemm") or len(node.input) < 2:
            continue
        dq = producers.get(node.input[1])
        if dq is None or dq.op_type != "DequantizeLinear":
            continue  # a weight left in float; qdq_counts lists such layers
        scale = consts.get(dq.input[1])
        axis = next((a.i for a in dq.attribute if a.name == "axis"), 1)
        transposed = node.op_type == "Gemm" and not any(a.name == "transB" and a.i == 1 for a in node.attribute)
        weight = _weight_shape(dq, producers, consts)
        channels = None if weight is None else weight[1 if transposed else 0]
        if scale is None or scale.ndim != 1 or axis != 0 or transposed or len(scale) != channels:
            problems.append(f"{node.op_type} {node.name}: weight scales {getattr(scale, 'shape', None)} on axis "
                            f"{axis}{' (weight not transposed)' if transposed else ''}, want {channels} on axis 0")
    if problems:
        raise ValidationError(f"the QAT model's Q/DQ nodes do not suit TensorRT ({len(problems)} problems): "
                              + "; ".join(problems[:5]), hint="report this with the model's architecture")


def _weight_shape(dq, producers, consts) -> tuple[int, ...] | None:
    """The shape of the weight behind a DequantizeLinear: the float weight its QuantizeLinear reads,
    or the quantized initializer itself."""
    q = producers.get(dq.input[0])
    name = q.input[0] if q is not None and q.op_type == "QuantizeLinear" else dq.input[0]
    while name not in consts and name in producers and producers[name].op_type == "Identity":
        name = producers[name].input[0]  # torch shares equal initializers through Identity nodes
    value = consts.get(name)
    return None if value is None else tuple(value.shape)


__all__ = ["prepare", "export", "need_modelopt", "check_tensorrt_qdq", "drop_float_casts", "CONFIG", "ALGORITHM"]
