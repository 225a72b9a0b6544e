"""FP16 and INT8 artifacts from the shared FP32 export: the calibration data, the selection slice, the conversion.

Each step takes the build's options and its reporter, nothing of the pipeline itself; the accuracy
guard over the results is :func:`..checks.accuracy_guard.guard_reduced`.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from trtinfer.errors import DataError

from ..logits import execution_logits
from .int8_choice import SELECTION_SAMPLES, Selection, choose_int8
from .quantizer_for_target import int8_tool
from .tools import reduce_precision

if TYPE_CHECKING:
    from trtinfer.calibration.calibset import CalibrationSet
    from trtinfer.manifest import PreprocessSpec

    from ..options import BuildOptions
    from ..progress import Reporter


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
                  target: str = "cpu", *, int8_limit: float) -> dict[str, dict[str, Any]]:
    """Write each reduced-precision ONNX to ``outputs[p]``; return manifest sections per precision.

    ``int8_limit``: the accuracy guard's INT8 allowance in top-1 points, which the INT8 choice aims at
    (the guard itself is :func:`..checks.accuracy_guard.guard_reduced`)."""
    from trtinfer.execution import judge_execution

    judge = judge_execution(target)
    sections: dict[str, dict[str, Any]] = {"fp32": {}}
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
                                         fallback=opts.fallback, progress=lambda label: update)
                facts = chosen["conversion"]
                calibration = {**calib.summary(), "method": facts.get("method"), "quantizer": facts.get("tool"),
                               "choice": chosen["choice"]}
                _report_choice(report, chosen["choice"])
            else:  # AutoCast checks activation ranges on real images when we have them
                facts = reduce_precision(precision, fp32_path, outputs[precision],
                                         calibration=None if calib is None else calib.x[:64],
                                         nodes_to_exclude=list(opts.fp16_exclude) or None)
        report.info(_describe(facts))
        sections[precision] = {"conversion": facts}
        if precision == "int8":
            sections[precision]["calibration"] = calibration
    return sections


def _report_choice(report: Reporter, choice: dict[str, Any]) -> None:
    if not choice.get("ran"):
        report.info(f"INT8 method {choice.get('method')}: {choice.get('reason')}")
        return
    tried = ", ".join(f"{m['method']} {m['top1_agreement']:.2%} (drop {m['top1_drop_points']:.2f})"
                      for m in choice["methods"])
    report.info(f"INT8 methods on the {choice['slice']['rows']}-row slice, top-1 agreement with FP32: "
                        f"{tried}; chose {choice['method']}")
    fb = choice.get("fallback") or {}
    if fb.get("ran"):
        report.info(f"sensitivity fallback: kept {len(fb['excluded_nodes'])} of {fb['quantized_layers']} "
                            f"layers in float ({', '.join(fb['excluded_nodes'][:6])}"
                            f"{' ...' if len(fb['excluded_nodes']) > 6 else ''}); slice drop "
                            f"{fb['drop_before_points']:.2f} -> {fb['drop_after_points']:.2f} points")
        if not fb.get("passed"):
            report.warn("the fallback reached its budget without meeting the allowance on the slice")


def _describe(facts: dict[str, Any]) -> str:
    if facts.get("precision") == "int8":
        keys = ("quantize_linear", "quantized_ops", "seconds")
    else:
        keys = ("nodes_fp16", "nodes_fp32", "seconds")
    return f"{facts.get('tool')} {facts.get('version')}: " + ", ".join(
        f"{k} {facts[k]}" for k in keys if k in facts and not isinstance(facts[k], (dict, list)))
