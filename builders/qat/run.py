"""``trtinfer build --int8 --qat on|auto``: whether quantization-aware fine-tuning runs, and the run.

* ``on`` runs it; ``auto`` runs it only when post-training INT8 and the sensitivity fallback missed the
  allowance on the selection slice (held-out training rows), so a model that passed is never touched and
  the ``--eval-data`` rows take no part in the decision. The accuracy guard then judges whatever is
  stored, on the evaluation rows, as for every build.
* The quantizer follows the target: NNCF for CPUs (:mod:`.nncf_qat`), ModelOpt for TensorRT (:mod:`.modelopt_qat`).
* Data: the labelled training split of ``--calib-data``, a class-balanced tenth of it held out to measure
  the drop before and after (FP32, post-training INT8 and the fine-tuned INT8 on the same rows, on the
  target's judging execution).
* The memory a fine-tune needs is estimated and refused before any training starts.
"""

from __future__ import annotations

import copy
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from trtinfer.errors import DataError
from trtinfer.manifest import Int8ChoiceRecord, QatEpochRecord, QatRecord

if TYPE_CHECKING:
    from trtinfer.calibration.calibset import CalibrationSet
    from trtinfer.manifest import PreprocessSpec

    from ..progress import Reporter

QAT_MODES = ("off", "on", "auto")
VAL_FRACTION = 0.1
CURVES_NAME = "qat_curves.png"
#: Fake quantizers keep their inputs for the backward pass: about as much again as the float model's
#: activations, so the training-memory estimate is made for twice the batch.
QUANTIZER_MEMORY_FACTOR = 2


@dataclass(frozen=True)
class QatDecision:
    run: bool
    reason: str


def decide(mode: str, choice: Int8ChoiceRecord, limit: float) -> QatDecision:
    """Whether the fine-tune runs: asked (``on``), or ``auto`` and post-training INT8 (with the fallback, when
    it ran) missed ``limit`` points on the selection slice, by the chooser's own rule (:func:`slice_verdict`)."""
    from ..precision.int8_choice import slice_verdict

    if mode == "off":
        return QatDecision(False, "not asked (--qat off)")
    if mode == "on":
        return QatDecision(True, "asked (--qat on)")
    verdict = slice_verdict(choice, limit)
    if verdict is None:
        return QatDecision(False, "--qat auto: no selection slice to judge post-training INT8 on (pass labelled "
                                  "--calib-data), so the model is left as calibrated")
    bound, missed = verdict
    what = "post-training INT8 with the fallback" if choice.fallback is not None and choice.fallback.ran else \
        "post-training INT8"
    return QatDecision(missed, f"--qat auto: {what} {'missed' if missed else 'met'} the allowance on the selection "
                               f"slice (drop + 1 standard error {bound:.2f} {'>' if missed else '<='} {limit:.2f} points)")


def quantizer_for(target: str) -> Any:
    """The QAT module of the target's quantizer (``prepare``, ``export``)."""
    if target == "gpu":
        from . import modelopt_qat

        return modelopt_qat
    from . import nncf_qat

    return nncf_qat


