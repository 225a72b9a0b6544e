"""The manifest's records: the model's tensors and preprocessing, and one frozen record per section
that a build stage writes (the engine's is in :mod:`.engine`).

Each section record writes exactly the JSON the build wrote before these types existed (the same
keys, in the same order, the same keys left out; :class:`.schema.Record`), and is read back and
checked by :class:`.reader.ManifestReader`, field by field. Optional fields are the keys an older
build (or a stage that did not run) leaves out. A section nobody wrote is its record with nothing
in it, written ``{}``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from .schema import JsonObject, Record


@dataclass
class TensorSpec:
    name: str
    shape: list[int]  # -1 marks the dynamic batch dimension
    dtype: str = "float32"


@dataclass
class PreprocessSpec:
    """How raw RGB uint8 images become the model's input; shared by calibration, eval and serving."""

    input_size: int
    resize: int  # shorter side is resized to this, then a centre crop of input_size
    mean: list[float]
    std: list[float]
    normalize: str = "custom"  # preset name, for display
    interpolation: str = "bilinear"
    scale: float = 1.0 / 255.0
    layout: str = "NCHW"
    color: str = "RGB"


# -- source, files, variant -------------------------------------------------------------------

@dataclass(frozen=True)
class CheckpointRecord(Record):
    """The checkpoint the artifact was built from (``source.checkpoint``)."""

    path: str
    file: str
    sha256: str
    format: str
    stripped_prefixes: tuple[str, ...] = ()
    other_keys: tuple[str, ...] = ()


@dataclass(frozen=True)
class SourceRecord(Record):
    """``source``: the checkpoint, and the ``--eval-data`` the checks ran on (null without one)."""

    NULLS = ("eval_data",)

    checkpoint: CheckpointRecord | None = None
    eval_data: str | None = None

    @property
    def checkpoint_sha256(self) -> str | None:
        return self.checkpoint.sha256 if self.checkpoint is not None else None


@dataclass(frozen=True)
class FileRecord(Record):
    """One entry of ``files``: what the named file must hash to and weigh."""

    sha256: str
    bytes: int


@dataclass(frozen=True)
class VariantRecord(Record):
    """``variant``: architecture details beyond the name."""

    cifar_stem: bool | None = None  # 3x3 stride-1 conv1 and no max-pool


# -- validation (the export against PyTorch) ----------------------------------------------------

@dataclass(frozen=True)
class ExportRecord(Record):
    """``validation.export``: how the ONNX model was exported."""

    exporter: str | None = None  # "torchscript" | "dynamo"
    opset: int | None = None
    torch: str | None = None
    onnx: str | None = None
    seconds: float | None = None


@dataclass(frozen=True)
class ExportComparison(Record):
    """``validation.random`` / ``validation.eval``: PyTorch against ONNX Runtime on the same inputs."""

    NULLS = ("reference_accuracy", "candidate_accuracy")

    samples: int | None = None
    max_abs_diff: float | None = None
    mean_abs_diff: float | None = None
    top1_agreement: float | None = None
    tolerance: float | None = None
    non_tie_disagreements: int | None = None
    reference_accuracy: float | None = None  # on labelled inputs only (null on random ones)
    candidate_accuracy: float | None = None
    passed: bool | None = None


@dataclass(frozen=True)
class ValidationRecord(Record):
    """``validation``: the export's facts and its check against PyTorch."""

    export: ExportRecord | None = None
    random: ExportComparison | None = None
    eval: ExportComparison | None = None  # with --eval-data only
    passed: bool | None = None
    atol: float | None = None
    rtol: float | None = None


# -- accuracy (the guard, and each CPU execution) ---------------------------------------------

@dataclass(frozen=True)
class EvalDataRecord(Record):
    """``accuracy.eval``: the labelled rows the guard ran on."""

    source: str | None = None
    split: str | None = None
    count: int | None = None
    sha256: str | None = None
    warnings: tuple[str, ...] | None = None


