"""Quantization-aware fine-tuning for CPU targets: NNCF's PyTorch quantizers in the loop, exported as
the ONNX Q/DQ graph OpenVINO and ONNX Runtime run in INT8.

* BatchNorm is folded into its convolution first (eval-mode statistics, :func:`fold_batchnorm`), so the
  exported graph is the post-training one's: a Q/DQ'd weight per convolution and no BatchNormalization
  node between a convolution and its activation (which OpenVINO would run in float after the INT8
  convolution). The fine-tune then moves weights and quantizer ranges, not running statistics.
* ``nncf.quantize`` on the PyTorch model inserts NNCF's fake quantizers, calibrated on the build's
  calibration images with the CPU preset (symmetric activations, per-channel weights). NNCF compiles a
  small C++ extension the first time (about 40 s, needs a compiler).
* Export: ``nncf.strip(..., strip_format=StripFormat.NATIVE)`` turns NNCF's quantizers into PyTorch's own
  fake-quantize ops, which the TorchScript ONNX exporter writes as QuantizeLinear/DequantizeLinear (a
  plain export of NNCF's model gives ``org.openvinotoolkit:FakeQuantize`` nodes ONNX Runtime refuses).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from trtinfer.defaults import OPSET
from trtinfer.errors import InternalError
from trtinfer.versions import require_package

log = logging.getLogger(__name__)

CALIBRATION_BATCH = 32


def need_nncf() -> str:
    return require_package("nncf", "quantization-aware training for CPU targets needs OpenVINO NNCF")


def fold_batchnorm(model: Any) -> Any:
    """``model``, in place and in eval mode, with every BatchNorm that only a convolution feeds folded into it and
    replaced by ``Identity``. ``torch.fx`` finds the pairs; the module tree keeps its classes (NNCF cannot
    quantize an fx ``GraphModule``). A model fx cannot trace keeps its BatchNorms."""
    import torch
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    folded = model.eval()
    try:
        graph = torch.fx.symbolic_trace(folded).graph
    except Exception as exc:  # noqa: BLE001 -- tracing is best effort
        log.info("BatchNorm folding skipped (torch.fx cannot trace the model: %s)", exc)
        return folded
    modules = dict(folded.named_modules())
    pairs = []
    for node in graph.nodes:
        if node.op != "call_module" or not isinstance(modules.get(str(node.target)), torch.nn.BatchNorm2d):
            continue
        source = node.args[0] if node.args else None
        if isinstance(source, torch.fx.Node) and source.op == "call_module" \
                and isinstance(modules.get(str(source.target)), torch.nn.Conv2d) and len(source.users) == 1:
            pairs.append((str(source.target), str(node.target)))
    for conv_name, bn_name in pairs:
        _set(folded, conv_name, fuse_conv_bn_eval(modules[conv_name], modules[bn_name]))
        _set(folded, bn_name, torch.nn.Identity())
    return folded


def _set(root: Any, dotted: str, module: Any) -> None:
    parent, _, name = dotted.rpartition(".")
    setattr(root.get_submodule(parent) if parent else root, name, module)


def prepare(model: Any, calibration: np.ndarray, batch_size: int = CALIBRATION_BATCH) -> Any:
    """An FP32 classifier -> the model with BatchNorm folded into it (in place: pass a copy to keep the original,
    as :func:`.run.run_qat` does) and NNCF's INT8 fake quantizers, their ranges calibrated on ``calibration``
    (float32 NCHW, preprocessed), ready to fine-tune."""
    need_nncf()
    import torch

    from ..precision.nncf_int8 import quiet_nncf

    folded = fold_batchnorm(model)
    images = torch.from_numpy(np.ascontiguousarray(calibration, np.float32))
    batches = [images[i:i + batch_size] for i in range(0, len(images), batch_size)]
    notes: list[str] = []
    with quiet_nncf(notes):
        import nncf

        try:
            quantized = nncf.quantize(folded, nncf.Dataset(batches), preset=nncf.QuantizationPreset.PERFORMANCE,
                                      target_device=nncf.TargetDevice.CPU, subset_size=len(batches))
        except Exception as exc:  # NNCF raises assorted types
            raise InternalError(f"NNCF could not insert fake quantizers into the model: {exc}") from exc
    for note in notes:
        log.info("nncf: %s", note)
    return quantized


def export(model: Any, path: Path, input_size: int, opset: int = OPSET) -> dict[str, Any]:
    """The fine-tuned model -> ONNX Q/DQ at ``path`` (input ``input``, output ``logits``, dynamic batch);
    returns the conversion facts (tool, version, Q/DQ counts)."""
    version = need_nncf()
    import nncf
    import onnx
    import torch
    from nncf import StripFormat

    from ..export.onnx_export import check_io, export_torchscript
    from ..precision.onnx_graph import check_runs_on_cpu, io_types, opset as opset_of, qdq_counts

    model = model.eval()
    example = torch.zeros(2, 3, input_size, input_size)
    stripped = nncf.strip(model, do_copy=True, strip_format=StripFormat.NATIVE, example_input=example[:1])
    export_torchscript(stripped, example, path, max(opset, 13))
    proto = onnx.load(str(path))
    check_io(proto)
    check_runs_on_cpu(path, "INT8 (QAT)")
    counts = qdq_counts(proto)
    if counts["quantize_linear"] == 0:
        raise InternalError("the QAT export holds no QuantizeLinear node: NNCF's quantizers did not survive nncf.strip")
    return {"tool": "nncf-qat", "version": version, "precision": "int8", "method": "qat", "target_device": "CPU",
            **counts, "io_types": io_types(proto), "opset_out": opset_of(proto)}
