"""Accuracy of each way this machine can run an artifact, measured at build time for the runtime's choice.

``trtinfer.load(backend="auto")`` picks the fastest execution by timing, but only among those the
manifest does not rule out: an execution that failed its check here is never picked, and a lossy
one (BF16) is picked only after it passed. BF16 is held to the FP16 allowance (it has fewer
mantissa bits than FP16, the same exponent range as FP32).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from trtinfer.execution import CPU_EXECUTIONS, executions_checked_at_build
from trtinfer.manifest import ExecutionRecord

from ..logits import compare, execution_logits
from .accuracy_guard import AccuracyGuard

BF16_ALLOWANCE_PRECISION = "fp16"  # BF16 runs are judged by the FP16 allowance


def check_executions(precision: str, model_path: Path, reference: np.ndarray, x: np.ndarray, labels: np.ndarray,
                     max_drop: float | None = None, guard: AccuracyGuard | None = None) -> dict[str, ExecutionRecord]:
    """{execution name: compare() figures + limit + passed, or why it was skipped} for ``precision``'s artifact
    (the manifest's ``accuracy.executions``)."""
    guard = guard or AccuracyGuard()
    checked = {e.name for e in executions_checked_at_build(precision)}
    results: dict[str, ExecutionRecord] = {}
    for execution in CPU_EXECUTIONS:
        if execution.name not in checked:
            why = execution.unavailable_reason()
            if why is not None and (execution.lossy or precision != "fp32"):
                results[execution.name] = ExecutionRecord(skipped=why)
            continue
        figures = compare(reference, execution_logits(execution, model_path, x), labels)
        limit = guard.limit(BF16_ALLOWANCE_PRECISION if execution.lossy else precision,
                            None if execution.lossy else max_drop)
        if execution.lossy and precision != "fp32":
            limit = max(limit, guard.limit(precision, max_drop))
        results[execution.name] = ExecutionRecord(**figures, max_drop_points=limit, passed=guard.passes(figures, limit))
    return results


def describe(precision: str, results: dict[str, ExecutionRecord]) -> list[str]:
    lines = []
    for name, r in results.items():
        if r.skipped is not None:
            lines.append(f"{precision} on {name}: not checked ({r.skipped})")
        else:
            lines.append(f"{precision} on {name}: top-1 {r.top1:.2%} (drop {r.top1_drop_points:.2f}, limit "
                         f"{r.max_drop_points:.2f}): {'passed' if r.passed else 'FAILED: load() will not pick it'}")
    return lines
