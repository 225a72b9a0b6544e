"""``trtinfer build``: checkpoint -> validated artifact directories, written all at once or not at all."""

from __future__ import annotations

import datetime as _dt
import logging
import math
import shutil
import tempfile
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from trtinfer import defaults
from trtinfer._version import __version__
from trtinfer.atomic import StagedDirectories
from trtinfer.interrupts import held_signals
from trtinfer.errors import CheckpointError, TrtInferError
from trtinfer.labels import resolve_labels
from trtinfer.manifest import (ONNX_NAME, PRECISIONS, AccuracyRecord, CalibrationRecord, ConversionRecord,
                               ExecutionRecord, Manifest, PreprocessSpec, SourceRecord, TensorSpec, ValidationRecord,
                               VariantRecord)
from trtinfer.preprocess import make_spec
from trtinfer.versions import library_versions

from .options import BuildOptions, artifact_name
from .progress import Reporter
from .source.card import CheckpointCard, apply_card, card_path, read_card_for

if TYPE_CHECKING:
    import numpy as np

    from trtinfer.calibration.calibset import CalibrationSet, EvalSet

    from .precision.int8_choice import Selection
    from .source.types import ArchMatch, Checkpoint, LoadedModel

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BuildContext:
    """What every stage after loading works from: the model, its preprocessing and labels, the data sets."""

    work: Path  # the build's temporary directory
    loaded: LoadedModel
    spec: PreprocessSpec
    labels: list[str]
    calib: CalibrationSet | None = None
    eval_set: EvalSet | None = None
    selection: Selection | None = None  # held-out train rows the INT8 choice is judged on

    @property
    def fp32_path(self) -> Path:
        return self.work / ONNX_NAME


@dataclass
class PrecisionRecords:
    """One precision's sections, as the stages return them; the manifest is assembled from these."""

    conversion: ConversionRecord = field(default_factory=ConversionRecord)
    calibration: CalibrationRecord = field(default_factory=CalibrationRecord)
    accuracy: AccuracyRecord = field(default_factory=AccuracyRecord)


