"""INT8 that keeps its accuracy by itself: the calibration method chosen by measurement, then, if
the drop is still too large, the most sensitive layers kept in float.

Both choices are judged on a *selection slice*: labelled rows of the calibration data's train
split that took no part in calibration. The ``--eval-data`` rows never take part in a choice; they
stay the accuracy guard's and the report's own, so the figure the guard records is an honest
estimate and not the best of several tries on the same rows.

Why choose at all: on a briefly trained MobileNetV2 the better of ModelOpt's two methods changes
with the seed (a coin toss), and NNCF's presets differ by up to a point of top-1 agreement on
depthwise models. Trying each costs one quantization (seconds for these models).

The fallback ranks the quantized compute layers by how much keeping each one alone in float
brings the logits back toward FP32 (mean squared error on part of the slice) per share of the
model's multiply-accumulates it holds, so cheap layers that matter (the classifier, 1x1 shortcuts,
the image-facing convolution) go first and INT8 keeps its speed; then it keeps the top-ranked
layers in float, more at each step, until the slice's top-1 drop is within the allowance
(``--max-accuracy-drop``) or a quarter of the layers are excluded.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from trtinfer.errors import ValidationError
from trtinfer.manifest import (ConversionRecord, FallbackRecord, FallbackStepRecord, Int8ChoiceRecord, LayerRankRecord,
                               MethodTrialRecord, SelectionSliceRecord, read_record)

from .onnx_graph import COMPUTE_OPS
from .registry import PrecisionTool

log = logging.getLogger(__name__)

SELECTION_SAMPLES = 2000  # rows of the train split held out of calibration to judge methods and the fallback
SENSITIVITY_SAMPLES = 256  # of those, rows used to rank layers (one quantization per layer)
MAX_FALLBACK_FRACTION = 0.25  # at most this share of the quantized layers is kept in float
MIN_COST_SHARE = 0.005  # a layer's compute share is floored here when ranking, so a tiny layer's gain is not divided by ~0
#: A drop measured on a few thousand rows is noisy: its standard error is about 100*sqrt(d)/n
#: points for d rows on which the two models disagree. The fallback aims below the allowance by
#: this many standard errors. Without the margin, a briefly trained MobileNetV2 measured a drop of
#: -0.40 points on 1,000 slice rows (no fallback) and then +0.59 on the 846 test rows (guard failed).
DROP_MARGIN_SE = 1.0

Logits = Callable[[Path, np.ndarray], np.ndarray]
Progress = Callable[[int, int], None]
#: Whether the target's runtime runs a model: None when it does, else why not (:mod:`.runs_check`).
Runs = Callable[[Path], "str | None"]


@dataclass
class Trial:
    """One quantization of the FP32 model, judged on the selection slice."""

    method: str
    excluded: tuple[str, ...]
    path: Path
    facts: dict[str, Any]
    agreement: float  # top-1 agreement with FP32, fraction
    top1: float
    drop_points: float  # FP32 top-1 minus this top-1 on the slice, in points
    mse: float  # mean squared logit error against FP32
    seconds: float
    drop_se: float = 0.0  # standard error of drop_points (paired, from the disagreeing rows)

    @property
    def drop_bound(self) -> float:
        """The drop plus :data:`DROP_MARGIN_SE` standard errors: what the fallback holds to the allowance."""
        return self.drop_points + DROP_MARGIN_SE * self.drop_se

    def summary(self) -> MethodTrialRecord:
        return MethodTrialRecord(method=self.method, excluded=len(self.excluded), top1_agreement=round(self.agreement, 6),
                                 top1=round(self.top1, 6), top1_drop_points=round(self.drop_points, 4),
                                 drop_se_points=round(self.drop_se, 4), logit_mse=round(self.mse, 6),
                                 seconds=round(self.seconds, 2))


@dataclass
class Selection:
    """The held-out slice and the FP32 model's answers on it."""

    x: np.ndarray
    labels: np.ndarray
    source: str
    reference: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), np.float32))

    @property
    def reference_top1(self) -> float:
        return float((self.reference.argmax(1) == self.labels).mean())


