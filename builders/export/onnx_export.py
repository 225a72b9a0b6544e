"""PyTorch -> ONNX with the artifact's fixed names and a dynamic batch dimension."""

from __future__ import annotations

import contextlib
import io
import logging
import warnings
from pathlib import Path

import onnx
import torch

from trtinfer.defaults import OPSET as DEFAULT_OPSET
from trtinfer.errors import TrtInferError, ValidationError
from trtinfer.manifest import ExportRecord

log = logging.getLogger(__name__)

INPUT_NAME = "input"
OUTPUT_NAME = "logits"
BATCH_DIM = "batch"


def export_torchscript(model: torch.nn.Module, example: torch.Tensor, path: Path, opset: int) -> None:
    """``model`` -> ONNX at ``path`` by the TorchScript-based exporter, with the artifact's input and output names
    and a dynamic batch (the exporter's warnings and prints kept off the terminal). The fake-quantized models of
    quantization-aware training export through it too: only this exporter writes their Q/DQ nodes."""
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (example,), str(path), dynamo=False, opset_version=opset,
                          input_names=[INPUT_NAME], output_names=[OUTPUT_NAME], do_constant_folding=True,
                          dynamic_axes={INPUT_NAME: {0: BATCH_DIM}, OUTPUT_NAME: {0: BATCH_DIM}})


def _export_dynamo(model: torch.nn.Module, example: torch.Tensor, path: Path, opset: int) -> None:
    batch = torch.export.Dim(BATCH_DIM, min=1, max=1 << 16)
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        program = torch.onnx.export(model, (example,), dynamo=True, opset_version=max(opset, 18),
                                    input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                                    dynamic_shapes=({0: batch},), verbose=False)
        if program is None:  # torch returns the program for dynamo=True; None would be a torch bug
            raise RuntimeError("torch.onnx.export returned no ONNX program")
        program.save(str(path))


def export_onnx(model: torch.nn.Module, path: str | Path, input_size: int, opset: int = DEFAULT_OPSET) -> ExportRecord:
    """Export ``model`` (eval mode, float32) and check the graph; returns the manifest's record of it
    (``validation.export``, its ``seconds`` added by the caller who timed it).

    The TorchScript-based exporter is tried first (fast, and what TensorRT's parser has seen most);
    the torch.export-based one is the fallback for models it cannot trace.
    """
    if opset < DEFAULT_OPSET:
        raise TrtInferError(f"--opset {opset} is below {DEFAULT_OPSET}", hint=f"use opset {DEFAULT_OPSET} or newer")
    path = Path(path)
    model = model.eval()
    example = torch.randn(2, 3, input_size, input_size)
    exporter = "torchscript"
    try:
        export_torchscript(model, example, path, opset)
    except Exception as first:  # exporter internals raise many types
        log.info("TorchScript-based export failed (%s); trying torch.export", first)
        exporter = "dynamo"
        try:
            _export_dynamo(model, example, path, opset)
        except Exception as second:
            raise ValidationError(f"ONNX export failed: {str(second).splitlines()[0][:200]}",
                                  hint="check that the model runs on a 1x3xNxN float32 input (--input-size)") from second
    model_proto = onnx.load(str(path))
    onnx.checker.check_model(model_proto)
    check_io(model_proto)
    return ExportRecord(exporter=exporter,
                        opset=max(o.version for o in model_proto.opset_import if o.domain in ("", "ai.onnx")),
                        torch=torch.__version__, onnx=onnx.__version__)


def check_io(model_proto: onnx.ModelProto) -> None:
    """The artifact contract: one float input ``input`` and one output ``logits``, batch dim dynamic."""
    inputs = [i for i in model_proto.graph.input if i.name not in {t.name for t in model_proto.graph.initializer}]
    outputs = list(model_proto.graph.output)
    if [i.name for i in inputs] != [INPUT_NAME] or [o.name for o in outputs] != [OUTPUT_NAME]:
        raise ValidationError(f"exported graph has inputs {[i.name for i in inputs]} and outputs "
                              f"{[o.name for o in outputs]}, expected ['{INPUT_NAME}'] and ['{OUTPUT_NAME}']")
    for tensor in (inputs[0], outputs[0]):
        dim0 = tensor.type.tensor_type.shape.dim[0]
        if dim0.HasField("dim_value"):
            raise ValidationError(f"exported {tensor.name} has a fixed batch dimension {dim0.dim_value}")
