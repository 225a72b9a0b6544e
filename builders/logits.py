"""Logits of an ONNX model on the CPU (ONNX Runtime or OpenVINO), batched, and the figures comparing them.

What every stage that measures a model runs: the export check, the INT8 method choice, the accuracy
guard, the FP16 overflow scan and the engine's evaluation. ``compare`` gives the figures recorded in
``manifest.json`` (top-1 of both, top-1 agreement, max/mean abs logit difference).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from trtinfer.errors import DataError, ValidationError

EVAL_BATCH = 64
Progress = Callable[[int, int], None]  # progress(done, total)


def cpu_session(path: str | Path, threads: int | None = None):
    """An ONNX Runtime CPU session, quiet; a model it cannot load is a ValidationError."""
    from trtinfer.runtime.backends.onnxruntime import loader

    loader.import_onnxruntime("the accuracy check runs ONNX Runtime", hint="pip install 'trtinfer[build]'")
    try:
        return loader.session(path, threads=threads)
    except Exception as exc:  # ORT raises its own exception types
        raise ValidationError(f"ONNX Runtime cannot load {path}: {exc}", hint="rebuild the model") from exc


def run_onnx(path: str | Path, x: np.ndarray, batch_size: int = EVAL_BATCH, progress: Progress | None = None,
             threads: int | None = None) -> np.ndarray:
    """Logits (float32, N x classes) of the model at ``path`` for preprocessed inputs ``x`` (CPU)."""
    session = cpu_session(path, threads)
    inputs, outputs = session.get_inputs(), session.get_outputs()
    if len(inputs) != 1:
        raise ValidationError(f"{path} has {len(inputs)} inputs; the accuracy check runs single-input classifiers")
    name = inputs[0].name
    want = inputs[0].shape[1:]
    if len(want) != x.ndim - 1 or any(isinstance(w, int) and w != g for w, g in zip(want, x.shape[1:])):
        raise DataError(f"evaluation tensors are {list(x.shape[1:])} but {Path(path).name} takes {want}",
                        hint="evaluate with the model's preprocessing (input size)")
    batch_dim = inputs[0].shape[0]
    if isinstance(batch_dim, int) and batch_dim > 0:
        batch_size = batch_dim  # a static batch: run exactly that many (padding the last one)
    chunks = []
    for start in range(0, len(x), batch_size):
        batch = np.ascontiguousarray(x[start:start + batch_size], dtype=np.float32)
        real = len(batch)
        if isinstance(batch_dim, int) and batch_dim > 0 and real < batch_dim:
            batch = np.concatenate([batch, np.zeros((batch_dim - real, *batch.shape[1:]), np.float32)])
        out = session.run([outputs[0].name], {name: batch})[0]
        chunks.append(np.asarray(out[:real], dtype=np.float32))
        if progress is not None:
            progress(start + real, len(x))
    if not chunks:
        raise DataError("the evaluation set is empty", hint="pass labeled test images with --eval-data")
    logits = np.concatenate(chunks).reshape(len(x), -1)
    return logits


def run_openvino(path: str | Path, x: np.ndarray, precision: str = "f32", batch_size: int = EVAL_BATCH,
                 progress: Progress | None = None) -> np.ndarray:
    """Logits of the ONNX model at ``path`` run by OpenVINO on the CPU at ``precision`` (f32 or bf16)."""
    from trtinfer.runtime.backends.openvino.loader import compiled_model, import_openvino

    import_openvino()
    try:
        compiled = compiled_model(path, threads=0, precision=precision)
    except Exception as exc:  # OpenVINO raises its own RuntimeError subclasses
        raise ValidationError(f"OpenVINO cannot load {path}: {exc}", hint="rebuild the model") from exc
    request = compiled.create_infer_request()
    chunks = []
    for start in range(0, len(x), batch_size):
        batch = np.ascontiguousarray(x[start:start + batch_size], dtype=np.float32)
        chunks.append(np.array(request.infer({0: batch})[compiled.outputs[0]], dtype=np.float32))
        if progress is not None:
            progress(start + len(batch), len(x))
    if not chunks:
        raise DataError("the evaluation set is empty", hint="pass labeled test images with --eval-data")
    return np.concatenate(chunks).reshape(len(x), -1)


def execution_logits(execution, path: str | Path, x: np.ndarray, progress: Progress | None = None) -> np.ndarray:
    """Logits of ``path`` under a :class:`trtinfer.execution.Execution` (ONNX Runtime or OpenVINO)."""
    if execution.backend == "openvino":
        return run_openvino(path, x, execution.openvino_precision or "f32", progress=progress)
    return run_onnx(path, x, progress=progress)


def compare(reference_logits: np.ndarray, candidate_logits: np.ndarray, labels: np.ndarray) -> dict[str, Any]:
    """Top-1 of both, top-1 agreement, abs logit differences; accuracies as fractions, drop in points."""
    ref = np.asarray(reference_logits, np.float32)
    cand = np.asarray(candidate_logits, np.float32)
    labels = np.asarray(labels)
    if ref.shape != cand.shape or ref.ndim != 2:
        raise ValidationError(f"logit shapes differ: reference {ref.shape}, candidate {cand.shape}")
    if len(labels) != len(ref):
        raise DataError(f"{len(ref)} logit rows but {len(labels)} labels")
    if len(labels) and (labels.min() < 0 or labels.max() >= ref.shape[1]):
        raise DataError(f"labels run {labels.min()}..{labels.max()} but the model has {ref.shape[1]} classes",
                        hint="evaluate with data labeled for this model's classes")
    if not (np.isfinite(ref).all()):
        raise ValidationError("the FP32 reference produced NaN or Inf logits")
    finite = bool(np.isfinite(cand).all())
    ref_top, cand_top = ref.argmax(1), cand.argmax(1)
    diff = np.abs(ref - cand)
    top1_ref = float((ref_top == labels).mean())
    top1 = float((cand_top == labels).mean())
    return {
        "samples": int(len(labels)),
        "top1_reference": round(top1_ref, 6),
        "top1": round(top1, 6),
        "top1_drop_points": round(100.0 * (top1_ref - top1), 4),
        "top1_agreement": round(float((ref_top == cand_top).mean()), 6),
        "max_abs_diff": float(diff.max()) if finite else math.inf,
        "mean_abs_diff": float(diff.mean()) if finite else math.inf,
        "finite": finite,
    }