class Int8Chooser:
    """Quantize with ``tool`` under each method (and exclusions), judged by ``logits`` on the slice."""

    def __init__(self, tool: PrecisionTool, fp32_path: Path, calibration: np.ndarray, selection: Selection,
                 logits: Logits, workdir: Path) -> None:
        self.tool, self.fp32_path, self.calibration = tool, fp32_path, calibration
        self.selection, self.logits, self.workdir = selection, logits, workdir
        self._count = 0
        if selection.reference.size == 0:
            selection.reference = logits(fp32_path, selection.x)

    def trial(self, method: str, excluded: tuple[str, ...] = (), rows: int | None = None) -> Trial:
        self._count += 1
        path = self.workdir / f"int8-trial-{self._count}.onnx"
        start = time.perf_counter()
        facts = self.tool.run(self.fp32_path, path, calibration=self.calibration, method=method,
                              nodes_to_exclude=list(excluded))
        x, ref, y = self.selection.x, self.selection.reference, self.selection.labels
        if rows is not None:
            x, ref, y = x[:rows], ref[:rows], y[:rows]
        out = self.logits(path, x)
        right, ref_right = out.argmax(1) == y, ref.argmax(1) == y
        top1 = float(right.mean())
        discordant = int((right != ref_right).sum())
        return Trial(method=method, excluded=tuple(excluded), path=path, facts=facts,
                     agreement=float((out.argmax(1) == ref.argmax(1)).mean()),
                     top1=top1, drop_points=100.0 * (float(ref_right.mean()) - top1),
                     mse=float(np.mean((out - ref) ** 2)), seconds=time.perf_counter() - start,
                     drop_se=100.0 * discordant ** 0.5 / max(1, len(y)))

    def choose_method(self, methods: tuple[str, ...], progress: Progress | None = None,
                      max_drop: float | None = None, runs: Runs | None = None) -> tuple[Trial, list[Trial], list[str]]:
        """Every method once; the best by :func:`pick_method` among those whose slice drop is within
        ``max_drop`` (with the margin), else among all of them.

        Preferring a method that needs no fallback keeps every layer in INT8: on ResNet-18 NNCF's
        ``mixed`` preset met the allowance at 97.35 % agreement where ``performance`` (97.50 %)
        needed two layers in float, which cost 21 % of the INT8 throughput.
        """
        trials = []
        for i, method in enumerate(methods):
            trials.append(self.trial(method))
            if progress:
                progress(i + 1, len(methods))
            log.info("int8 method %s: agreement %.4f, drop %.2f points", method, trials[-1].agreement,
                     trials[-1].drop_points)
        within = [t for t in trials if max_drop is None or t.drop_bound <= max_drop + 1e-9]
        # The best that the target's runtime really runs (``runs``: None when it does): within the allowance first.
        refused: list[str] = []
        for pool in ([within, [t for t in trials if t not in within]] if within else [trials]):
            while pool:
                best = pick_method(pool)
                failure = runs(best.path) if runs is not None else None
                if failure is None:
                    return best, trials, refused
                refused.append(f"{best.method}: {failure}")
                log.info("int8 method %s refused: %s", best.method, failure)
                pool.remove(best)
        raise ValidationError(f"no INT8 model of {self.tool.name} runs on the target's runtime: " + "; ".join(refused),
                              hint="build fp32/fp16 for this target, or report the model")

    def quantized_layers(self, trial: Trial) -> list[str]:
        """Names of compute nodes that read a dequantized input in ``trial``'s model (graph order)."""
        import onnx

        model = onnx.load(str(trial.path), load_external_data=False)
        producers = {out: node.op_type for node in model.graph.node for out in node.output}
        return [n.name for n in model.graph.node if n.op_type in COMPUTE_OPS and n.name
                and any(producers.get(i) == "DequantizeLinear" for i in n.input)]

    def fallback(self, best: Trial, max_drop: float, progress: Progress | None = None) -> tuple[Trial, FallbackRecord]:
        """Keep the most sensitive layers (per unit of compute) in float until the slice's drop is
        within ``max_drop``."""
        layers = self.quantized_layers(best)
        macs = layer_macs(self.fp32_path, self.selection.x.shape[1:])
        total = float(sum(macs.values())) or 1.0
        share = {layer: macs.get(layer, 0) / total for layer in layers}
        budget = max(1, int(MAX_FALLBACK_FRACTION * len(layers)))
        rows = min(SENSITIVITY_SAMPLES, len(self.selection.x))
        base = self.trial(best.method, (), rows=rows)
        scores = []
        for i, layer in enumerate(layers):
            t = self.trial(best.method, (layer,), rows=rows)
            scores.append((base.mse - t.mse, layer))
            if progress:
                progress(i + 1, len(layers) + budget)
        def value(score: tuple[float, str]) -> float:
            return score[0] / max(share[score[1]], MIN_COST_SHARE)

        ordered = sorted(scores, key=lambda s: -value(s))
        ranked = [layer for gain, layer in ordered if gain > 0]
        steps: list[FallbackStepRecord] = []
        chosen = best
        count = 0
        while count < min(budget, len(ranked)):
            count = min(budget, len(ranked), count + 1 if count < 4 else count * 2)
            chosen = self.trial(best.method, tuple(ranked[:count]))
            steps.append(FallbackStepRecord(excluded=count, top1_drop_points=round(chosen.drop_points, 4),
                                            top1_agreement=round(chosen.agreement, 6)))
            if progress:
                progress(len(layers) + count, len(layers) + budget)
            if chosen.drop_bound <= max_drop + 1e-9:
                break
        info = FallbackRecord(
            ran=True, reason=f"the slice's top-1 drop {best.drop_points:.2f} points + {DROP_MARGIN_SE:g} standard "
                             f"error ({best.drop_se:.2f}) exceeded {max_drop:.2f}",
            ranked_on=f"{rows} slice rows, logit MSE recovered by keeping one layer in float, per share of the "
                      f"model's multiply-accumulates",
            quantized_layers=len(layers), budget=budget,
            ranking=tuple(LayerRankRecord(node=layer, mse_recovered=round(gain, 6), compute_share=round(share[layer], 4))
                          for gain, layer in ordered[:10]),
            steps=tuple(steps), excluded_nodes=tuple(chosen.excluded),
            float_compute_share=round(sum(share[layer] for layer in chosen.excluded), 4),
            drop_before_points=round(best.drop_points, 4), drop_after_points=round(chosen.drop_points, 4),
            drop_after_se_points=round(chosen.drop_se, 4), passed=chosen.drop_bound <= max_drop + 1e-9,
        )
        return chosen, info


