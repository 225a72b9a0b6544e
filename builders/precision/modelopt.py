"""ModelOpt's tools: FP16 (AutoCast) and INT8 (Q/DQ), reduced precision inside the ONNX model itself.

TensorRT 11 dropped the precision builder flags and the INT8 calibrators; a strongly typed FP16
graph and explicit QuantizeLinear/DequantizeLinear nodes carry the precision instead (and are what
TensorRT 10 builds best too). Both steps run on the CPU, and ONNX Runtime's CPU provider runs their
outputs, so the accuracy guard measures them here.

Both register in :mod:`.registry` (:mod:`.tools` imports this module to find them) and return a
small dict of facts for the artifact manifest. No torch here.
"""

from __future__ import annotations

import contextlib
import io
import logging
import re
import shutil
import tempfile
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from trtinfer.errors import DataError, InternalError
from trtinfer.versions import require_package

from .onnx_graph import (CALIBRATION_BATCH, check_calibration, check_runs_on_cpu, int8_source, io_types, opset,
                         publish_int8, static_batch)
from .registry import register

log = logging.getLogger(__name__)

CALIBRATION_METHODS = ("entropy", "max")
DEFAULT_CALIBRATION_METHOD = "entropy"
AUTOCAST_REFERENCE_IMAGES = 64  # real images AutoCast runs to find tensors too large for FP16
_NOISE = (re.compile(r"Failed to get GPU count"),)  # ModelOpt logs this as an ERROR on every CPU-only host


# -- ModelOpt plumbing ------------------------------------------------------------------------

def _need_modelopt() -> str:
    return require_package("nvidia-modelopt", "FP16 and INT8 builds need NVIDIA ModelOpt (nvidia-modelopt[onnx])")


