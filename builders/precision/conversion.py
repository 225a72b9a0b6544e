"""FP16 and INT8 artifacts from the shared FP32 export: the calibration data, the selection slice, the conversion.

Each step takes the build's options and its reporter, nothing of the pipeline itself; the accuracy
guard over the results is :func:`..checks.accuracy_guard.guard_reduced`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

from trtinfer.errors import DataError
from trtinfer.manifest import CalibrationRecord, ConversionRecord, Int8ChoiceRecord, read_record

from ..logits import execution_logits
from .int8_choice import SELECTION_SAMPLES, Selection, choose_int8
from .quantizer_for_target import int8_tool
from .tools import reduce_precision

if TYPE_CHECKING:
    from trtinfer.calibration.calibset import CalibrationSet
    from trtinfer.manifest import PreprocessSpec

    from ..options import BuildOptions
    from ..progress import Reporter


@dataclass(frozen=True)
class Reduced:
    """One reduced precision's records: the tool's facts and, for INT8, the calibration (with the choice)."""

    conversion: ConversionRecord
    calibration: CalibrationRecord = field(default_factory=CalibrationRecord)


def calibration_set(opts: BuildOptions, report: Reporter, spec: PreprocessSpec,
                    input_shape: list[int]) -> CalibrationSet:
    """The INT8 calibration set: ``--calib-set`` as saved, or drawn from ``--calib-data``'s train split."""
    from trtinfer.calibration.calibset import check_matches, load_calibration_set, make_calibration_set

    if opts.calib_set is not None and opts.calib_data is not None:
        raise DataError("pass --calib-data or --calib-set, not both")
    if opts.calib_set is not None:
        calib = load_calibration_set(opts.calib_set)
        warnings = check_matches(calib, spec, input_shape)
    elif opts.calib_data is not None:
        with report.tracker("calibration set") as update:
            calib = make_calibration_set(opts.calib_data, spec, opts.calib_samples, opts.seed, progress=update,
                                         input_shape=input_shape)
        warnings = []
    else:
        raise DataError("--int8 needs calibration data", hint="pass --calib-data DIR (training images) or "
                                                              "--calib-set calib.npz (trtinfer calib make)")
    for w in [*calib.warnings, *warnings]:
        report.warn(w)
    report.info(f"calibration set: {len(calib)} images from {calib.source} ({calib.split} split, seed "
                        f"{calib.seed}, {'class-balanced' if calib.balanced else 'random draw'})")
    return calib


def selection_slice(opts: BuildOptions, report: Reporter, spec: PreprocessSpec, calib: CalibrationSet,
                    labels: list[str]) -> Selection | None:
    """Labelled train rows left out of calibration, to judge INT8 methods and the fallback on.

    None (said as a warning) when the calibration source has no labels or no rows to spare.
    """
    from trtinfer.calibration.calibset import make_eval_set

    source = opts.calib_data if opts.calib_data is not None else calib.source
    try:
        with report.tracker("selection slice") as update:
            rows = make_eval_set(source, spec, exclude=calib, labels=labels, limit=SELECTION_SAMPLES, seed=opts.seed,
                                 progress=update, split="train")
    except (DataError, OSError) as exc:
        report.warn(f"no held-out training rows to choose the INT8 method on ({exc}); using the quantizer's "
                            f"default method without the fallback (pass labelled --calib-data)")
        return None
    report.info(f"selection slice: {len(rows)} labelled {rows.split}-split rows of {rows.source} held out of "
                        f"calibration (judge INT8 methods and the fallback; --eval-data takes no part)")
    return Selection(x=rows.x, labels=rows.labels, source=rows.source)


