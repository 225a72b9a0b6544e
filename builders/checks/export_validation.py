"""Check that an exported ONNX model computes what the PyTorch model computes, with ONNX Runtime.

Pass rule: max |logit difference| <= atol + rtol * max |reference logit|, and every top-1
disagreement is a near-tie (reference margin between the top two below twice that tolerance).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from trtinfer import defaults
from trtinfer.errors import ValidationError
from trtinfer.manifest import ExportComparison, ValidationRecord

RANDOM_BATCH = 8
BATCH_SIZE = 64


def run_batched(fn: Callable[[np.ndarray], np.ndarray], x: np.ndarray, batch_size: int = BATCH_SIZE,
                progress: Callable[[int, int], None] | None = None) -> np.ndarray:
    """``fn`` over ``x`` in batches; ``progress(done, total)`` after each."""
    outs = []
    for start in range(0, len(x), batch_size):
        outs.append(fn(x[start:start + batch_size]))
        if progress:
            progress(min(start + batch_size, len(x)), len(x))
    return np.concatenate(outs) if outs else np.zeros((0,), np.float32)


def torch_runner(model: torch.nn.Module) -> Callable[[np.ndarray], np.ndarray]:
    def run(batch: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return model(torch.from_numpy(batch)).float().numpy()
    return run


@dataclass
class Comparison:
    samples: int
    max_abs_diff: float
    mean_abs_diff: float
    top1_agreement: float
    tolerance: float
    non_tie_disagreements: int
    reference_accuracy: float | None = None
    candidate_accuracy: float | None = None

    @property
    def passed(self) -> bool:
        return self.max_abs_diff <= self.tolerance and self.non_tie_disagreements == 0

    def record(self) -> ExportComparison:
        """The manifest's record of this comparison (floats rounded to 8 places)."""
        def r(v: float | None) -> float | None:
            return None if v is None else round(v, 8)

        return ExportComparison(
            samples=self.samples, max_abs_diff=r(self.max_abs_diff), mean_abs_diff=r(self.mean_abs_diff),
            top1_agreement=r(self.top1_agreement), tolerance=r(self.tolerance),
            non_tie_disagreements=self.non_tie_disagreements, reference_accuracy=r(self.reference_accuracy),
            candidate_accuracy=r(self.candidate_accuracy), passed=self.passed)


def compare_logits(ref: np.ndarray, got: np.ndarray, labels: np.ndarray | None = None,
                   atol: float = defaults.ATOL, rtol: float = defaults.RTOL) -> Comparison:
    if ref.shape != got.shape:
        raise ValidationError(f"output shapes differ: PyTorch {ref.shape} vs ONNX {got.shape}")
    diff = np.abs(ref.astype(np.float64) - got.astype(np.float64))
    tol = atol + rtol * float(np.abs(ref).max(initial=0.0))
    ref_top, got_top = ref.argmax(1), got.argmax(1)
    sorted_ref = np.sort(ref, axis=1)
    margin = sorted_ref[:, -1] - sorted_ref[:, -2] if ref.shape[1] > 1 else np.full(len(ref), np.inf)
    disagree = ref_top != got_top
    non_tie = int(np.sum(disagree & (margin > 2 * max(tol, float(diff.max(initial=0.0))))))
    cmp = Comparison(samples=len(ref), max_abs_diff=float(diff.max(initial=0.0)), mean_abs_diff=float(diff.mean()) if diff.size else 0.0,
                     top1_agreement=float(np.mean(~disagree)) if len(ref) else 1.0, tolerance=tol,
                     non_tie_disagreements=non_tie)
    if labels is not None and len(labels):
        cmp.reference_accuracy = float(np.mean(ref_top == labels))
        cmp.candidate_accuracy = float(np.mean(got_top == labels))
    return cmp


def validate_export(model: torch.nn.Module, onnx_path: str | Path, input_size: int,
                    eval_x: np.ndarray | None = None, eval_y: np.ndarray | None = None,
                    atol: float = defaults.ATOL, rtol: float = defaults.RTOL,
                    progress: Callable[[int, int], None] | None = None, seed: int = 0) -> ValidationRecord:
    """Compare PyTorch and ONNX Runtime on random inputs and, if given, real evaluation images; the
    manifest's ``validation`` record (its ``export`` added by the caller). Raises ValidationError on a mismatch.

    Both sets go through each side in one pass (one ONNX Runtime session, the accuracy guard's).
    ``progress(done, total)`` counts PyTorch rows, then ONNX Runtime rows.
    """
    from ..logits import run_onnx

    rng = np.random.default_rng(seed)
    x_rand = rng.standard_normal((RANDOM_BATCH, 3, input_size, input_size), dtype=np.float32)
    has_eval = eval_x is not None and len(eval_x) > 0
    x_all = np.concatenate([x_rand, eval_x]) if has_eval else x_rand
    n = len(x_all)
    report = progress or (lambda done, total: None)
    ref = run_batched(torch_runner(model), x_all, progress=lambda done, _: report(done, 2 * n))
    got = run_onnx(onnx_path, x_all, BATCH_SIZE, progress=lambda done, _: report(n + done, 2 * n))
    checks = {"random": compare_logits(ref[:RANDOM_BATCH], got[:RANDOM_BATCH], atol=atol, rtol=rtol).record()}
    if has_eval:
        checks["eval"] = compare_logits(ref[RANDOM_BATCH:], got[RANDOM_BATCH:], eval_y, atol=atol, rtol=rtol).record()
    failed = [(name, c) for name, c in checks.items() if not c.passed]
    if failed:
        bad, c = failed[0]
        raise ValidationError(
            f"ONNX output differs from PyTorch on {bad} inputs: max |diff| {c.max_abs_diff:.3g} "
            f"(tolerance {c.tolerance:.3g}), top-1 agreement {c.top1_agreement:.2%}",
            hint="report this model to trtinfer; --atol raises the tolerance if the difference is expected")
    return ValidationRecord(random=checks["random"], eval=checks.get("eval"), passed=True, atol=atol, rtol=rtol)