class _DropModelOpt(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not record.name.startswith("modelopt")


@contextlib.contextmanager
def _modelopt_output(notes: list[str]) -> Iterator[None]:
    """Keep ModelOpt's stdout logging, ORT calibration prints and tqdm bars off the terminal.

    ModelOpt (re)configures its logger with a stdout handler and propagation; its warnings and
    errors are collected into ``notes`` (and logged at INFO here) instead.
    """
    import modelopt.onnx.logging_config  # noqa: F401  configures its handlers once, on import

    names = ("modelopt.onnx", "modelopt.onnx.autocast")
    saved = {n: (lg.handlers[:], lg.level, lg.propagate) for n in names for lg in [logging.getLogger(n)]}
    records: list[logging.LogRecord] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    collector = Collect(level=logging.WARNING)
    for n in names:
        lg = logging.getLogger(n)
        lg.handlers = [collector]
        lg.setLevel(logging.WARNING)
        lg.propagate = False
    root_filter = _DropModelOpt()
    root_handlers = logging.getLogger().handlers[:]
    for h in root_handlers:
        h.addFilter(root_filter)
    buffer = io.StringIO()
    try:
        with contextlib.redirect_stdout(buffer), contextlib.redirect_stderr(buffer):
            yield
    finally:
        for h in root_handlers:
            h.removeFilter(root_filter)
        for n, (handlers, level, propagate) in saved.items():
            lg = logging.getLogger(n)
            lg.handlers, lg.propagate = handlers, propagate
            lg.setLevel(level)
        lines = [f"{r.levelname}: {r.getMessage()}" for r in records]
        for line in buffer.getvalue().splitlines():  # handlers ModelOpt re-created inside the call
            m = re.search(r" - (WARNING|ERROR|CRITICAL) - (?:\S+\.py - )?(.*)$", line)
            if m:
                lines.append(f"{m.group(1)}: {m.group(2)}")
        for line in dict.fromkeys(lines):
            if not any(p.search(line) for p in _NOISE):
                notes.append(line)
                log.info("modelopt: %s", line)
        log.debug("modelopt output:\n%s", buffer.getvalue())


def _write_reference_batches(calibration: np.ndarray, input_name: str, folder: Path, batch: int) -> tuple[str, int]:
    """AutoCast's reference runner takes a folder of .npz files, one batch each (a single .npz
    would be split into batches of the model's batch dimension: one image per run)."""
    folder = folder / "autocast_reference"
    folder.mkdir()
    images = np.ascontiguousarray(calibration[:AUTOCAST_REFERENCE_IMAGES], np.float32)
    starts = range(0, len(images) - batch + 1, batch)
    for i, start in enumerate(starts):
        np.savez(folder / f"batch_{i:04d}.npz", **{input_name: images[start:start + batch]})  # type: ignore[arg-type]  # numpy's stub types **kwds as its allow_pickle flag
    return str(folder), len(starts) * batch


# -- FP16 -------------------------------------------------------------------------------------

@register("modelopt-autocast", "fp16",
          description="ModelOpt AutoCast: FP16 everywhere it is safe, float32 inputs and outputs kept")
def convert_fp16(onnx_in: str | Path, onnx_out: str | Path, calibration: np.ndarray | None = None,
                 nodes_to_exclude: list[str] | None = None, op_types_to_exclude: list[str] | None = None,
                 data_max: float = 512.0) -> dict[str, Any]:
    """FP32 ONNX -> strongly typed mixed FP16 ONNX with float32 inputs/outputs (``keep_io_types``).

    AutoCast keeps in FP32 the nodes whose activations exceed ``data_max`` (FP16 rounding grows with
    magnitude) or whose initializers do not fit FP16; with ``calibration`` (preprocessed images) it
    measures activations on real inputs instead of random ones.
    """
    version = _need_modelopt()
    import onnx

    onnx_in, onnx_out = Path(onnx_in), Path(onnx_out)
    source = onnx.load(str(onnx_in), load_external_data=False)
    notes: list[str] = []
    with tempfile.TemporaryDirectory(prefix="trtinfer-fp16-") as tmp:
        reference, reference_images = None, 0
        if calibration is not None:
            check_calibration(calibration, source)
            batch = static_batch(source) or min(CALIBRATION_BATCH, len(calibration))
            if len(calibration) >= batch:
                reference, reference_images = _write_reference_batches(
                    calibration, source.graph.input[0].name, Path(tmp), batch)
        with _modelopt_output(notes):
            from modelopt.onnx.autocast import convert_to_mixed_precision

            try:
                model = convert_to_mixed_precision(
                    str(onnx_in), low_precision_type="fp16", keep_io_types=True, calibration_data=reference,
                    nodes_to_exclude=nodes_to_exclude, op_types_to_exclude=op_types_to_exclude,
                    data_max=data_max, providers=["cpu"])
            except Exception as exc:
                raise InternalError(f"ModelOpt AutoCast failed on {onnx_in}: {exc}") from exc
        staged = Path(tmp) / "model.onnx"
        onnx.save(model, str(staged))
        check_runs_on_cpu(staged, "FP16")
        tensor_types = io_types(model)
        if any(t != "float32" for t in [*tensor_types["inputs"].values(), *tensor_types["outputs"].values()]):
            raise InternalError(f"AutoCast changed the model's input/output types: {tensor_types}")
        onnx_out.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(staged), str(onnx_out))
    counts = _fp16_counts(model)
    return {
        "tool": "modelopt.onnx.autocast", "version": version, "precision": "fp16",
        "keep_io_types": True, "data_max": data_max,
        "reference_data": f"{reference_images} calibration images" if reference_images else "random inputs in [-1, 1]",
        **counts, "opset_in": opset(source), "opset_out": opset(model), "io_types": tensor_types,
        "nodes_excluded": list(nodes_to_exclude or []), "op_types_excluded": list(op_types_to_exclude or []),
        "notes": notes,
    }


def _fp16_counts(model) -> dict[str, Any]:
    """How many compute nodes run in FP16 vs FP32 (Cast nodes counted apart)."""
    import onnx

    inferred = onnx.shape_inference.infer_shapes(model)
    types = {vi.name: vi.type.tensor_type.elem_type
             for vi in [*inferred.graph.input, *inferred.graph.output, *inferred.graph.value_info]}
    fp16: Counter[str] = Counter()
    fp32: Counter[str] = Counter()
    casts = 0
    for node in model.graph.node:
        if node.op_type == "Cast":
            casts += 1
            continue
        elem = types.get(node.output[0]) if node.output else None
        if elem == onnx.TensorProto.FLOAT16:
            fp16[node.op_type] += 1
        elif elem == onnx.TensorProto.FLOAT:
            fp32[node.op_type] += 1
    return {"nodes_fp16": sum(fp16.values()), "nodes_fp32": sum(fp32.values()), "cast_nodes": casts,
            "fp32_op_types": dict(sorted(fp32.items()))}


