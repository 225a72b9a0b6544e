"""The model and data options that ``trtinfer build`` and ``trtinfer bench`` share, declared once.

Usage::

    @click.command()
    @model_options
    @data_options
    def build(**kwargs):
        ...  # kwargs hold the values under the names of :class:`BuildOptions` fields

Defaults live in :mod:`trtinfer.defaults` (constants only), so ``--help`` needs no torch; the
preprocessing options are shared with ``trtinfer calib make`` (:func:`preprocess_options`), so both
parse and check ``--input-size``, ``--resize``, ``--normalize`` and ``--mean``/``--std`` one way.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from .. import defaults
from ..manifest import TARGETS

F = TypeVar("F", bound=Callable[..., Any])

CALIB_METHODS = ("entropy", "max", "performance", "mixed", "mean_minmax")  # the INT8 tools' methods (a test holds them)

MODEL_OPTION_NAMES = ("arch", "trust_checkpoint", "input_size", "resize", "normalize", "mean", "std", "labels")
DATA_OPTION_NAMES = ("eval_data", "eval_samples", "calib_data", "calib_samples", "calib_method", "seed", "quantizer",
                     "target", "fallback", "max_accuracy_drop", "qat", "qat_epochs", "qat_lr")


def _floats(ctx: click.Context, param: click.Parameter, value: str | None) -> tuple[float, ...] | None:
    if value is None:
        return None
    try:
        return tuple(float(v) for v in value.replace(" ", "").split(",") if v)
    except ValueError:
        raise click.BadParameter("expected comma-separated numbers, e.g. 0.485,0.456,0.406") from None


def _apply(f: F, options: list[Callable[[F], F]]) -> F:
    for option in reversed(options):
        f = option(f)
    return f


def preprocess_options(input_size_required: bool = False) -> Callable[[F], F]:
    """--input-size, --resize, --normalize, --mean/--std: declared once for ``build``, ``bench`` and
    ``calib make`` (``make_spec`` checks how they combine)."""
    size_help = ("Square input size the model was trained at, e.g. 32 or 224." if input_size_required else
                 f"Square input size (default {defaults.INPUT_SIZE}; {defaults.CIFAR_INPUT_SIZE} for a CIFAR-stem ResNet).")
    normalize_help = (f"Normalization preset [default: {defaults.NORMALIZE}]." if input_size_required else
                      f"Normalization preset (default {defaults.NORMALIZE}; cifar10 for a CIFAR-stem ResNet).")

    def decorate(f: F) -> F:
        return _apply(f, [
            click.option("--input-size", type=click.IntRange(*defaults.INPUT_SIZE_RANGE), required=input_size_required,
                         help=size_help),
            click.option("--resize", type=click.IntRange(*defaults.RESIZE_RANGE),
                         help="Resize the shorter side to this before the centre crop (default: --input-size)."),
            click.option("--normalize", type=click.Choice(defaults.NORMALIZE_PRESETS), help=normalize_help),
            click.option("--mean", callback=_floats,
                         help="Per-channel mean, e.g. 0.5,0.5,0.5 (with --std; overrides --normalize)."),
            click.option("--std", callback=_floats, help="Per-channel std, e.g. 0.5,0.5,0.5."),
        ])

    return decorate


def model_options(f: F) -> F:
    """--arch, --trust-checkpoint, the preprocessing options, --labels."""
    f = click.option("--labels", metavar="SET|FILE",
                     help="cifar10, cifar100, imagenet or a file with one class name per line.")(f)
    f = preprocess_options()(f)
    return _apply(f, [
        click.option("--arch", help="torchvision architecture, or timm:NAME for a timm model (default: inferred "
                                    "from the weights; Hugging Face directories say it in config.json)."),
        click.option("--trust-checkpoint", is_flag=True,
                     help="Allow checkpoints that run code when loaded (torch.save(model), TorchScript). "
                          "Only for files you trust."),
    ])


def data_options(f: F) -> F:
    """--eval-data, --eval-samples, --calib-data, --calib-samples, --calib-method, --seed, --quantizer,
    --target, --max-accuracy-drop, --no-fallback, --qat, --qat-epochs, --qat-lr."""
    return _apply(f, [
        click.option("--eval-data", type=click.Path(path_type=Path),
                     help="Labelled data (CIFAR folder or its parent, image folder, .npz) for validation and accuracy."),
        click.option("--eval-samples", type=click.IntRange(1),
                     help="Evaluate on a class-balanced subset of N test images (seeded by --seed)."),
        click.option("--calib-data", type=click.Path(path_type=Path),
                     help="Data to draw the INT8 calibration set from (training split)."),
        click.option("--calib-samples", type=click.IntRange(1), default=defaults.CALIB_SAMPLES, show_default=True,
                     help="Calibration images drawn from --calib-data."),
        click.option("--calib-method", type=click.Choice(CALIB_METHODS),
                     help="INT8 calibration method (ModelOpt: entropy, max; NNCF: performance, mixed, mean_minmax). "
                          "Default: each one, the best kept by top-1 agreement with FP32 on held-out train rows."),
        click.option("--seed", type=click.IntRange(*defaults.SEED_RANGE), default=defaults.SEED, show_default=True,
                     help="Seed for the calibration draw."),
        click.option("--quantizer", type=click.Choice(defaults.QUANTIZERS), default=defaults.QUANTIZER,
                     show_default=True,
                     help="INT8 quantizer: nncf for CPU targets, modelopt for TensorRT (auto follows --target)."),
        click.option("--target", type=click.Choice(TARGETS),
                     help="Where the artifact runs (default: gpu where TensorRT and a GPU are present, else cpu)."),
        click.option("--max-accuracy-drop", type=float,
                     help=f"Largest allowed top-1 drop in points vs FP32 (default {defaults.FP16_MAX_DROP} for FP16, "
                          f"{defaults.INT8_MAX_DROP} for INT8)."),
        click.option("--fallback/--no-fallback", default=True, show_default=True,
                     help="Keep the most sensitive INT8 layers in float when the drop exceeds the allowance."),
        click.option("--qat", type=click.Choice(defaults.QAT_MODES), default=defaults.QAT, show_default=True,
                     help="Quantization-aware fine-tuning of the INT8 model on --calib-data's training rows: on, or "
                          "auto (only when post-training INT8 and the fallback miss the allowance on held-out rows)."),
        click.option("--qat-epochs", type=click.IntRange(1, 100), default=defaults.QAT_EPOCHS, show_default=True,
                     help="Epochs of the quantization-aware fine-tune."),
        click.option("--qat-lr", type=click.FloatRange(min=0, min_open=True, max=1), default=defaults.QAT_LR,
                     show_default=True, help="Peak learning rate of the fine-tune (SGD, cosine schedule)."),
    ])


def pop_options(kwargs: dict[str, Any], names: tuple[str, ...]) -> dict[str, Any]:
    """Remove ``names`` from a command's kwargs and return them (BuildOptions field names)."""
    return {name: kwargs.pop(name) for name in names if name in kwargs}
