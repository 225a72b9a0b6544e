"""INT8 for CPUs: OpenVINO NNCF post-training quantization, written as an ONNX Q/DQ model.

NNCF places its quantizers where OpenVINO's CPU plugin runs INT8 kernels (and corrects the bias
the rounding shifts), which ModelOpt, aiming at TensorRT's fusions, does not; on one AVX-512 VNNI
machine OpenVINO ran NNCF's ResNet-18 1.15x faster than ModelOpt's Q/DQ graph at batch 32.

NNCF can write either ONNX (its ONNX backend) or OpenVINO IR (its OpenVINO backend). Both were
timed in OpenVINO on the same machine, interleaved, 7 rounds: the ONNX model ran at 0.99-1.03x
the IR's speed (ResNet-18 and MobileNetV2, batch 1 and 32), so the artifact stays one
``model.onnx`` that every backend loads (ONNX Runtime runs its Q/DQ nodes too) and the manifest's
contract is unchanged. See docs/precision.md.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from trtinfer.errors import DataError, InternalError
from trtinfer.versions import require_package

from .onnx_graph import CALIBRATION_BATCH, int8_source, io_types, opset, publish_int8, static_batch
from .unsigned_activations import make_activations_unsigned
from .registry import register

log = logging.getLogger(__name__)

# name -> (preset, activation range estimator); the first is NNCF's own default for CNNs.
NNCF_METHODS = {
    "performance": ("performance", None),  # symmetric activations, NNCF's default min/max estimators
    "mixed": ("mixed", None),  # asymmetric activations: better for tensors that are not centred on 0
    "mean_minmax": ("performance", "MEAN_MINMAX"),  # per-batch min/max averaged: robust to outlier images
}
DEFAULT_NNCF_METHOD = "performance"


def _need_nncf() -> str:
    return require_package("nncf", "the NNCF quantizer needs OpenVINO NNCF")


@contextlib.contextmanager
def quiet_nncf(notes: list[str]) -> Iterator[None]:
    """NNCF draws rich progress bars and logs INFO lines; keep them off the build's terminal and
    collect its warnings into ``notes`` (the manifest's conversion facts) instead."""
    logger = logging.getLogger("nncf")
    saved = (logger.handlers[:], logger.level, logger.propagate)

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            notes.append(f"{record.levelname}: {record.getMessage()}")

    logger.handlers, logger.propagate = [Collect(level=logging.WARNING)], False
    logger.setLevel(logging.WARNING)
    buffer = io.StringIO()
    try:
        with contextlib.redirect_stdout(buffer), contextlib.redirect_stderr(buffer):
            yield
    finally:
        logger.handlers, logger.propagate = saved[0], saved[2]
        logger.setLevel(saved[1])
        log.debug("nncf output:\n%s", buffer.getvalue())


@register("nncf-int8", "int8", needs_calibration=True, library="nncf", methods=tuple(NNCF_METHODS),
          description="OpenVINO NNCF post-training INT8 (bias-corrected), ONNX Q/DQ placed for CPU kernels")
def quantize_int8_nncf(onnx_in: str | Path, onnx_out: str | Path, calibration: np.ndarray | None = None,
                       method: str = DEFAULT_NNCF_METHOD, nodes_to_exclude: list[str] | None = None,
                       batch_size: int = CALIBRATION_BATCH) -> dict[str, Any]:
    """FP32 ONNX -> INT8 Q/DQ ONNX by ``nncf.quantize`` over every calibration image.

    ``nodes_to_exclude``: ONNX node names kept in float (NNCF ``IgnoredScope``), the sensitivity
    fallback's lever.
    """
    version = _need_nncf()
    onnx_in, onnx_out = Path(onnx_in), Path(onnx_out)
    source, input_name, calibration = int8_source(onnx_in, calibration, method, NNCF_METHODS)
    import onnx
    batch = static_batch(source) or max(1, min(batch_size, len(calibration)))
    images = np.ascontiguousarray(calibration, np.float32)
    batches = [{input_name: images[i:i + batch]} for i in range(0, len(images) - batch + 1, batch)]
    if not batches:
        raise DataError(f"{len(calibration)} calibration images but the model's batch size is fixed at {batch}",
                        hint=f"pass at least {batch} calibration images")
    preset, estimator = NNCF_METHODS[method]
    exclude = list(nodes_to_exclude or [])
    notes: list[str] = []
    with quiet_nncf(notes):
        import nncf
        from nncf.quantization.advanced_parameters import AdvancedQuantizationParameters
        from nncf.quantization.range_estimator import RangeEstimatorParametersSet

        advanced = AdvancedQuantizationParameters()
        if estimator is not None:
            advanced.activations_range_estimator_params = getattr(RangeEstimatorParametersSet, estimator)
        try:
            quantized = nncf.quantize(
                source, nncf.Dataset(batches), preset=nncf.QuantizationPreset(preset),
                target_device=nncf.TargetDevice.CPU, subset_size=len(batches),  # counts dataset items
                ignored_scope=nncf.IgnoredScope(names=exclude) if exclude else None, advanced_parameters=advanced)
        except Exception as exc:  # NNCF raises assorted types
            raise InternalError(f"NNCF INT8 quantization failed on {onnx_in}: {exc}") from exc
    unsigned = make_activations_unsigned(quantized)
    if unsigned:
        notes.append(f"{unsigned} asymmetric activation quantizer(s) written as uint8 instead of int8 (exact), which "
                     "OpenVINO runs in INT8 and compiles under its default bf16 precision on CPUs with native BF16")
    with tempfile.TemporaryDirectory(prefix="trtinfer-nncf-", dir=os.environ.get("TMPDIR")) as tmp:
        staged = Path(tmp) / "int8.onnx"
        onnx.save(quantized, str(staged))
        counts = publish_int8(staged, onnx_out, quantized, "NNCF", onnx_in)
    return {
        "tool": "nncf", "version": version, "precision": "int8", "method": method, "preset": preset,
        "activation_range_estimator": estimator or "default", "target_device": "CPU", "bias_correction": "fast",
        "calibration_images": int(len(batches) * batch), "calibration_batch": batch,
        **counts, "opset_in": opset(source), "opset_out": opset(quantized), "io_types": io_types(quantized),
        "nodes_excluded": exclude, "notes": list(dict.fromkeys(notes)),
    }
