"""The accuracy guard: reduced-precision models against the FP32 model, on the CPU.

:mod:`..logits` runs the models and compares their logits; ``AccuracyGuard`` refuses a build whose
top-1 drop exceeds its allowance, before anything is written, and :func:`guard_reduced` runs it on the
``--eval-data`` rows for every reduced precision of a build.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from trtinfer.defaults import FP16_MAX_DROP, INT8_MAX_DROP
from trtinfer.errors import AccuracyError, DataError
from trtinfer.manifest import AccuracyRecord, EvalDataRecord, read_record

from ..logits import EVAL_BATCH, Progress, compare, execution_logits, run_onnx

if TYPE_CHECKING:
    from trtinfer.calibration.calibset import EvalSet

    from ..options import BuildOptions
    from ..progress import Reporter

log = logging.getLogger(__name__)

DEFAULT_MAX_DROP = {"fp32": 0.0, "fp16": FP16_MAX_DROP, "int8": INT8_MAX_DROP}


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


def no_accuracy_check(reason: str = "no --eval-data given") -> AccuracyRecord:
    """The manifest's ``accuracy`` record when nothing was measured, saying so."""
    log.warning("no accuracy check ran (%s): reduced-precision accuracy is unmeasured", reason)
    return AccuracyRecord(checked=False, reason=reason)


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


def guard_reduced(opts: BuildOptions, report: Reporter, fp32_path: Path, precisions: list[str], outputs: dict[str, Path],
                  eval_set: EvalSet | None, target: str,
                  reference: np.ndarray | None = None) -> dict[str, AccuracyRecord]:
    """The accuracy guard on the ``--eval-data`` rows, on the target's judging execution (``reference``:
    the FP32 logits on those rows): each precision's ``accuracy`` record (FP32's too when it ran).
    Raises AccuracyError (nothing written by the caller) when it fails."""
    from trtinfer.execution import judge_execution

    if eval_set is None:
        unchecked = no_accuracy_check("no --eval-data given: pass labelled test images to measure FP16/INT8 "
                                      "accuracy against FP32")  # logs the warning once
        return {precision: unchecked for precision in precisions}
    judge = judge_execution(target)
    with report.timed(f"accuracy guard on {len(eval_set)} images ({judge.name}, CPU)"), \
            report.tracker("evaluating") as update:
        results = evaluate_precisions(fp32_path, {p: outputs[p] for p in precisions}, eval_set.x, eval_set.labels,
                                      max_drop=opts.max_accuracy_drop, allow=opts.allow_accuracy_drop,
                                      progress=lambda label: update, execution=judge, reference=reference)
    rows = read_record(EvalDataRecord, eval_set.summary(), name="accuracy.eval")
    records = {"fp32": AccuracyRecord(**results["fp32"])}
    for precision in precisions:
        r = results[precision]
        records[precision] = AccuracyRecord(**r, execution=judge.name, eval=rows)
        verdict = "passed" if r["passed"] else "FAILED, kept by --allow-accuracy-drop"
        report.info(f"{precision}: top-1 {r['top1']:.2%} vs FP32 {r['top1_reference']:.2%} "
                            f"(drop {r['top1_drop_points']:.2f} points, limit {r['max_drop_points']:.2f}), "
                            f"agreement {r['top1_agreement']:.2%}, max |diff| {r['max_abs_diff']:.3g}: {verdict}")
    return records
