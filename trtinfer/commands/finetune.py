"""``trtinfer finetune``: fine-tune (or train) a torchvision classifier on CIFAR or an image folder."""

from __future__ import annotations

from pathlib import Path

import click

from trtinfer import defaults
from trtinfer.training.options import LR, OPTIMIZERS, SCHEDULES, WEIGHT_DECAY
from trtinfer.training.options import FinetuneOptions as D  # the recipe's defaults, said once (no torch import)


@click.command("finetune")
@click.option("--arch", required=True, help="torchvision architecture, e.g. resnet18, resnet50, mobilenet_v3_small.")
@click.option("--data", type=click.Path(path_type=Path),
              help="Training data: a CIFAR-10/100 python folder (or its parent) or an image folder (class sub-folders).")
@click.option("--download", is_flag=True, help="Fetch the full CIFAR-10 through torchvision into trtinfer's cache.")
@click.option("-o", "--out", required=True, type=click.Path(path_type=Path),
              help="Checkpoint to write (a plain state_dict); its card (.trtinfer.json) and curves (.curves.png) beside it.")
@click.option("--epochs", default=D.epochs, show_default=True, type=click.IntRange(1))
@click.option("--batch-size", default=D.batch_size, show_default=True, type=click.IntRange(1))
@click.option("--input-size", type=click.IntRange(*defaults.INPUT_SIZE_RANGE),
              help="Training size: 32 native for CIFAR, or e.g. 224 upsampled as the tutorials do "
                   "[default: the data's native size, 224 for image folders].")
@click.option("--normalize", type=click.Choice(defaults.NORMALIZE_PRESETS),
              help="[default: imagenet with pretrained weights, else the data's preset]")
@click.option("--cifar-stem", is_flag=True, help="ResNets: 3x3 stride-1 conv1 and no max-pool (the CIFAR variant).")
@click.option("--weights", metavar="imagenet|PATH",
              help="Start from torchvision's ImageNet weights (downloaded) or a local file [default: from scratch].")
@click.option("--optimizer", type=click.Choice(OPTIMIZERS), default=D.optimizer, show_default=True,
              help="AdamW, or SGD with Nesterov momentum.")
@click.option("--lr", type=click.FloatRange(0, min_open=True), help=f"Peak learning rate [default: {LR['sgd']:g} SGD, {LR['adamw']:g} AdamW].")
@click.option("--weight-decay", type=click.FloatRange(0), help=f"[default: {WEIGHT_DECAY['sgd']:g} SGD, {WEIGHT_DECAY['adamw']:g} AdamW]")
@click.option("--schedule", type=click.Choice(SCHEDULES), default=D.schedule, show_default=True)
@click.option("--warmup-epochs", type=click.FloatRange(0), default=D.warmup_epochs, show_default=True)
@click.option("--label-smoothing", type=click.FloatRange(0, 1, max_open=True), default=D.label_smoothing,
              show_default=True)
@click.option("--freeze-epochs", type=click.IntRange(0),
              help="Epochs with a frozen backbone (head only) first [default: 1 with --weights, else 0].")
@click.option("--backbone-lr-scale", type=click.FloatRange(0, min_open=True),
              help="Backbone learning rate / head learning rate after the freeze [default: 0.1 with --weights, else 1].")
@click.option("--ema-decay", type=click.FloatRange(0, 1, max_open=True), default=D.ema_decay, show_default=True,
              help="Keep an exponential moving average of the weights per step, validated and saved (0: off).")
@click.option("--mixup", type=click.FloatRange(0), default=D.mixup, help="Mixup alpha (0: off).")
@click.option("--cutmix", type=click.FloatRange(0), default=D.cutmix, help="CutMix alpha (0: off).")
@click.option("--val-fraction", type=click.FloatRange(0, 0.5, min_open=True, max_open=True),
              default=D.val_fraction, show_default=True, help="Training rows held out for validation (per class).")
@click.option("--patience", type=click.IntRange(1), help="Stop after N epochs without a better validation top-1.")
@click.option("--resume", is_flag=True, help="Continue the interrupted run of -o (its .resume.pt).")
@click.option("--seed", default=D.seed, show_default=True, type=click.IntRange(*defaults.SEED_RANGE),
              help="Makes a CPU run repeat exactly (on the same number of threads).")
@click.option("--precision", type=click.Choice(("auto", "fp32", "bf16", "fp16")), default=D.precision, show_default=True,
              help="auto: bfloat16 autocast on CPUs with AVX-512 BF16/AMX and on GPUs with bfloat16, float16 with "
                   "loss scaling on other GPUs, float32 otherwise (the choice is printed). fp16: CUDA only.")
@click.option("--device", default=D.device, show_default=True, help="auto, cpu or cuda[:N].")
@click.option("--force", is_flag=True, help="Replace an existing -o.")
@click.option("-q", "--quiet", is_flag=True, help="Only warnings and errors.")
def finetune(quiet: bool, **kwargs: object) -> None:
    """Fine-tune ARCH on --data (or train it from scratch) into a checkpoint `trtinfer build` reads with no flags."""
    from trtinfer.builders.progress import Reporter
    from trtinfer.training.finetune import run_finetune
    from trtinfer.training.options import FinetuneOptions

    result = run_finetune(FinetuneOptions(**kwargs), Reporter(quiet=quiet))  # type: ignore[arg-type]
    click.echo(str(result.checkpoint))
    click.echo(str(result.card))
    click.echo(str(result.curves))
