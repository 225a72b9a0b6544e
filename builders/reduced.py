"""FP16 and INT8 artifacts from the shared FP32 export, and the accuracy guard over them."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from trtinfer.errors import DataError

if TYPE_CHECKING:
    from trtinfer.calibration.calibset import CalibrationSet, EvalSet
    from trtinfer.manifest import PreprocessSpec

    from .pipeline import Builder


def calibration_set(builder: Builder, spec: PreprocessSpec, input_shape: list[int]) -> CalibrationSet:
    """The INT8 calibration set: ``--calib-set`` as saved, or drawn from ``--calib-data``'s train split."""
    from trtinfer.calibration.calibset import check_matches, load_calibration_set, make_calibration_set

    opts = builder.opts
    if opts.calib_set is not None and opts.calib_data is not None:
        raise DataError("pass --calib-data or --calib-set, not both")
    if opts.calib_set is not None:
        calib = load_calibration_set(opts.calib_set)
        warnings = check_matches(calib, spec, input_shape)
    elif opts.calib_data is not None:
        with builder.report.tracker("calibration set") as update:
            calib = make_calibration_set(opts.calib_data, spec, opts.calib_samples, opts.seed, progress=update,
                                         input_shape=input_shape)
        warnings = []
    else:
        raise DataError("--int8 needs calibration data", hint="pass --calib-data DIR (training images) or "
                                                              "--calib-set calib.npz (trtinfer calib make)")
    for w in [*calib.warnings, *warnings]:
        builder.report.warn(w)
    builder.report.info(f"calibration set: {len(calib)} images from {calib.source} ({calib.split} split, seed "
                        f"{calib.seed}, {'class-balanced' if calib.balanced else 'random draw'})")
    return calib


def build_reduced(builder: Builder, fp32_path: Path, precisions: list[str], outputs: dict[str, Path],
                  calib: CalibrationSet | None, eval_set: EvalSet | None) -> dict[str, dict[str, Any]]:
    """Write each reduced-precision ONNX to ``outputs[p]``; return manifest sections per precision.

    Raises AccuracyError (nothing written by the caller) when the guard fails.
    """
    from .evaluate import evaluate_precisions, no_accuracy_check
    from .precision import reduce_precision

    opts = builder.opts
    sections: dict[str, dict[str, Any]] = {"fp32": {}}
    for precision in precisions:
        with builder.report.timed(f"converting to {precision.upper()}"):
            if precision == "int8":
                facts = reduce_precision("int8", fp32_path, outputs["int8"], calibration=calib.x,
                                         method=opts.calib_method)
            else:  # AutoCast checks activation ranges on real images when we have them
                facts = reduce_precision(precision, fp32_path, outputs[precision],
                                         calibration=None if calib is None else calib.x[:64])
        builder.report.info(_describe(facts))
        sections[precision] = {"conversion": facts}
        if precision == "int8":
            sections[precision]["calibration"] = {**calib.summary(), "method": opts.calib_method}

    if eval_set is None:
        unchecked = no_accuracy_check("no --eval-data given: pass labelled test images to measure FP16/INT8 "
                                      "accuracy against FP32")  # logs the warning once
        for precision in precisions:
            sections[precision]["accuracy"] = dict(unchecked)
        return sections
    with builder.report.timed(f"accuracy guard on {len(eval_set)} images (ONNX Runtime, CPU)"), \
            builder.report.tracker("evaluating") as update:
        results = evaluate_precisions(fp32_path, {p: outputs[p] for p in precisions}, eval_set.x, eval_set.labels,
                                      max_drop=opts.max_accuracy_drop, allow=opts.allow_accuracy_drop,
                                      progress=lambda label: update)
    sections["fp32"]["accuracy"] = results["fp32"]
    for precision in precisions:
        r = results[precision]
        sections[precision]["accuracy"] = {**r, "eval": eval_set.summary()}
        verdict = "passed" if r["passed"] else "FAILED, kept by --allow-accuracy-drop"
        builder.report.info(f"{precision}: top-1 {r['top1']:.2%} vs FP32 {r['top1_reference']:.2%} "
                            f"(drop {r['top1_drop_points']:.2f} points, limit {r['max_drop_points']:.2f}), "
                            f"agreement {r['top1_agreement']:.2%}, max |diff| {r['max_abs_diff']:.3g}: {verdict}")
    return sections


def _describe(facts: dict[str, Any]) -> str:
    if facts.get("precision") == "int8":
        keys = ("quantize_linear", "quantized_ops", "seconds")
    else:
        keys = ("nodes_fp16", "nodes_fp32", "seconds")
    return f"{facts.get('tool')} {facts.get('version')}: " + ", ".join(
        f"{k} {facts[k]}" for k in keys if k in facts and not isinstance(facts[k], (dict, list)))