def run_qat(*, model: Any, spec: PreprocessSpec, calib: CalibrationSet, calib_data: Path | None, target: str,
            fp32_path: Path, ptq_path: Path, judge: Any, decision: QatDecision, mode: str, epochs: int, lr: float,
            batch_size: int, seed: int, report: Reporter) -> tuple[QatRecord, dict[str, Any] | None]:
    """Fine-tune ``model`` with the target's fake quantizers and, when kept, write it over ``ptq_path`` (with
    its curves beside it). Returns the record and, when kept, the new conversion facts."""
    import numpy as np
    import torch

    from trtinfer.training.curves import plot_curves
    from trtinfer.training.data import batches, load_train_data
    from trtinfer.training.memory import check_fits

    from ..logits import execution_logits
    from .loop import QatRecipe, fine_tune

    if calib_data is None:
        raise DataError("--qat needs labelled training images to fine-tune on",
                        hint="pass --calib-data DIR (a CIFAR folder or an image folder with one sub-folder per class)")
    tool = quantizer_for(target)
    tool_version = tool.need_nncf() if target != "gpu" else tool.need_modelopt()
    data = load_train_data(calib_data, VAL_FRACTION, seed)
    # finetune's message and hint name its own --batch-size, which the build does not have
    check_fits(model, spec.input_size, batch_size * QUANTIZER_MEMORY_FACTOR, "sgd", False, torch.device("cpu"),
               data.largest_pixels(), subject=f"the quantization-aware fine-tune (batch {batch_size}, with fake "
                                              f"quantizers) at {spec.input_size}x{spec.input_size}",
               hint="leave --qat out (post-training INT8 needs no training memory), or build on a machine with "
                    "more memory")
    report.info(f"quantization-aware fine-tune ({decision.reason}): {tool.__name__.rsplit('.', 1)[-1]}, "
                f"{epochs} epoch(s) at lr {lr:g}, batch {batch_size}, on {len(data.train)} {data.train.split} rows of "
                f"{data.source}; {len(data.val)} rows held out to measure the drop (--eval-data takes no part)")
    started = time.perf_counter()
    with report.timed("inserting and calibrating the fake quantizers"):
        prepared = tool.prepare(copy.deepcopy(model), calib.x)  # the FP32 model stays as loaded
    def on_epoch(result: QatEpochRecord) -> None:
        report.info(f"QAT epoch {result.epoch}/{epochs}: train loss {result.train_loss:.3f} top-1 "
                    f"{result.train_accuracy:.1%}; held-out loss {result.val_loss:.3f} top-1 {result.val_accuracy:.1%} "
                    f"({result.seconds:.0f} s)")

    with report.tracker("QAT") as update:
        history = fine_tune(prepared, data.train, data.val, spec, QatRecipe(epochs, lr, batch_size, seed),
                            lambda done, total, note: update(done, total), on_epoch)
    qat_path = ptq_path.parent / "qat.onnx"
    with report.timed("exporting the fine-tuned model as ONNX Q/DQ"):
        facts = tool.export(prepared, qat_path, spec.input_size)
    seconds = time.perf_counter() - started

    x = np.concatenate([b.numpy() for b, _ in batches(data.val, spec, 256, None)])
    labels = np.asarray(data.val.labels)

    def top1(path: Path) -> float:
        return float((execution_logits(judge, path, x).argmax(1) == labels).mean())

    fp32 = top1(fp32_path)
    before, after = 100 * (fp32 - top1(ptq_path)), 100 * (fp32 - top1(qat_path))
    kept = mode == "on" or after <= before
    report.info(f"held-out rows ({len(labels)}), top-1 drop against FP32 on {judge.name}: post-training INT8 "
                f"{before:.2f} points, after the fine-tune {after:.2f}: "
                + ("keeping the fine-tuned model" if kept else "keeping the post-training model (--qat auto)"))
    if mode == "on" and after > before:
        report.warn(f"the fine-tuned INT8 model drops more than the post-training one on the held-out rows "
                    f"({after:.2f} against {before:.2f} points); kept because --qat on was asked")
    curves = None
    if kept:
        shutil.move(str(qat_path), str(ptq_path))
        curves = plot_curves(history, ptq_path.parent / CURVES_NAME,
                             f"quantization-aware fine-tune ({tool.__name__.rsplit('.', 1)[-1]})").name
    else:
        qat_path.unlink(missing_ok=True)
    record = QatRecord(
        ran=True, reason=decision.reason, kept=kept, tool=str(facts["tool"]), version=tool_version, epochs=epochs,
        learning_rate=lr, batch_size=batch_size, train_source=data.source, train_rows=len(data.train),
        val_rows=len(labels), drop_before_points=round(before, 4), drop_after_points=round(after, 4),
        seconds=round(seconds, 1), curves=curves, history=tuple(history))
    return record, facts if kept else None

