"""``trtinfer finetune``: data and options -> a plain ``state_dict`` checkpoint, its card, its curves.

Everything that can be refused is refused before the first step (bad options, data, architecture,
weights, a batch that would not fit in memory, an existing output without ``--force``). The best
epoch's weights are the checkpoint; ``ckpt.resume.pt`` holds the full training state after every
epoch, so an interrupted run continues with ``--resume``, and is removed once the run completes.
"""

from __future__ import annotations

import dataclasses
import os
import platform
from dataclasses import dataclass
from pathlib import Path

import torch

from trtinfer import defaults
from trtinfer._version import __version__
from trtinfer.atomic import atomic_file
from trtinfer.builders.progress import Reporter
from trtinfer.builders.source.card import CheckpointCard, card_path
from trtinfer.cache import cache_root
from trtinfer.errors import TrtInferError
from trtinfer.hashing import sha256_file
from trtinfer.manifest import PreprocessSpec
from trtinfer.preprocess import make_spec

from .curves import plot_curves
from .data import TrainData, check_classes, download_cifar10, load_train_data
from .memory import check_fits
from .model import build_model
from .options import FinetuneOptions, curves_path, resume_path
from .trainer import Trainer, TrainState, pick_device, read_resume_state, training_precision


@dataclass
class FinetuneResult:
    checkpoint: Path
    card: Path
    curves: Path
    val_accuracy: float
    test_accuracy: float | None
    best_epoch: int
    epochs_run: int
    seconds_per_epoch: float


def _spec(options: FinetuneOptions, data: TrainData) -> PreprocessSpec:
    """Input size: given, else the data's native square size (32 for CIFAR), else 224. Normalisation:
    given, else ImageNet's for pretrained weights (their statistics), else the data's own preset."""
    size = options.input_size or data.native_size or defaults.INPUT_SIZE
    normalize = options.normalize or ("imagenet" if options.pretrained else
                                      data.kind if data.kind in ("cifar10", "cifar100") else "imagenet")
    return make_spec(size, normalize)


def _check_output(options: FinetuneOptions) -> None:
    out = options.out
    if out.is_dir():
        raise TrtInferError(f"-o {out} is a directory", hint="pass the checkpoint file to write, e.g. -o resnet18.pth")
    parent = out.parent if str(out.parent) else Path(".")
    if parent.exists() and not os.access(parent, os.W_OK | os.X_OK):
        raise TrtInferError(f"-o {out}: {parent} is not writable", hint="choose another -o")
    if out.exists() and not (options.force or options.resume):
        raise TrtInferError(f"{out} already exists", hint="pass --force to replace it, or --resume to continue its run")
    if options.resume and not os.path.lexists(resume_path(out)):
        raise TrtInferError(f"--resume: {resume_path(out)} not found (no interrupted run of -o {out})",
                            hint="start the run without --resume")


def _save_weights(weights: dict[str, torch.Tensor], path: Path) -> None:
    with atomic_file(path, "wb") as f:
        torch.save(weights, f)