# -- INT8 -------------------------------------------------------------------------------------

@register("modelopt-int8", "int8", needs_calibration=True, methods=CALIBRATION_METHODS,
          description="ModelOpt ONNX INT8: per-channel weights, calibrated activations, explicit Q/DQ")
def quantize_int8(onnx_in: str | Path, onnx_out: str | Path, calibration: np.ndarray | None = None,
                  method: str = DEFAULT_CALIBRATION_METHOD, nodes_to_exclude: list[str] | None = None,
                  op_types_to_exclude: list[str] | None = None, keep_first_layer: bool = False,
                  batch_size: int = CALIBRATION_BATCH) -> dict[str, Any]:
    """FP32 ONNX -> INT8 Q/DQ ONNX calibrated on ``calibration`` (float32 NCHW, preprocessed).

    ModelOpt quantizes Conv, Gemm/MatMul, pooling, Add and the like where TensorRT fuses them
    (weights per channel, activations per tensor, symmetric); everything else - including the
    final classifier layer, which ModelOpt skips - stays in FP32 (``high_precision_dtype="fp32"``).
    ``keep_first_layer`` also leaves the first Conv (the image-facing layer) unquantized.
    """
    version = _need_modelopt()
    onnx_in, onnx_out = Path(onnx_in), Path(onnx_out)
    source, input_name, calibration = int8_source(onnx_in, calibration, method, CALIBRATION_METHODS)
    import onnx

    exclude = list(nodes_to_exclude or [])
    if keep_first_layer:
        first = _first_conv(source)
        if first:
            exclude.append(first)
    patterns = [re.escape(n) + "$" for n in exclude]  # ModelOpt re.match()es patterns; ours are exact names
    batch = static_batch(source) or max(1, min(batch_size, len(calibration)))
    if len(calibration) < batch:
        raise DataError(f"{len(calibration)} calibration images but the model's batch size is fixed at {batch}",
                        hint=f"pass at least {batch} calibration images, or export with a dynamic batch")
    shape = "x".join(str(d) for d in (batch, *calibration.shape[1:]))
    notes: list[str] = []
    with tempfile.TemporaryDirectory(prefix="trtinfer-int8-") as tmp:
        # ModelOpt writes intermediate files beside its input: give it a private copy.
        work_in = Path(tmp) / "fp32.onnx"
        shutil.copyfile(onnx_in, work_in)
        staged = Path(tmp) / "int8.onnx"
        with _modelopt_output(notes):
            from modelopt.onnx.quantization import quantize

            try:
                quantize(str(work_in), quantize_mode="int8", calibration_data=np.ascontiguousarray(calibration),
                         calibration_method=method, calibration_shapes=f"{input_name}:{shape}",
                         calibration_eps=["cpu"], high_precision_dtype="fp32", output_path=str(staged),
                         nodes_to_exclude=patterns or None, op_types_to_exclude=op_types_to_exclude,
                         log_level="WARNING")
            except Exception as exc:  # ModelOpt and ORT raise assorted types
                raise InternalError(f"ModelOpt INT8 quantization failed on {onnx_in}: {exc}") from exc
        if not staged.is_file():
            raise InternalError(f"ModelOpt INT8 quantization wrote no model for {onnx_in}")
        model = onnx.load(str(staged))
        counts = publish_int8(staged, onnx_out, model, "ModelOpt", onnx_in)
    return {
        "tool": "modelopt.onnx.quantization", "version": version, "precision": "int8",
        "method": method, "calibration_images": int(len(calibration)), "calibration_batch": batch,
        "weights": "int8 per-channel symmetric", "activations": "int8 per-tensor symmetric",
        "high_precision": "fp32", **counts, "opset_in": opset(source), "opset_out": opset(model),
        "io_types": io_types(model), "nodes_excluded": exclude, "op_types_excluded": list(op_types_to_exclude or []),
        "notes": notes,
    }


def _first_conv(model) -> str | None:
    return next((n.name for n in model.graph.node if n.op_type == "Conv"), None)


__all__ = ["convert_fp16", "quantize_int8", "CALIBRATION_METHODS", "DEFAULT_CALIBRATION_METHOD"]