@dataclass(frozen=True)
class ExecutionRecord(Record):
    """One entry of ``accuracy.executions``: an execution's figures and verdict, or why it was skipped."""

    skipped: str | None = None
    samples: int | None = None
    top1_reference: float | None = None
    top1: float | None = None
    top1_drop_points: float | None = None
    top1_agreement: float | None = None
    max_abs_diff: float | None = None
    mean_abs_diff: float | None = None
    finite: bool | None = None
    max_drop_points: float | None = None
    passed: bool | None = None


@dataclass(frozen=True)
class AccuracyRecord(Record):
    """``accuracy``: the accuracy guard on ``--eval-data`` (``checked``; ``reason`` when it did not run).

    FP32 records its top-1 only; a reduced precision its figures against FP32 (fractions; the drop
    in points), the allowance, the verdict, the execution that judged it and the rows it ran on.
    """

    checked: bool | None = None
    reason: str | None = None
    samples: int | None = None
    top1_reference: float | None = None
    top1: float | None = None
    top1_drop_points: float | None = None
    top1_agreement: float | None = None
    max_abs_diff: float | None = None
    mean_abs_diff: float | None = None
    finite: bool | None = None
    max_drop_points: float | None = None
    passed: bool | None = None
    allowed: bool | None = None  # failed, kept by --allow-accuracy-drop
    execution: str | None = None
    eval: EvalDataRecord | None = None
    executions: Mapping[str, ExecutionRecord] | None = None  # for load(backend="auto")


# -- calibration and the INT8 choice ------------------------------------------------------------

@dataclass(frozen=True)
class SelectionSliceRecord(Record):
    """``calibration.choice.slice``: the held-out train rows the INT8 choice was judged on."""

    source: str | None = None
    split: str | None = None
    rows: int | None = None
    held_out_of_calibration: bool | None = None
    fp32_top1: float | None = None


@dataclass(frozen=True)
class MethodTrialRecord(Record):
    """One entry of ``calibration.choice.methods``: a calibration method, judged on the slice."""

    method: str | None = None
    excluded: int | None = None
    top1_agreement: float | None = None
    top1: float | None = None
    top1_drop_points: float | None = None
    drop_se_points: float | None = None
    logit_mse: float | None = None
    seconds: float | None = None


@dataclass(frozen=True)
class LayerRankRecord(Record):
    """One entry of ``calibration.choice.fallback.ranking``."""

    node: str | None = None
    mse_recovered: float | None = None
    compute_share: float | None = None


@dataclass(frozen=True)
class FallbackStepRecord(Record):
    """One entry of ``calibration.choice.fallback.steps``."""

    excluded: int | None = None
    top1_drop_points: float | None = None
    top1_agreement: float | None = None


@dataclass(frozen=True)
class FallbackRecord(Record):
    """``calibration.choice.fallback``: the layers kept in float (``ran``), or why not (``reason``)."""

    ran: bool
    reason: str | None = None
    ranked_on: str | None = None
    quantized_layers: int | None = None
    budget: int | None = None
    ranking: tuple[LayerRankRecord, ...] | None = None
    steps: tuple[FallbackStepRecord, ...] | None = None
    excluded_nodes: tuple[str, ...] | None = None
    float_compute_share: float | None = None
    drop_before_points: float | None = None
    drop_after_points: float | None = None
    drop_after_se_points: float | None = None
    passed: bool | None = None


@dataclass(frozen=True)
class Int8ChoiceRecord(Record):
    """``calibration.choice``: the INT8 method measured and chosen (``ran``), or the one used and why."""

    ran: bool
    judged_on: str | None = None
    slice: SelectionSliceRecord | None = None
    methods: tuple[MethodTrialRecord, ...] | None = None
    method: str | None = None
    reason: str | None = None  # why nothing was chosen (not ran)
    why: str | None = None  # why this method (ran)
    fallback: FallbackRecord | None = None
    refused: tuple[str, ...] | None = None  # schema 4: methods passed over as the target's runtime cannot run them


@dataclass(frozen=True)
class QatEpochRecord(Record):
    """One epoch of ``calibration.qat``: training loss and top-1 (augmented), and on the held-out rows."""

    epoch: int
    train_loss: float
    train_accuracy: float
    val_loss: float
    val_accuracy: float
    seconds: float