def run_finetune(options: FinetuneOptions, reporter: Reporter | None = None) -> FinetuneResult:
    report = reporter or Reporter()
    o = options.resolved()
    _check_output(o)
    saved = read_resume_state(resume_path(o.out)) if o.resume else None  # a bad state refused before the data is read
    device = pick_device(o.device)
    precision = training_precision(o.precision, device)  # refused here, before any data is read
    data_dir = download_cifar10(cache_root() / "datasets") if o.download else o.data
    assert data_dir is not None
    with report.timed(f"reading training data {data_dir}"):
        data = load_train_data(data_dir, o.val_fraction, o.seed)
    report.info(f"{len(data.train)} training rows, {len(data.val)} validation rows (seeded, class-balanced), "
                f"{len(data.class_names)} classes"
                + (f"; the data's test split ({len(data.test)} rows) is kept for the final report"
                   if data.test is not None else ""))
    spec = _spec(o, data)
    model, start = build_model(o.arch, len(data.class_names), o.cifar_stem, o.weights, o.seed)
    report.info(f"{o.arch}{' with the CIFAR stem' if o.cifar_stem else ''}, {len(data.class_names)}-class head, "
                f"{start.describe()}")
    report.info(f"input {spec.input_size}x{spec.input_size} (resize {spec.resize}), {spec.normalize} normalisation; "
                f"{o.optimizer} lr {o.lr:g} (backbone x{o.backbone_lr_scale:g}), wd {o.weight_decay:g}, {o.schedule}, "
                f"label smoothing {o.label_smoothing:g}, {o.freeze_epochs} frozen epoch(s), batch {o.batch_size}")
    need = check_fits(model, spec.input_size, o.batch_size, o.optimizer, precision.autocast is not None, device,
                      data.largest_pixels())
    report.info(f"{device.type}, {precision.describe()}, channels-last {o.channels_last}; "
                f"about {need / 2**30:.2f} GiB to train")

    sha_placeholder = "0" * 64

    def card_for(state: TrainState, test_accuracy: float | None, sha: str) -> CheckpointCard:
        return CheckpointCard(
            arch=o.arch, num_classes=len(data.class_names), labels=list(data.class_names),
            input_size=spec.input_size, resize=spec.resize, normalize=spec.normalize, mean=list(spec.mean),
            std=list(spec.std), cifar_stem=o.cifar_stem, checkpoint_sha256=sha,
            val_accuracy=round(state.best_accuracy, 6), test_accuracy=test_accuracy,
            history=[r.to_dict() for r in state.history],
            recipe={k: (str(v) if isinstance(v, Path) else v) for k, v in dataclasses.asdict(o).items()
                    if k not in ("out", "force", "resume")} | {"start": start.describe(), "best_epoch": state.best_epoch},
            data={"source": data.source, "kind": data.kind, "train_rows": len(data.train), "val_rows": len(data.val),
                  "test_rows": len(data.test) if data.test is not None else 0},
            trtinfer_version=__version__)

    trainer: Trainer

    def after_epoch(state: TrainState, model: torch.nn.Module) -> None:
        with atomic_file(resume_path(o.out), "wb") as f:
            torch.save(trainer.state_dict(), f)
        plot_curves(state.history, curves_path(o.out), f"{o.arch} on {Path(data.source).name}")

    trainer = Trainer(model, o, spec, data.train, data.val, device, precision, report, on_epoch=after_epoch)
    if saved is not None:
        check_classes(data, int(saved["model"][_head_weight(saved["model"])].shape[0]))
        trainer.load_state_dict(saved)
        report.info(f"resuming after epoch {trainer.state.epoch} of {o.epochs}")
        if trainer.state.epoch >= o.epochs:
            raise TrtInferError(f"the run of -o {o.out} finished all {o.epochs} epochs already",
                                hint="raise --epochs, or start again with --force")
    report.step(f"fine-tuning for {o.epochs} epochs on {device.type}")
    state = trainer.fit()
    assert state.best_weights is not None
    trainer.kept_model.load_state_dict(state.best_weights)
    test_accuracy = None
    if data.test is not None:
        _, test_accuracy = trainer.evaluate(data.test)
        test_accuracy = round(test_accuracy, 6)
    _save_weights({k: v.contiguous() for k, v in trainer.kept_model.float().to("cpu").state_dict().items()}, o.out)
    card = card_for(state, test_accuracy, sha256_file(o.out) if o.out.exists() else sha_placeholder).write(o.out)
    curves = plot_curves(state.history, curves_path(o.out), f"{o.arch} on {Path(data.source).name}")
    resume_path(o.out).unlink(missing_ok=True)
    seconds = sum(r.seconds for r in state.history) / max(1, len(state.history))
    report.info(f"best validation top-1 {100 * state.best_accuracy:.2f}% (epoch {state.best_epoch})"
                + (f"; test top-1 {100 * test_accuracy:.2f}% on {len(data.test)} rows" if test_accuracy is not None
                   and data.test is not None else "") + f"; {seconds:.0f} s per epoch on {platform.machine()}")
    return FinetuneResult(o.out, card, curves, state.best_accuracy, test_accuracy, state.best_epoch,
                          len(state.history), seconds)


def _head_weight(state_dict: dict[str, torch.Tensor]) -> str:
    """The classifier's weight: the last 2-D tensor of the state dict (Linear heads)."""
    return [k for k, v in state_dict.items() if v.ndim == 2][-1]


__all__ = ["FinetuneResult", "run_finetune", "card_path"]