def pick_method(trials: list[Trial]) -> Trial:
    """The trial with the highest top-1 agreement with FP32, where agreements within one standard error of
    the best count as a tie that goes to the method listed first (each tool lists its own default first).

    The tie rule is about speed: NNCF's ``mixed`` preset quantizes activations asymmetrically, and
    OpenVINO runs a convolution whose signed input has a zero point in f32, not INT8. On a standard-stem
    ResNet-18 ``mixed`` won by one row in 2,000 (96.5 % against 96.4 % agreement, a standard error of
    0.3 points) and its stem convolution then ran 3.6x slower than under ``performance`` (660 against
    183 us per batch of 32, OpenVINO's per-node profile on an AMX Xeon): the whole model 18 % slower
    for a difference no slice can tell from noise.
    """
    top = max(trials, key=lambda t: (t.agreement, -t.mse))
    tie = max(top.drop_se, 1e-9) / 100.0
    return next(t for t in trials if t.agreement >= top.agreement - tie)


def slice_verdict(choice: Int8ChoiceRecord, max_drop: float) -> tuple[float, bool] | None:
    """The kept INT8 model's top-1 drop on the selection slice plus :data:`DROP_MARGIN_SE` standard errors (after
    the fallback when it ran), and whether it missed ``max_drop``, by the rule the chooser applied; None when
    nothing was judged on a slice. Read from the record, for the steps after the choice."""
    fallback = choice.fallback
    if fallback is not None and fallback.ran and fallback.drop_after_points is not None:
        bound = fallback.drop_after_points + DROP_MARGIN_SE * (fallback.drop_after_se_points or 0.0)
        return bound, not fallback.passed if fallback.passed is not None else bound > max_drop + 1e-9
    kept = next((m for m in choice.methods or () if m.method == choice.method), None)
    if not choice.ran or kept is None or kept.top1_drop_points is None:
        return None
    bound = kept.top1_drop_points + DROP_MARGIN_SE * (kept.drop_se_points or 0.0)
    return bound, bound > max_drop + 1e-9