@dataclass(frozen=True)
class QatRecord(Record):
    """``calibration.qat`` (schema 4): quantization-aware fine-tuning, whether it ran and why, its recipe and
    data, and the top-1 drop against FP32 on rows held out of it, before (post-training INT8) and after."""

    ran: bool
    reason: str | None = None
    kept: bool | None = None  # the stored INT8 model is the fine-tuned one
    tool: str | None = None
    version: str | None = None
    epochs: int | None = None
    learning_rate: float | None = None
    batch_size: int | None = None
    train_source: str | None = None
    train_rows: int | None = None
    val_rows: int | None = None
    drop_before_points: float | None = None
    drop_after_points: float | None = None
    seconds: float | None = None
    history: tuple[QatEpochRecord, ...] | None = None
    curves: str | None = None  # the PNG beside the model, listed in ``files``


@dataclass(frozen=True)
class CalibrationRecord(Record):
    """``calibration``: the calibration set (its own summary), the INT8 method and tool, the choice,
    and the diagnostics of the set.

    ``diagnostics`` stays a JSON object: :mod:`trtinfer.calibration.diagnostics` writes and
    describes it, and ``inspect`` shows a block from another version raw rather than failing.
    """

    format_version: int | None = None
    count: int | None = None
    shape: tuple[int, ...] | None = None
    dtype: str | None = None
    sha256: str | None = None
    source: str | None = None
    source_kind: str | None = None
    split: str | None = None
    seed: int | None = None
    balanced: bool | None = None
    per_class: Mapping[str, int] | None = None
    transform: PreprocessSpec | None = None
    warnings: tuple[str, ...] | None = None
    file: str | None = None  # a saved calibration set (--calib-set)
    method: str | None = None
    quantizer: str | None = None
    choice: Int8ChoiceRecord | None = None
    diagnostics: JsonObject | None = None
    qat: QatRecord | None = None


# -- conversion (the FP16 / INT8 tool's facts) --------------------------------------------------

@dataclass(frozen=True)
class IoTypesRecord(Record):
    """``conversion.io_types``: the converted model's input and output element types by name."""

    inputs: Mapping[str, str] | None = None
    outputs: Mapping[str, str] | None = None


@dataclass(frozen=True)
class ConversionRecord(Record):
    """``conversion``: what the precision tool did. One record for every tool, each filling its own
    fields (the order interleaves them so each tool's keys keep the order it wrote them in):
    ModelOpt AutoCast (FP16), ModelOpt and NNCF quantization (INT8)."""

    tool: str | None = None
    version: str | None = None
    precision: str | None = None
    keep_io_types: bool | None = None  # AutoCast
    data_max: float | None = None  # AutoCast
    reference_data: str | None = None  # AutoCast
    method: str | None = None  # INT8
    preset: str | None = None  # NNCF
    activation_range_estimator: str | None = None  # NNCF
    target_device: str | None = None  # NNCF
    bias_correction: str | None = None  # NNCF
    calibration_images: int | None = None  # INT8
    calibration_batch: int | None = None  # INT8
    weights: str | None = None  # ModelOpt INT8
    activations: str | None = None  # ModelOpt INT8
    high_precision: str | None = None  # ModelOpt INT8
    nodes_fp16: int | None = None  # AutoCast
    nodes_fp32: int | None = None  # AutoCast
    cast_nodes: int | None = None  # AutoCast
    fp32_op_types: Mapping[str, int] | None = None  # AutoCast
    quantize_linear: int | None = None  # INT8
    dequantize_linear: int | None = None  # INT8
    quantized_ops: Mapping[str, int] | None = None  # INT8
    unquantized_compute_ops: tuple[str, ...] | None = None  # INT8
    opset_in: int | None = None
    opset_out: int | None = None
    io_types: IoTypesRecord | None = None
    nodes_excluded: tuple[str, ...] | None = None
    op_types_excluded: tuple[str, ...] | None = None
    notes: tuple[str, ...] | None = None
    seconds: float | None = None
