"""The accuracy guard: reduced-precision models against the FP32 model, with ONNX Runtime on the CPU.

``run_onnx`` gives logits, ``compare`` the figures recorded in ``manifest.json`` (top-1 of both,
top-1 agreement, max/mean abs logit difference), and ``AccuracyGuard`` refuses a build whose top-1
drop exceeds its allowance, before anything is written.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from trtinfer.defaults import FP16_MAX_DROP, INT8_MAX_DROP
from trtinfer.errors import AccuracyError, BackendUnavailable, DataError, ValidationError

log = logging.getLogger(__name__)

DEFAULT_MAX_DROP = {"fp32": 0.0, "fp16": FP16_MAX_DROP, "int8": INT8_MAX_DROP}
EVAL_BATCH = 64

Progress = Callable[[int, int], None]  # progress(done, total)


def cpu_session(path: str | Path, threads: int | None = None):
    """An ONNX Runtime CPU session, quiet; a model it cannot load is a ValidationError."""
    try:
        import onnxruntime as ort
    except ImportError as exc:
        raise BackendUnavailable("the accuracy check runs ONNX Runtime", hint="pip install 'trtinfer[build]'") from exc
    options = ort.SessionOptions()
    options.log_severity_level = 3  # errors only; Q/DQ and FP16 graphs log fusion notes
    if threads:
        options.intra_op_num_threads = threads
    try:
        return ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])
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
    from trtinfer.runtime.openvino_backend import compile_config, import_openvino

    ov = import_openvino()
    try:
        core = ov.Core()
        compiled = core.compile_model(core.read_model(str(path)), "CPU", compile_config(0, precision))
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


@dataclass
class AccuracyGuard:
    """Allowed top-1 drop per precision, in percentage points on the evaluation set."""

    max_drop: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_MAX_DROP))

    def limit(self, precision: str, max_drop: float | None = None) -> float:
        if max_drop is not None:
            if max_drop < 0:
                raise DataError(f"--max-accuracy-drop must be >= 0, got {max_drop}")
            return float(max_drop)
        return float(self.max_drop.get(precision, 0.0))

    @staticmethod
    def passes(result: dict[str, Any], limit: float) -> bool:
        """Finite logits and a top-1 drop within ``limit`` points: the one rule every check applies."""
        return bool(result.get("finite", True)) and float(result["top1_drop_points"]) <= limit + 1e-9

    def check(self, result: dict[str, Any], precision: str, max_drop: float | None = None,
              allow: bool = False) -> dict[str, Any]:
        """Raise AccuracyError when the drop exceeds the limit (unless ``allow``); return the verdict.

        The verdict (``max_drop_points``, ``passed``, ``allowed``) is merged into ``result`` too, so
        the dict goes into the manifest as it is.
        """
        limit = self.limit(precision, max_drop)
        drop = float(result["top1_drop_points"])
        passed = self.passes(result, limit)
        verdict = {"max_drop_points": limit, "passed": passed, "allowed": bool(allow and not passed)}
        result.update(verdict)
        if passed:
            return verdict
        numbers = (f"{precision} top-1 {100 * result['top1']:.2f}% vs FP32 {100 * result['top1_reference']:.2f}% "
                   f"on {result['samples']} images: a drop of {drop:.2f} points, more than the {limit:.2f} allowed "
                   f"(top-1 agreement {100 * result['top1_agreement']:.2f}%, max abs logit diff "
                   f"{result['max_abs_diff']:.4g})")
        if not result.get("finite", True):
            numbers = f"{precision} model produced NaN or Inf logits; " + numbers
        if allow:
            log.warning("%s; kept because of --allow-accuracy-drop", numbers)
            return verdict
        hint = "pass --allow-accuracy-drop to keep it anyway, or a larger --max-accuracy-drop"
        if precision == "int8":
            hint += ("; more calibration images (--calib-samples) may help (the INT8 choice above says which methods "
                     "and layers were tried)")
        raise AccuracyError(numbers, hint=hint)


def no_accuracy_check(reason: str = "no --eval-data given") -> dict[str, Any]:
    """The manifest's ``accuracy`` block when nothing was measured, saying so."""
    log.warning("no accuracy check ran (%s): reduced-precision accuracy is unmeasured", reason)
    return {"checked": False, "reason": reason}


def evaluate_precisions(fp32_path: str | Path, candidates: dict[str, str | Path], x: np.ndarray, labels: np.ndarray,
                        guard: AccuracyGuard | None = None, max_drop: float | dict[str, float] | None = None,
                        allow: bool = False, batch_size: int = EVAL_BATCH,
                        progress: Callable[[str], Progress | None] | None = None,
                        execution=None, reference: np.ndarray | None = None) -> dict[str, dict[str, Any]]:
    """Evaluate FP32 and each candidate ({precision: onnx path}); check them all, then raise for any failure.

    Returns {precision: result}; FP32 gets its top-1 only. ``progress(label)`` makes a callback per run.
    ``execution``: a :class:`trtinfer.execution.Execution` that runs the candidates (default: ONNX
    Runtime); the FP32 reference always runs in ONNX Runtime, the export check's backend (``reference``:
    its logits on ``x`` when the caller has them already).
    ``max_drop``: one value for all precisions or one per precision (None: the guard's defaults).
    """
    guard = guard or AccuracyGuard()
    make = progress or (lambda label: None)
    start = time.perf_counter()
    if reference is None:
        reference = run_onnx(fp32_path, x, batch_size, make("evaluating fp32"))
    results: dict[str, dict[str, Any]] = {
        "fp32": {"checked": True, "samples": int(len(labels)),
                 "top1": round(float((reference.argmax(1) == labels).mean()), 6)}}
    failures = []
    for precision, path in candidates.items():
        logits = (run_onnx(path, x, batch_size, make(f"evaluating {precision}")) if execution is None
                  else execution_logits(execution, path, x, make(f"evaluating {precision}")))
        result = {"checked": True, **compare(reference, logits, labels)}
        limit = max_drop.get(precision) if isinstance(max_drop, dict) else max_drop
        try:
            guard.check(result, precision, limit, allow)
        except AccuracyError as exc:
            failures.append(exc)
        results[precision] = result
    log.info("accuracy check of %s took %.1f s", ", ".join(candidates), time.perf_counter() - start)
    if failures:
        if len(failures) == 1:
            raise failures[0]
        raise AccuracyError("; ".join(f.message for f in failures), hint=failures[0].hint)
    return results