class Builder:
    """One build: every stage reports, nothing lands on disk until all checks pass."""

    def __init__(self, opts: BuildOptions, reporter: Reporter | None = None) -> None:
        self.opts = opts
        self.report = reporter or Reporter()
        self._target: tuple[str, str] | None = None
        self.card: CheckpointCard | None = None  # the checkpoint's card (trtinfer finetune), read by run()

    @property
    def target(self) -> str:
        """Where the artifacts are meant to run (``--target``, else where an engine can be built)."""
        if self._target is None:
            from .precision.quantizer_for_target import resolve_target

            self._target = resolve_target(self.opts.target)
        return self._target[0]

    # -- stages ---------------------------------------------------------------------------
    def load(self) -> LoadedModel:
        from .source.archs import build_model, family_of, match_arch
        from .source.checkpoint import load_checkpoint, non_finite_tensors
        from .source.types import LoadedModel

        opts = self.opts
        with self.report.timed(f"loading checkpoint {opts.checkpoint}"):
            ckpt = load_checkpoint(opts.checkpoint, trust=opts.trust_checkpoint)
            match = match_arch(ckpt.state_dict, opts.arch, hf_config=ckpt.hf_config)
            model = build_model(match, ckpt.state_dict)  # a Hugging Face model comes wrapped to return logits
            reference = ckpt.module if ckpt.module is not None else model
        bad = non_finite_tensors(ckpt.state_dict)
        if bad:
            raise CheckpointError(f"{opts.checkpoint} has NaN or infinite values in {len(bad)} weight tensor(s): "
                                  f"{', '.join(bad[:5])}{' ...' if len(bad) > 5 else ''}",
                                  hint="the training diverged or the file was damaged; use an earlier checkpoint")
        how = "from config.json" if ckpt.hf_config is not None else "given" if opts.arch else "inferred from the weights"
        stem = ", CIFAR stem (3x3 stride-1 conv1, no max-pool)" if match.cifar_stem else ""
        head = ", classifier Sequential(Dropout, Linear)" if match.dropout_head else ""
        self.report.info(f"format {ckpt.format}; architecture {match.arch} ({how}, family {family_of(match.arch)}), "
                         f"{match.num_classes} classes{stem}{head}")
        if ckpt.stripped_prefixes:
            self.report.info(f"stripped wrapper prefixes {', '.join(ckpt.stripped_prefixes)}")
        return LoadedModel(ckpt, match, model, reference)

    def preprocessing(self, match: ArchMatch) -> PreprocessSpec:
        opts = self.opts
        assumed = []
        input_size = opts.input_size
        if input_size is None:
            input_size = defaults.CIFAR_INPUT_SIZE if match.cifar_stem else defaults.INPUT_SIZE
            assumed.append(f"input size {input_size} ({'CIFAR stem' if match.cifar_stem else 'default'}; --input-size)")
        normalize = opts.normalize
        if normalize is None and opts.mean is None:
            normalize = "cifar10" if match.cifar_stem else defaults.NORMALIZE
            assumed.append(f"{normalize} normalization (--normalize or --mean/--std)")
        spec = make_spec(input_size, normalize, opts.mean, opts.std, opts.resize)
        self.report.info(f"preprocess: RGB, resize {spec.resize}, centre crop {spec.input_size}, "
                         f"/255, mean {spec.mean}, std {spec.std}")
        if assumed:
            self.report.warn("assumed " + "; ".join(assumed))
        return spec

    def labels(self, ckpt: Checkpoint, match: ArchMatch) -> list[str]:
        """--labels, else the checkpoint card's, else the class names the checkpoint carries, else a preset
        for the class count (warned)."""
        if self.opts.labels is None and self.card is not None and len(self.card.labels) == match.num_classes:
            return list(self.card.labels)
        if self.opts.labels is None and ckpt.labels is not None:
            if len(ckpt.labels) != match.num_classes:
                raise CheckpointError(f"{self.opts.checkpoint} names {len(ckpt.labels)} classes but its classifier "
                                      f"has {match.num_classes} outputs", hint="pass --labels with one name per output")
            self.report.info(f"labels from the checkpoint: {', '.join(ckpt.labels[:5])}"
                             f"{' ...' if len(ckpt.labels) > 5 else ''}")
            return list(ckpt.labels)
        labels = resolve_labels(self.opts.labels, match.num_classes)
        if self.opts.labels is None:
            self.report.warn(f"assumed labels {labels[:3] + ['...'] if len(labels) > 3 else labels} (--labels)")
        return labels

    def check_options(self) -> None:
        """Everything that can be refused without loading anything, refused first."""
        from trtinfer.atomic import recover_killed_commits

        from .destination import check_destination

        opts = self.opts
        for p in opts.precisions:
            if p not in PRECISIONS:
                raise TrtInferError(f"unknown precision {p!r}", hint=f"use {', '.join(PRECISIONS)}")
        for flag, value in (("--atol", opts.atol), ("--rtol", opts.rtol)):
            if not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
                raise TrtInferError(f"{flag} {value} must be a finite number >= 0",
                                    hint=f"the defaults are --atol {defaults.ATOL} --rtol {defaults.RTOL}")
        if opts.max_accuracy_drop is not None and not (math.isfinite(opts.max_accuracy_drop)
                                                       and 0 <= opts.max_accuracy_drop <= 100):
            raise TrtInferError(f"--max-accuracy-drop {opts.max_accuracy_drop} must be 0..100 top-1 points")
        if opts.qat not in defaults.QAT_MODES:
            raise TrtInferError(f"unknown --qat {opts.qat!r}", hint=f"use one of {', '.join(defaults.QAT_MODES)}")
        if opts.qat != "off" and "int8" not in opts.precisions:
            raise TrtInferError(f"--qat {opts.qat} fine-tunes the INT8 model, and this build makes no INT8",
                                hint="add --int8 (or --precision int8), or leave --qat out")
        if opts.qat != "off" and opts.calib_data is None:
            raise TrtInferError(f"--qat {opts.qat} needs labelled training images to fine-tune on",
                                hint="pass --calib-data DIR (a CIFAR folder or an image folder with one sub-folder "
                                     "per class)")
        if not (isinstance(opts.qat_epochs, int) and 1 <= opts.qat_epochs <= 100) or \
                not (isinstance(opts.qat_lr, (int, float)) and math.isfinite(opts.qat_lr) and 0 < opts.qat_lr <= 1):
            raise TrtInferError(f"--qat-epochs {opts.qat_epochs} / --qat-lr {opts.qat_lr} out of range",
                                hint="epochs 1..100, learning rate in (0, 1]")
        # The preprocessing options, checked as `calib make` checks them, before the checkpoint is read (the
        # input size may still come from the checkpoint: the smallest one stands in for it here).
        make_spec(opts.input_size or defaults.INPUT_SIZE_RANGE[0], opts.normalize, opts.mean, opts.std,
                  resize=opts.resize if opts.input_size else None)
        from .precision.quantizer_for_target import QUANTIZERS, TARGETS

        if opts.quantizer not in QUANTIZERS:
            raise TrtInferError(f"unknown --quantizer {opts.quantizer!r}", hint=f"use one of {', '.join(QUANTIZERS)}")
        if opts.target is not None and opts.target not in TARGETS:
            raise TrtInferError(f"unknown --target {opts.target!r}", hint=f"use one of {', '.join(TARGETS)}")
        if "int8" in opts.precisions and opts.calib_method is not None:
            from .precision.quantizer_for_target import int8_tool

            tool, _ = int8_tool(opts.quantizer, self.target)
            if opts.calib_method not in tool.methods:
                raise TrtInferError(f"--calib-method {opts.calib_method} is not a method of {tool.name}",
                                    hint=f"{tool.name} offers {', '.join(tool.methods)}; leave it out to try each")
        recover_killed_commits(opts.out_dir, self.report.warn)
        check_destination(opts.out_dir, [artifact_name(opts, p) for p in opts.precisions], opts.force)

    def run(self) -> list[Path]:
        opts = self.opts
        self.check_options()
        if opts.require_engine:
            self._require_engine_stage()
        self.card = read_card_for(Path(opts.checkpoint), self.report.warn)
        if self.card is not None:
            opts = self.opts = apply_card(opts, self.card, self.report.warn)
            accuracy = f", validation top-1 {100 * self.card.val_accuracy:.2f}%" if self.card.val_accuracy else ""
            self.report.info(f"checkpoint card {card_path(opts.checkpoint).name}: {self.card.arch}, "
                             f"{self.card.num_classes} classes, input {self.card.input_size}, {self.card.normalize}"
                             f"{accuracy}")
        loaded = self.load()
        match = loaded.match
        spec = self.preprocessing(match)
        labels = self.labels(loaded.checkpoint, match)
        input_shape = [-1, 3, spec.input_size, spec.input_size]
        calib = selection = None
        if "int8" in opts.precisions or (opts.calib_data or opts.calib_set):
            from .precision.conversion import calibration_set, selection_slice

            calib = calibration_set(opts, self.report, spec, input_shape)
            if "int8" in opts.precisions:
                selection = selection_slice(opts, self.report, spec, calib, labels)
        self.report.info(f"target {self.target} ({self._target[1] if self._target else ''})")
        eval_set = None
        if opts.eval_data is not None:
            from trtinfer.calibration.calibset import make_eval_set

            with self.report.tracker("evaluation set") as update:
                eval_set = make_eval_set(opts.eval_data, spec, exclude=calib, labels=labels,
                                         limit=opts.eval_samples, seed=opts.seed, progress=update)
            for w in eval_set.warnings:
                self.report.warn(w)
            self.report.info(f"evaluation set: {len(eval_set)} labelled images from {eval_set.source} "
                             f"({eval_set.split} split)")

        from .export.memory_estimate import check_export_memory

        check_export_memory(loaded.model, spec.input_size, batch=64 if eval_set is not None else 8)
        work = Path(tempfile.mkdtemp(prefix="trtinfer-build-"))
        try:
            return self._build_in(BuildContext(work, loaded, spec, labels, calib, eval_set, selection))
        finally:
            with held_signals():  # a second Ctrl-C must not leave the temporaries behind
                shutil.rmtree(work, ignore_errors=True)

    def _build_in(self, ctx: BuildContext) -> list[Path]:
        from .checks.export_validation import validate_export
        from .export.onnx_export import export_onnx

        opts, spec, eval_set, fp32_path = self.opts, ctx.spec, ctx.eval_set, ctx.fp32_path
        with self.report.timed("exporting ONNX (dynamic batch, input 'input', output 'logits')") as facts:
            export = export_onnx(ctx.loaded.model, fp32_path, spec.input_size, opset=opts.opset)
        export = replace(export, seconds=facts["seconds"])
        with self.report.timed("validating ONNX against PyTorch with ONNX Runtime"), \
                self.report.tracker("validation") as advance:
            validation = validate_export(ctx.loaded.reference, fp32_path, spec.input_size,
                                         None if eval_set is None else eval_set.x,
                                         None if eval_set is None else eval_set.labels,
                                         atol=opts.atol, rtol=opts.rtol, progress=advance)
        validation = replace(validation, export=export)
        self._print_validation(validation)

        outputs = {p: ctx.work / p / ONNX_NAME for p in opts.precisions}
        records = {p: PrecisionRecords() for p in opts.precisions}
        reference = None  # FP32 logits on the eval rows, run once for every check that compares against them
        if eval_set is not None:
            from .logits import run_onnx

            reference = run_onnx(fp32_path, eval_set.x)
        reduced = [p for p in opts.precisions if p != "fp32"]
        if reduced:
            from .checks.accuracy_guard import AccuracyGuard, guard_reduced
            from .precision.conversion import build_reduced

            int8_limit = AccuracyGuard().limit("int8", opts.max_accuracy_drop)
            converted = build_reduced(opts, self.report, fp32_path, reduced, outputs, ctx.calib, ctx.selection,
                                      self.target, int8_limit=int8_limit)
            for precision, result in converted.items():
                records[precision].conversion, records[precision].calibration = result.conversion, result.calibration
            if "int8" in reduced and opts.qat != "off":
                self._qat_stage(ctx, outputs["int8"], records["int8"], int8_limit)
            self._check_fp16(fp32_path, outputs, eval_set, reference)
            guarded = guard_reduced(opts, self.report, fp32_path, reduced, outputs, eval_set, self.target, reference)
            for precision, accuracy in guarded.items():
                if precision in records:
                    records[precision].accuracy = accuracy
        elif eval_set is not None and validation.eval is not None:
            ev = validation.eval
            records["fp32"].accuracy = AccuracyRecord(checked=True, samples=ev.samples, top1=ev.candidate_accuracy)
        if ctx.calib is not None and "int8" in opts.precisions:
            int8 = records["int8"]
            int8.calibration = replace(int8.calibration, diagnostics=self._diagnose_calibration(fp32_path, ctx.calib,
                                                                                               ctx.labels))
        if eval_set is not None and reference is not None:
            for precision, executions in self._check_executions(fp32_path, outputs, eval_set, reference).items():
                accuracy = records[precision].accuracy
                records[precision].accuracy = replace(accuracy if accuracy.checked is not None
                                                      else AccuracyRecord(checked=True), executions=executions)

        source = SourceRecord(checkpoint=ctx.loaded.checkpoint.record(),
                              eval_data=None if eval_set is None else eval_set.source)
        with StagedDirectories(overwrite=opts.force) as staged:
            artifacts = []
            for precision in opts.precisions:
                final = opts.out_dir / artifact_name(opts, precision)
                directory = staged.stage(final)
                src = fp32_path if precision == "fp32" else outputs[precision]
                shutil.copyfile(src, directory / ONNX_NAME)
                manifest = self._manifest(ctx, precision, source, validation, records[precision])
                manifest.record_file(directory, ONNX_NAME)
                qat = records[precision].calibration.qat
                if qat is not None and qat.curves:
                    shutil.copyfile(src.parent / qat.curves, directory / qat.curves)
                    manifest.record_file(directory, qat.curves)
                artifacts.append((directory, manifest))
            if not self._engine_stage(artifacts, eval_set):  # the engine stage writes the manifests it extends
                for directory, manifest in artifacts:
                    manifest.write(directory)
            committed = staged.commit()
        for path in committed:
            self.report.step(f"wrote {path}")
        return committed

    def _qat_stage(self, ctx: BuildContext, int8_path: Path, records: PrecisionRecords, limit: float) -> None:
        """``--qat on|auto``: quantization-aware fine-tuning when asked or when post-training INT8 missed the
        allowance on the selection slice (:mod:`.qat.run`); ``records`` take what was done."""
        from trtinfer.execution import judge_execution
        from trtinfer.manifest import ConversionRecord, Int8ChoiceRecord, QatRecord, read_record

        from .qat.run import decide, run_qat

        opts, calibration = self.opts, records.calibration
        decision = decide(opts.qat, calibration.choice or Int8ChoiceRecord(ran=False), limit)
        if not decision.run:
            self.report.info(f"quantization-aware fine-tune not run: {decision.reason}")
            records.calibration = replace(calibration, qat=QatRecord(ran=False, reason=decision.reason))
            return
        assert ctx.calib is not None  # --int8 has calibration data
        with self.report.timed("quantization-aware fine-tune"):
            record, facts = run_qat(
                model=ctx.loaded.model, spec=ctx.spec, calib=ctx.calib, calib_data=opts.calib_data,
                target=self.target, fp32_path=ctx.fp32_path, ptq_path=int8_path,
                judge=judge_execution(self.target), decision=decision, mode=opts.qat, epochs=opts.qat_epochs,
                lr=opts.qat_lr, batch_size=defaults.QAT_BATCH_SIZE, seed=opts.seed, report=self.report)
        records.calibration = replace(calibration, qat=record)
        if facts is not None:
            records.conversion = read_record(ConversionRecord, facts, name="conversion")

    def _manifest(self, ctx: BuildContext, precision: str, source: SourceRecord, validation: ValidationRecord,
                  records: PrecisionRecords) -> Manifest:
        """One artifact's manifest, assembled from the stages' records."""
        match, size = ctx.loaded.match, ctx.spec.input_size
        return Manifest(
            name=artifact_name(self.opts, precision), arch=match.arch, num_classes=match.num_classes,
            labels=ctx.labels, precision=precision, input=TensorSpec("input", [-1, 3, size, size]),
            output=TensorSpec("logits", [-1, match.num_classes]), preprocess=ctx.spec, source=source,
            versions=library_versions(), validation=validation, accuracy=records.accuracy,
            calibration=records.calibration, conversion=records.conversion,
            variant=VariantRecord(cifar_stem=match.cifar_stem), target=self.target,
            created=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"), trtinfer_version=__version__)

    def _check_fp16(self, fp32_path: Path, outputs: dict[str, Path], eval_set: EvalSet | None,
                    reference: np.ndarray | None) -> None:
        """FP16 that overflows (non-finite or far-off logits) fails here, naming the nodes to keep in FP32."""
        if "fp16" not in outputs or eval_set is None or reference is None:
            return
        from .checks.fp16_overflow import check_fp16
        from .logits import compare, run_onnx

        with self.report.timed("FP16 overflow check on the evaluation images"):
            result = compare(reference, run_onnx(outputs["fp16"], eval_set.x), eval_set.labels)
            check_fp16(fp32_path, outputs["fp16"], eval_set.x, result, reference)

    def _diagnose_calibration(self, fp32_path: Path, calib: CalibrationSet, labels: list[str]) -> dict[str, Any]:
        """The calibration set's diagnostics (``calibration.diagnostics``), said as they are found."""
        from trtinfer.calibration.diagnostics import calibration_diagnostics, describe_diagnostics

        with self.report.timed("calibration diagnostics (class coverage, range spread of two halves)"):
            diag = calibration_diagnostics(fp32_path, calib.x, calib.labels, list(calib.class_names or labels))
        for line in describe_diagnostics(diag):
            (self.report.warn if "too few" in line or "missing" in line else self.report.info)(line)
        return diag

    def _check_executions(self, fp32_path: Path, outputs: dict[str, Path], eval_set: EvalSet,
                          reference: np.ndarray) -> dict[str, dict[str, ExecutionRecord]]:
        """Each CPU execution's accuracy per precision (those with any), for ``load(backend="auto")``
        (:mod:`.checks.execution_accuracy`)."""
        from .checks.execution_accuracy import check_executions, describe

        found = {}
        with self.report.timed("accuracy of each CPU execution (ONNX Runtime, OpenVINO f32/bf16)"):
            for precision in self.opts.precisions:
                path = fp32_path if precision == "fp32" else outputs[precision]
                results = check_executions(precision, path, reference, eval_set.x, eval_set.labels,
                                           self.opts.max_accuracy_drop)
                if results:
                    found[precision] = results
                for line in describe(precision, results):
                    self.report.info(line)
        return found

    # -- engine stage (TensorRT, GPU hosts only) -------------------------------------------
    def _require_engine_stage(self) -> None:
        ok, reason = _engine_available()
        if not ok:
            raise TrtInferError(f"--require-engine: the TensorRT engine stage cannot run here: {reason}",
                                hint="run `trtinfer doctor`, or build the engine later on a GPU host with "
                                     "`trtinfer build --from-onnx DIR`")

    def _engine_stage(self, staged: list[tuple[Path, Manifest]], eval_set: EvalSet | None = None) -> bool:
        """A TensorRT engine into each staged artifact (its manifest in hand); False when this host
        cannot build one (the ONNX artifacts stand alone, finished later with ``--from-onnx``)."""
        ok, reason = _engine_available()
        if not ok:
            self.report.step(f"stopping after the ONNX stage: no TensorRT engine built ({reason}); next: on a GPU host "
                             f"with TensorRT run `trtinfer build --from-onnx DIR` for each artifact")
            return False
        from .engine.artifact import EngineEvaluation, add_engine
        from .engine.settings import EngineBuildSettings

        settings = self.opts.engine or EngineBuildSettings()
        for directory, manifest in staged:
            evaluation = None
            if eval_set is not None:
                evaluation = EngineEvaluation(x=eval_set.x, labels=eval_set.labels, source=eval_set.source,
                                              max_drop=self.opts.max_accuracy_drop,
                                              allow=self.opts.allow_accuracy_drop)
            self.report.step(f"building TensorRT engine for {manifest.name}")
            add_engine(directory, manifest, settings, progress=self.report, evaluation=evaluation)
        return True

    def _print_validation(self, validation: ValidationRecord) -> None:
        for key, r in (("random", validation.random), ("eval", validation.eval)):
            if r is not None:
                acc = ""
                if r.reference_accuracy is not None:
                    acc = f", top-1 accuracy PyTorch {r.reference_accuracy:.2%} / ONNX {r.candidate_accuracy:.2%}"
                self.report.info(f"{key}: {r.samples} inputs, max |diff| {r.max_abs_diff:.2e}, "
                                 f"top-1 agreement {r.top1_agreement:.2%}{acc}")


def _engine_available() -> tuple[bool, str]:
    try:
        from .engine.settings import engine_stage_available
    except ImportError as exc:  # the engine module needs nothing heavy at import, but stay safe
        return False, f"engine module unavailable ({exc})"
    return engine_stage_available()
