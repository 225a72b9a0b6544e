"""What one ``trtinfer finetune`` is asked to do: :class:`FinetuneOptions`, defaults said once.

The CLI builds its options from these fields' defaults, the Python API takes the record itself.
Defaults that depend on the start (pretrained weights or not) are ``None`` here and resolved by
:meth:`FinetuneOptions.resolved`: a frozen-backbone warm-up and a 10x lower backbone learning rate
only make sense for pretrained weights.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

from trtinfer import defaults
from trtinfer.errors import TrtInferError

OPTIMIZERS = ("sgd", "adamw")
SCHEDULES = ("onecycle", "cosine")
WEIGHTS_IMAGENET = "imagenet"
#: Peak learning rate per optimizer (SGD: the CIFAR ResNet recipes' 0.1; AdamW: 1e-3).
LR = {"sgd": 0.1, "adamw": 1e-3}
WEIGHT_DECAY = {"sgd": 5e-4, "adamw": 0.05}


@dataclass(frozen=True)
class FinetuneOptions:
    arch: str
    out: Path
    data: Path | None = None
    download: bool = False
    epochs: int = 15
    batch_size: int = 64  # 66 steps per epoch on 4,194 rows; 128 (33 steps) trailed it at every epoch measured
    input_size: int | None = None  # None: the data's native size (32 for CIFAR), 224 for image folders
    normalize: str | None = None  # None: imagenet with pretrained weights, else the data's preset
    cifar_stem: bool = False
    weights: str | None = None  # "imagenet" or a local file; None: from scratch
    # AdamW: from scratch on the 4,194 shared rows its validation top-1 beat SGD's at every epoch; test
    # top-1 after 15 epochs 71.5 % (70.7 % on one thread) vs SGD's 68.8 % at lr 0.1 and 67.9 % at lr 0.05.
    # A 15-epoch run is still fitting at the end, and Adam's per-parameter steps fit faster.
    optimizer: str = "adamw"
    lr: float | None = None  # None: LR[optimizer]
    weight_decay: float | None = None  # None: WEIGHT_DECAY[optimizer]
    momentum: float = 0.9
    schedule: str = "onecycle"
    warmup_epochs: float = 3.0  # one-cycle's rise: 1 epoch diverged early (loss 3.6 in epoch 1)
    label_smoothing: float = 0.1
    freeze_epochs: int | None = None  # None: 1 with pretrained weights, else 0
    backbone_lr_scale: float | None = None  # None: 0.1 with pretrained weights, else 1
    ema_decay: float = 0.99  # moving average of the weights per step (0: off); validated and kept
    mixup: float = 0.0  # Beta(alpha, alpha) mixing; 0 = off
    cutmix: float = 0.0
    val_fraction: float = 0.1
    patience: int | None = None
    resume: bool = False
    seed: int = 0
    channels_last: bool = True
    precision: str = "auto"  # auto | fp32 | bf16 | fp16: trainer.choose_precision decides and says why
    device: str = "auto"
    force: bool = False

    def __post_init__(self) -> None:
        checks = (("--epochs", self.epochs, 1), ("--batch-size", self.batch_size, 1))
        for flag, value, low in checks:
            if value < low:
                raise TrtInferError(f"{flag} {value} must be at least {low}")
        if self.optimizer not in OPTIMIZERS:
            raise TrtInferError(f"--optimizer {self.optimizer} is not one of {', '.join(OPTIMIZERS)}")
        if self.schedule not in SCHEDULES:
            raise TrtInferError(f"--schedule {self.schedule} is not one of {', '.join(SCHEDULES)}")
        low, high = defaults.SEED_RANGE
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or not low <= self.seed <= high:
            raise TrtInferError(f"--seed {self.seed} must be in {low}..{high}", hint="numpy and torch take no other seeds")
        if not 0 < self.val_fraction < 0.5:
            raise TrtInferError(f"--val-fraction {self.val_fraction} must be between 0 and 0.5")
        if not 0 <= self.ema_decay < 1:
            raise TrtInferError(f"--ema-decay {self.ema_decay} must be in [0, 1)", hint="e.g. 0.99; 0 turns it off")
        if not 0 <= self.label_smoothing < 1:
            raise TrtInferError(f"--label-smoothing {self.label_smoothing} must be in [0, 1)")
        if self.freeze_epochs is not None and not 0 <= self.freeze_epochs <= self.epochs:
            raise TrtInferError(f"--freeze-epochs {self.freeze_epochs} must be between 0 and --epochs {self.epochs}")
        if self.download and self.data is not None:
            raise TrtInferError("pass either --data DIR or --download, not both",
                                hint="--download fetches the full CIFAR-10 into trtinfer's own cache folder")
        if not self.download and self.data is None:
            raise TrtInferError("no training data", hint="pass --data DIR (CIFAR folder or its parent, image "
                                                         "folder) or --download for the full CIFAR-10")

    @property
    def pretrained(self) -> bool:
        return self.weights is not None

    def resolved(self) -> FinetuneOptions:
        """The options with every start-dependent default filled in."""
        return dataclasses.replace(
            self,
            lr=self.lr if self.lr is not None else LR[self.optimizer],
            weight_decay=self.weight_decay if self.weight_decay is not None else WEIGHT_DECAY[self.optimizer],
            freeze_epochs=self.freeze_epochs if self.freeze_epochs is not None else (1 if self.pretrained else 0),
            backbone_lr_scale=(self.backbone_lr_scale if self.backbone_lr_scale is not None
                               else (0.1 if self.pretrained else 1.0)),
        )


def curves_path(checkpoint: Path) -> Path:
    return checkpoint.with_name(checkpoint.stem + ".curves.png")


def resume_path(checkpoint: Path) -> Path:
    """The training state written after every epoch (model, optimizer, schedule, RNG, history)."""
    return checkpoint.with_name(checkpoint.stem + ".resume.pt")