def build_reduced(opts: BuildOptions, report: Reporter, fp32_path: Path, precisions: list[str], outputs: dict[str, Path],
                  calib: CalibrationSet | None, selection: Selection | None = None,
                  target: str = "cpu", *, int8_limit: float) -> dict[str, Reduced]:
    """Write each reduced-precision ONNX to ``outputs[p]``; return each one's records.

    ``int8_limit``: the accuracy guard's INT8 allowance in top-1 points, which the INT8 choice aims at
    (the guard itself is :func:`..checks.accuracy_guard.guard_reduced`)."""
    from trtinfer.execution import judge_execution

    judge = judge_execution(target)
    reduced: dict[str, Reduced] = {}
    for precision in precisions:
        with report.timed(f"converting to {precision.upper()}"):
            if precision == "int8":
                if calib is None:
                    raise DataError("--int8 needs calibration data", hint="pass --calib-data DIR or --calib-set calib.npz")
                tool, why = int8_tool(opts.quantizer, target)
                report.info(f"INT8 quantizer {tool.name} ({why}); choices judged with {judge.name}")
                with report.tracker("INT8") as update:
                    chosen = choose_int8(tool, fp32_path, outputs["int8"], calib.x, selection,
                                         lambda path, x: execution_logits(judge, path, x), judge.name,
                                         outputs["int8"].parent, int8_limit, method=opts.calib_method,
                                         fallback=opts.fallback, progress=lambda label: update,
                                         runs=_runs_check(judge.name, calib.x.shape[1:]))
                calibration = replace(read_record(CalibrationRecord, calib.summary(), name="calibration"),
                                      method=chosen.conversion.method, quantizer=chosen.conversion.tool,
                                      choice=chosen.choice)
                _report_choice(report, chosen.choice)
                reduced[precision] = Reduced(chosen.conversion, calibration)
            else:  # AutoCast checks activation ranges on real images when we have them
                facts = reduce_precision(precision, fp32_path, outputs[precision],
                                         calibration=None if calib is None else calib.x[:64],
                                         nodes_to_exclude=list(opts.fp16_exclude) or None)
                reduced[precision] = Reduced(read_record(ConversionRecord, facts, name="conversion"))
        report.info(_describe(reduced[precision].conversion))
    return reduced


def _runs_check(judge: str, row_shape: tuple[int, ...]) -> Callable[[Path], str | None] | None:
    """For CPU artifacts judged on OpenVINO: the crash-safe check that OpenVINO runs the chosen model at every
    batch the runtime uses (:mod:`.runs_check`); none for other judges."""
    if not judge.startswith("openvino"):
        return None
    from .runs_check import openvino_failure

    return lambda path: openvino_failure(path, tuple(int(d) for d in row_shape))


def _report_choice(report: Reporter, choice: Int8ChoiceRecord) -> None:
    if not choice.ran:
        report.info(f"INT8 method {choice.method}: {choice.reason}")
        return
    tried = ", ".join(f"{m.method} {m.top1_agreement:.2%} (drop {m.top1_drop_points:.2f})"
                      for m in choice.methods or ())
    report.info(f"INT8 methods on the {choice.slice.rows if choice.slice else None}-row slice, top-1 agreement "
                f"with FP32: {tried}; chose {choice.method}")
    for refusal in choice.refused or ():
        report.warn(f"INT8 method refused because its model does not run: {refusal}")
    fb = choice.fallback
    if fb is not None and fb.ran:
        excluded = fb.excluded_nodes or ()
        report.info(f"sensitivity fallback: kept {len(excluded)} of {fb.quantized_layers} "
                    f"layers in float ({', '.join(excluded[:6])}{' ...' if len(excluded) > 6 else ''}); slice drop "
                    f"{fb.drop_before_points:.2f} -> {fb.drop_after_points:.2f} points")
        if not fb.passed:
            report.warn("the fallback reached its budget without meeting the allowance on the slice")


def _describe(conversion: ConversionRecord) -> str:
    facts = conversion.to_dict()
    if conversion.precision == "int8":
        keys = ("quantize_linear", "quantized_ops", "seconds")
    else:
        keys = ("nodes_fp16", "nodes_fp32", "seconds")
    return f"{conversion.tool} {conversion.version}: " + ", ".join(
        f"{k} {facts[k]}" for k in keys if k in facts and not isinstance(facts[k], (dict, list)))
