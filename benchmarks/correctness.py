"""Correctness before speed: every case is checked against eager PyTorch FP32 before it is timed.

An FP32 case is held to the build's export validation (logit tolerance, near-tie disagreements only);
a reduced-precision one, with ``--eval-data``, to the build's accuracy guard plus the sampling noise of
the difference, and without it to a sanity floor of top-1 agreement. A case that fails is reported as
computing something else and never timed.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from trtinfer import defaults
from trtinfer.execution import CPU_EXECUTIONS

from . import cases as C
from .plan import Inputs

LOSSY_EXECUTIONS = {e.name for e in CPU_EXECUTIONS if e.lossy}  # judged by the FP16 allowance, not export tolerance
#: Without labelled data, a reduced-precision case must still agree with eager FP32 on this share
#: of the check rows: a sanity floor that catches a backend computing something else, not an
#: accuracy figure (that needs --eval-data, and then the build's guard allowance applies).
SANITY_AGREEMENT = 0.90


@dataclass
class Reference:
    """Eager FP32's logits on the check rows and (with ``--eval-data``) on the eval images, and its top-1."""

    check: np.ndarray
    eval: np.ndarray | None = None
    eval_top1: float = math.nan


def sampling_noise_points(disagreement: float, rows: int) -> float:
    """Twice the standard error, in points, of the top-1 difference between two models that disagree
    on a share ``disagreement`` of ``rows`` paired images (at least one image's worth): a drop
    within it may be the draw of images, not the backend."""
    if rows <= 0:
        return math.inf
    share = max(disagreement, 1.0 / rows)
    return 200.0 * math.sqrt(share / rows)


def run_rows(case: C.Case, x: np.ndarray, batch: int) -> np.ndarray:
    """``case`` over all rows of ``x`` in batches of ``batch``; the last one padded to full size, so
    a compiled case sees only the batch sizes it is timed at."""
    outs = []
    for start in range(0, len(x), batch):
        chunk = x[start:start + batch]
        real = len(chunk)
        if real < batch:
            chunk = np.concatenate([chunk, np.repeat(chunk[-1:], batch - real, axis=0)])
        outs.append(np.asarray(case.infer(np.ascontiguousarray(chunk)), dtype=np.float32)[:real])
    return np.concatenate(outs)


def eager_reference(eager: C.Case, inputs: Inputs, batch: int, say: Callable[[str], None]) -> Reference:
    reference = Reference(run_rows(eager, inputs.check, batch))
    if inputs.eval_x is not None:
        reference.eval = run_rows(eager, inputs.eval_x, batch)
        reference.eval_top1 = float((reference.eval.argmax(1) == inputs.eval_y).mean())
        say(f"eager FP32 top-1 {reference.eval_top1:.2%} on {len(inputs.eval_x)} images from {inputs.eval_source}")
    return reference


def check_case(case: C.Case, reference: Reference, inputs: Inputs, batch: int, build: dict[str, Any]) -> dict[str, Any]:
    """Run the check rows (and the eval set); a dict with ``passed`` and the figures. ``build`` holds the
    BuildOptions fields given (tolerances and the accuracy allowance)."""
    from trtinfer.builders.checks.export_validation import compare_logits

    got = run_rows(case, inputs.check, batch)
    finite = bool(np.isfinite(got).all())
    result: dict[str, Any] = {"rows": len(got), "on": inputs.check_source, "finite": finite}
    ref = reference.check
    if got.shape != ref.shape:
        return {**result, "passed": False, "why": f"output shape {got.shape} differs from eager's {ref.shape}"}
    agreement = float((got.argmax(1) == ref.argmax(1)).mean())
    result["top1_agreement"] = agreement
    result["max_abs_diff"] = float(np.abs(got - ref).max()) if finite else None
    if not finite:
        return {**result, "passed": False, "why": "NaN or Inf in the outputs"}
    precision = case.info.precision
    judged_as = precision
    if precision == "fp32" and (case.info.options.get("chosen") in LOSSY_EXECUTIONS
                                or case.info.options.get("single_rows") in LOSSY_EXECUTIONS
                                or case.info.options.get("inference_precision") in ("bf16", "f16")):
        judged_as = "fp16"  # BF16 arithmetic on an FP32 model: the build checked it with the FP16 allowance
    if judged_as == "fp32":
        atol = defaults.ATOL if build.get("atol") is None else build["atol"]  # 0 is a tolerance too
        rtol = defaults.RTOL if build.get("rtol") is None else build["rtol"]
        cmp = compare_logits(ref, got, atol=atol, rtol=rtol)
        result.update(rule=f"the build's export validation: max |diff| <= {cmp.tolerance:.3g}, near-tie "
                           "disagreements only", tolerance=cmp.tolerance)
        if not cmp.passed:
            return {**result, "passed": False,
                    "why": f"max |logit diff| {cmp.max_abs_diff:.3g} vs eager FP32 (tolerance {cmp.tolerance:.3g}), "
                           f"top-1 agreement {agreement:.1%} on {inputs.check_source}"}
    if inputs.eval_x is not None:
        why = _check_eval(case, reference, inputs, batch, judged_as, build.get("max_accuracy_drop"), result)
        if why:
            return {**result, "passed": False, "why": why}
    elif judged_as != "fp32":
        result["rule"] = f"sanity floor: top-1 agreement >= {SANITY_AGREEMENT:.0%} (no --eval-data)"
        if agreement < SANITY_AGREEMENT:
            return {**result, "passed": False,
                    "why": f"top-1 agrees with eager FP32 on only {agreement:.1%} of {inputs.check_source}"}
    return {**result, "passed": True}


def _check_eval(case: C.Case, reference: Reference, inputs: Inputs, batch: int, judged_as: str,
                max_drop: float | None, result: dict[str, Any]) -> str | None:
    """Top-1 on the eval images into ``result``; for a reduced precision, why it fails the build's
    accuracy guard (None when it passes)."""
    from trtinfer.builders.checks.accuracy_guard import DEFAULT_MAX_DROP

    assert inputs.eval_x is not None and reference.eval is not None
    logits = run_rows(case, inputs.eval_x, batch)
    top1 = float((logits.argmax(1) == inputs.eval_y).mean())
    ref_top1 = reference.eval_top1
    drop = 100.0 * (ref_top1 - top1)
    result.update(eval_top1=top1, eval_drop_points=drop,
                  eval_agreement=float((logits.argmax(1) == reference.eval.argmax(1)).mean()))
    if judged_as == "fp32":
        return None
    limit = DEFAULT_MAX_DROP[judged_as] if max_drop is None else float(max_drop)
    noise = sampling_noise_points(1.0 - result["eval_agreement"], len(logits))
    result.update(rule=f"the build's accuracy guard: top-1 drop <= {limit} points vs FP32, plus twice the "
                       f"sampling error of the difference on {len(logits)} images ({noise:.2f} points)",
                  limit=limit, noise_points=noise, over_allowance=drop > limit + 1e-9)
    if not np.isfinite(logits).all() or drop > limit + noise + 1e-9:
        return (f"top-1 {top1:.2%} vs eager {ref_top1:.2%}: a drop of {drop:.2f} points, beyond "
                f"the {limit} the build's {judged_as} guard allows by more than sampling noise ({noise:.2f})")
    return None