def layer_macs(onnx_path: Path, input_shape: tuple[int, ...]) -> dict[str, int]:
    """Multiply-accumulates per image of each Conv/Gemm/MatMul node (by ONNX shape inference at batch 1)."""
    import onnx

    model = onnx.load(str(onnx_path), load_external_data=False)
    dims = model.graph.input[0].type.tensor_type.shape.dim
    for dim, value in zip(dims, (1, *input_shape)):
        dim.Clear()
        dim.dim_value = int(value)
    inferred = onnx.shape_inference.infer_shapes(model)
    shapes = {vi.name: [d.dim_value for d in vi.type.tensor_type.shape.dim]
              for vi in [*inferred.graph.value_info, *inferred.graph.output, *inferred.graph.input]}
    weights = {init.name: list(init.dims) for init in model.graph.initializer}
    macs: dict[str, int] = {}
    for node in model.graph.node:
        if node.op_type not in COMPUTE_OPS or len(node.input) < 2:
            continue
        w = weights.get(node.input[1]) or shapes.get(node.input[1]) or []
        out = shapes.get(node.output[0]) or []
        if not w or not out or any(d <= 0 for d in [*w, *out]):
            continue
        if node.op_type in ("Conv", "ConvTranspose"):
            macs[node.name] = int(np.prod(out)) * int(np.prod(w[1:]))
        else:  # Gemm / MatMul: every weight used once per output row
            macs[node.name] = int(np.prod(w)) * int(np.prod(out[:-1]))
    return macs


@dataclass(frozen=True)
class Int8Result:
    """The INT8 stage's records: the tool's facts for the model written, and what was tried and why."""

    conversion: ConversionRecord
    choice: Int8ChoiceRecord


def _conversion(facts: dict[str, Any]) -> ConversionRecord:
    return read_record(ConversionRecord, facts, name="conversion")


def choose_int8(tool: PrecisionTool, fp32_path: Path, out_path: Path, calibration: np.ndarray,
                selection: Selection | None, logits: Logits, judged_on: str, workdir: Path, max_drop: float,
                method: str | None = None, fallback: bool = True,
                progress: Callable[[str], Progress | None] | None = None, runs: Runs | None = None) -> Int8Result:
    """Quantize ``fp32_path`` into ``out_path`` with the method (and exclusions) that keep accuracy.

    Without a selection slice (unlabelled calibration data) the tool's default method is used and
    nothing is chosen.
    """
    import shutil

    make = progress or (lambda label: None)
    methods = (method,) if method else (tool.methods or ("default",))
    if selection is None:
        run_method = methods[0]
        facts = tool.run(fp32_path, out_path, calibration=calibration,
                         **({"method": run_method} if run_method != "default" else {}))
        return Int8Result(_conversion(facts), Int8ChoiceRecord(
            ran=False, method=run_method, reason="no labelled held-out training rows to judge methods on"))
    chooser = Int8Chooser(tool, fp32_path, calibration, selection, logits, workdir)
    best, trials, refused = chooser.choose_method(methods, make("choosing the calibration method"), max_drop, runs)
    final = best
    if best.drop_bound > max_drop + 1e-9:
        if fallback:
            final, kept_in_float = chooser.fallback(best, max_drop, make("finding sensitive layers"))
        else:
            kept_in_float = FallbackRecord(ran=False, reason="--no-fallback")
    else:
        kept_in_float = FallbackRecord(ran=False,
                                       reason=f"the slice's top-1 drop {best.drop_points:.2f} points + "
                                              f"{DROP_MARGIN_SE:g} standard error ({best.drop_se:.2f}) is within "
                                              f"{max_drop:.2f}")
    choice = Int8ChoiceRecord(
        ran=True, judged_on=judged_on,
        slice=SelectionSliceRecord(source=selection.source, split="train", rows=int(len(selection.x)),
                                   held_out_of_calibration=True, fp32_top1=round(selection.reference_top1, 6)),
        methods=tuple(t.summary() for t in trials), method=best.method,
        why="given by --calib-method" if method else (
            "highest top-1 agreement with FP32 on the slice among the methods within the allowance"
            if best.drop_bound <= max_drop + 1e-9 else
            "highest top-1 agreement with FP32 on the slice (no method was within the allowance)"),
        fallback=kept_in_float, refused=tuple(refused) or None)
    failure = runs(final.path) if runs is not None and final is not best else None
    if failure is not None:
        raise ValidationError(f"the INT8 model with {len(kept_in_float.excluded_nodes or ())} layer(s) kept in float "
                              f"does not run on the target's runtime: {failure}",
                              hint="pass --no-fallback, or another --calib-method")
    out_path.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(final.path, out_path)
    return Int8Result(_conversion(final.facts), choice)


__all__ = ["Int8Chooser", "Int8Result", "Selection", "Trial", "choose_int8", "pick_method", "slice_verdict",
           "SELECTION_SAMPLES", "SENSITIVITY_SAMPLES", "MAX_FALLBACK_FRACTION"]
