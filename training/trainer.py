"""The fine-tuning loop: the recipe the field uses, written once.

Frozen backbone for ``freeze_epochs`` (head only), then everything, the backbone at
``backbone_lr_scale`` x the head's learning rate; SGD with Nesterov momentum or AdamW (no weight decay
on BatchNorm and biases); one-cycle or cosine with linear warm-up, stepped per batch; label smoothing;
optional mixup / cutmix; an exponential moving average of the weights (``ema_decay``: what is
validated and kept); channels-last; bfloat16 autocast on CPUs that support it, mixed precision on
CUDA. The best epoch on the validation split is the checkpoint; ``patience`` stops a run that no
longer improves; the full training state is saved after every epoch so ``resume`` continues exactly.
All randomness comes from one seeded ``torch.Generator`` (and torch's global seed for dropout), so a
run on the CPU repeats bit for bit (on the same number of threads: oneDNN splits its sums by thread).
"""

from __future__ import annotations

import dataclasses
import math
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from trtinfer.builders.progress import Reporter
from trtinfer.calibration.cifar import LabeledImages
from trtinfer.errors import TrtInferError
from trtinfer.manifest import PreprocessSpec

from .data import batches
from .model import head_parameters, set_backbone_frozen
from .options import FinetuneOptions

RESUME_VERSION = 1


@dataclass
class EpochResult:
    epoch: int
    train_loss: float
    train_accuracy: float
    val_loss: float
    val_accuracy: float
    lr: float
    seconds: float
    frozen: bool

    def to_dict(self) -> dict[str, Any]:
        return {k: (round(v, 6) if isinstance(v, float) else v) for k, v in self.__dict__.items()}


@dataclass
class TrainState:
    """Everything ``--resume`` needs: weights, optimizer, schedule position, RNG, history, best so far."""

    epoch: int = 0
    history: list[EpochResult] = field(default_factory=list)
    best_accuracy: float = -1.0
    best_epoch: int = 0
    best_weights: dict[str, torch.Tensor] | None = None


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise TrtInferError(f"--device {name}: no CUDA device here", hint="use --device cpu (or auto)")
    return device


def cpu_supports_bf16() -> bool:
    """AVX-512 BF16 or AMX, usable by the kernels (not held below them by ``ONEDNN_MAX_CPU_ISA``): where
    bfloat16 autocast speeds training up rather than emulating it."""
    from trtinfer.cpu_info import cpu_info

    return cpu_info().has_bf16


@dataclass(frozen=True)
class TrainPrecision:
    """The arithmetic a run trains in, and why: ``autocast`` None is float32; ``loss_scaling`` is float16's
    GradScaler (CUDA only)."""

    autocast: torch.dtype | None
    loss_scaling: bool
    why: str

    def describe(self) -> str:
        name = "float32" if self.autocast is None else f"{str(self.autocast).replace('torch.', '')} autocast"
        return f"{name}{' with loss scaling' if self.loss_scaling else ''} ({self.why})"


def choose_precision(asked: str, device_type: str, cuda_bf16: bool, cpu_bf16: bool) -> TrainPrecision:
    """``--precision`` on this device, decided from facts alone (no device is touched here). What is asked
    for is what runs, or it is refused with one line: bf16 on a GPU without bfloat16 never becomes
    float16 silently; auto says what it chose."""
    if asked == "fp32":
        return TrainPrecision(None, False, "--precision fp32")
    if device_type == "cuda":
        if asked == "bf16":
            if not cuda_bf16:
                raise TrtInferError("--precision bf16: this GPU has no bfloat16 support",
                                    hint="use --precision fp16 (float16 with loss scaling), auto or fp32")
            return TrainPrecision(torch.bfloat16, False, "--precision bf16")
        if asked == "fp16":
            return TrainPrecision(torch.float16, True, "--precision fp16")
        if cuda_bf16:
            return TrainPrecision(torch.bfloat16, False, "auto: this GPU supports bfloat16")
        return TrainPrecision(torch.float16, True, "auto: this GPU has no bfloat16")
    if asked == "fp16":
        raise TrtInferError(f"--precision fp16 trains on CUDA GPUs only, not on the {device_type}",
                            hint="use --precision bf16, auto or fp32 on a CPU")
    if asked == "bf16":
        return TrainPrecision(torch.bfloat16, False, "--precision bf16" + (
            "" if cpu_bf16 else "; this CPU has no AVX-512 BF16/AMX, so it is emulated and slower than float32"))
    if cpu_bf16:
        return TrainPrecision(torch.bfloat16, False, "auto: the CPU has AVX-512 BF16/AMX")
    return TrainPrecision(None, False, "auto: the CPU has no native bfloat16")


def training_precision(asked: str, device: torch.device) -> TrainPrecision:
    """:func:`choose_precision` with this host's facts."""
    cuda_bf16 = device.type == "cuda" and bool(torch.cuda.is_bf16_supported(including_emulation=False))
    return choose_precision(asked, device.type, cuda_bf16, device.type == "cpu" and cpu_supports_bf16())


class Trainer:
    """One fine-tuning run of ``model`` on ``train`` / ``val`` with the recipe in ``options`` (resolved), in the
    arithmetic ``precision`` says."""

    def __init__(self, model: nn.Module, options: FinetuneOptions, spec: PreprocessSpec, train: LabeledImages,
                 val: LabeledImages, device: torch.device, precision: TrainPrecision, reporter: Reporter,
                 on_epoch: Callable[[TrainState, nn.Module], None] | None = None) -> None:
        self.o = options
        self.spec, self.train_data, self.val_data = spec, train, val
        self.device, self.report, self.on_epoch = device, reporter, on_epoch
        self.model = model.to(device)
        if options.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.precision = precision  # decided once, before the data is read (training_precision)
        self.amp = self.precision.autocast
        self.scaler = torch.amp.GradScaler("cuda") if self.precision.loss_scaling else None
        self.generator = torch.Generator().manual_seed(options.seed)
        torch.manual_seed(options.seed)
        full, rest = divmod(len(train), options.batch_size)
        self.steps_per_epoch = max(1, full + (1 if rest >= 2 else 0))  # data.batches skips a batch of one
        self.optimizer = self._optimizer()
        self.scheduler = self._scheduler()
        self.ema = self._ema()
        self.state = TrainState()

    # -- recipe ------------------------------------------------------------------------------------
    def _optimizer(self) -> torch.optim.Optimizer:
        o = self.o
        assert o.lr is not None and o.weight_decay is not None and o.backbone_lr_scale is not None
        backbone, head = head_parameters(self.model)
        groups = []
        for params, scale in ((backbone, o.backbone_lr_scale), (head, 1.0)):
            decay = [p for p in params if p.ndim > 1]
            plain = [p for p in params if p.ndim <= 1]  # BatchNorm weights and biases: no weight decay
            groups += [{"params": decay, "weight_decay": o.weight_decay, "lr": o.lr * scale},
                       {"params": plain, "weight_decay": 0.0, "lr": o.lr * scale}]
        groups = [g for g in groups if g["params"]]
        if o.optimizer == "sgd":
            return torch.optim.SGD(groups, lr=o.lr, momentum=o.momentum, nesterov=o.momentum > 0)
        return torch.optim.AdamW(groups, lr=o.lr)

    def _ema(self) -> torch.optim.swa_utils.AveragedModel | None:
        """The weights' moving average, BatchNorm statistics included (torch's swa_utils). Its decay warms
        up as (1 + n) / (10 + n) over the first steps, so a short run's average is not mostly the
        random start."""
        if not self.o.ema_decay:
            return None
        from torch.optim.swa_utils import AveragedModel

        decay = self.o.ema_decay

        def update(averaged: tuple[torch.Tensor, ...] | list[torch.Tensor],
                   current: tuple[torch.Tensor, ...] | list[torch.Tensor], num_averaged: torch.Tensor | int) -> None:
            n = int(num_averaged)
            weight = 1.0 - min(decay, (1 + n) / (10 + n))
            for avg, cur in zip(averaged, current):
                if avg.is_floating_point():
                    avg.lerp_(cur.to(avg.dtype), weight)
                else:  # BatchNorm's num_batches_tracked
                    avg.copy_(cur)

        return AveragedModel(self.model, multi_avg_fn=update, use_buffers=True)

    @property
    def kept_model(self) -> nn.Module:
        """The model validated and saved: the moving average when there is one."""
        return self.ema.module if self.ema is not None else self.model

    def _scheduler(self) -> torch.optim.lr_scheduler.LRScheduler:
        o = self.o
        total = o.epochs * self.steps_per_epoch
        peaks = [g["lr"] for g in self.optimizer.param_groups]
        if o.schedule == "onecycle":
            warm = min(0.5, max(1.0, o.warmup_epochs * self.steps_per_epoch) / total)
            return torch.optim.lr_scheduler.OneCycleLR(self.optimizer, max_lr=peaks, total_steps=total,
                                                       pct_start=warm, anneal_strategy="cos",
                                                       div_factor=25.0, final_div_factor=1e3)
        warm_steps = int(o.warmup_epochs * self.steps_per_epoch)

        def factor(step: int) -> float:
            if step < warm_steps:
                return (step + 1) / warm_steps
            progress = (step - warm_steps) / max(1, total - warm_steps)
            return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

        return torch.optim.lr_scheduler.LambdaLR(self.optimizer, factor)

    def _mix(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, float]:
        """Mixup or cutmix (one of them per batch when both are on): inputs, both targets, the weight."""
        o = self.o
        choices = [name for name, alpha in (("mixup", o.mixup), ("cutmix", o.cutmix)) if alpha > 0]
        if not choices:
            return x, y, y, 1.0
        name = choices[int(torch.randint(len(choices), (1,), generator=self.generator))]
        alpha = o.mixup if name == "mixup" else o.cutmix
        lam = float(torch.distributions.Beta(alpha, alpha).sample()) if alpha else 1.0
        perm = torch.randperm(len(x), generator=self.generator).to(x.device)
        if name == "mixup":
            return lam * x + (1 - lam) * x[perm], y, y[perm], lam
        h, w = x.shape[-2:]
        cut = math.sqrt(1 - lam)
        ch, cw = int(h * cut), int(w * cut)
        cy, cx = (int(v) for v in torch.randint(0, max(1, h), (1,), generator=self.generator).tolist()
                  + torch.randint(0, max(1, w), (1,), generator=self.generator).tolist())
        y0, y1, x0, x1 = max(cy - ch // 2, 0), min(cy + ch // 2, h), max(cx - cw // 2, 0), min(cx + cw // 2, w)
        x = x.clone()
        x[:, :, y0:y1, x0:x1] = x[perm, :, y0:y1, x0:x1]
        return x, y, y[perm], 1 - (y1 - y0) * (x1 - x0) / (h * w)

    # -- loop --------------------------------------------------------------------------------------
    def _autocast(self) -> Any:
        if self.amp is None:
            return torch.autocast(self.device.type, enabled=False)
        return torch.autocast(self.device.type, dtype=self.amp)

    def _to_device(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = x.to(self.device, non_blocking=True)
        if self.o.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x, y.to(self.device, non_blocking=True)

    def train_epoch(self, epoch: int, frozen: bool, advance: Callable[[int, str], None]) -> tuple[float, float]:
        model = self.model
        model.train()
        set_backbone_frozen(model, frozen)
        loss_sum, correct, seen = 0.0, 0, 0
        for x, y in batches(self.train_data, self.spec, self.o.batch_size, self.generator):
            x, y = self._to_device(x, y)
            x, ya, yb, lam = self._mix(x, y)
            with self._autocast():
                logits = model(x)
                loss = lam * F.cross_entropy(logits, ya, label_smoothing=self.o.label_smoothing)
                if lam < 1.0:
                    loss = loss + (1 - lam) * F.cross_entropy(logits, yb, label_smoothing=self.o.label_smoothing)
            if not torch.isfinite(loss):
                raise TrtInferError(f"the loss became {loss.item()} in epoch {epoch}",
                                    hint="lower --lr (or use --precision fp32)")
            self.optimizer.zero_grad(set_to_none=True)
            if self.scaler is not None:
                self.scaler.scale(loss).backward()
                self.scaler.step(self.optimizer)
                self.scaler.update()
            else:
                loss.backward()
                self.optimizer.step()
            self.scheduler.step()
            if self.ema is not None:
                self.ema.update_parameters(model)
            n = len(y)
            loss_sum += float(loss.detach()) * n
            correct += int((logits.argmax(1) == y).sum())
            seen += n
            advance(n, f"loss {loss_sum / seen:.3f} acc {100 * correct / seen:.1f}%")
        return loss_sum / max(1, seen), correct / max(1, seen)

    @torch.no_grad()
    def evaluate(self, data: LabeledImages) -> tuple[float, float]:
        """(loss, top-1) of the kept model on ``data`` in eval mode, preprocessed exactly as the artifact does."""
        model = self.kept_model
        model.eval()
        loss_sum, correct = 0.0, 0
        for x, y in batches(data, self.spec, 256, None):
            x, y = self._to_device(x, y)
            with self._autocast():
                logits = model(x).float()
            loss_sum += float(F.cross_entropy(logits, y, reduction="sum"))
            correct += int((logits.argmax(1) == y).sum())
        return loss_sum / max(1, len(data)), correct / max(1, len(data))

    def fit(self) -> TrainState:
        o, state = self.o, self.state
        assert o.freeze_epochs is not None
        for epoch in range(state.epoch + 1, o.epochs + 1):
            frozen = epoch <= o.freeze_epochs
            start = time.perf_counter()
            with self.report.progress_with_status(
                    f"epoch {epoch}/{o.epochs}{' (backbone frozen)' if frozen else ''}", len(self.train_data)) as adv:
                loss, acc = self.train_epoch(epoch, frozen, adv)
            val_loss, val_acc = self.evaluate(self.val_data)
            result = EpochResult(epoch, loss, acc, val_loss, val_acc, self.optimizer.param_groups[-1]["lr"],
                                 time.perf_counter() - start, frozen)
            state.history.append(result)
            state.epoch = epoch
            improved = val_acc > state.best_accuracy
            if improved:
                state.best_accuracy, state.best_epoch = val_acc, epoch
                state.best_weights = {k: v.detach().to("cpu", copy=True)
                                      for k, v in self.kept_model.state_dict().items()}
            self.report.info(f"epoch {epoch}/{o.epochs}: train loss {loss:.3f}, train top-1 {100 * acc:.1f}%, "
                             f"val loss {val_loss:.3f}, val top-1 {100 * val_acc:.2f}%"
                             f"{' (best)' if improved else ''}, {result.seconds:.0f} s")
            if self.on_epoch is not None:
                self.on_epoch(state, self.model)
            if o.patience is not None and epoch - state.best_epoch >= o.patience:
                self.report.info(f"no better validation top-1 for {o.patience} epochs: stopping early (--patience)")
                break
        return state

    # -- resume ------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        s = self.state
        return {"resume_version": RESUME_VERSION, "epoch": s.epoch, "model": self.model.state_dict(),
                "optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
                "generator": self.generator.get_state(), "torch_rng": torch.get_rng_state(),
                "history": [r.to_dict() for r in s.history], "best_accuracy": s.best_accuracy,
                "best_epoch": s.best_epoch, "best_weights": s.best_weights,
                "scaler": self.scaler.state_dict() if self.scaler is not None else None,
                "ema": self.ema.state_dict() if self.ema is not None else None}

    def load_state_dict(self, data: dict[str, Any]) -> None:
        """Continue from ``data`` (:func:`read_resume_state`); a state of another run (architecture, classes,
        recipe) is refused in one line, before a step is taken."""
        problem = resume_state_problem(data)
        if problem is not None:
            raise TrtInferError(f"the resume state {problem}", hint=RESUME_HINT)
        try:
            self.model.load_state_dict(data["model"])
            self.optimizer.load_state_dict(data["optimizer"])
            if data["scheduler"].keys() != self.scheduler.state_dict().keys():  # it would take any attribute given
                raise ValueError("its schedule is not this run's --schedule")
            self.scheduler.load_state_dict(data["scheduler"])
            self.generator.set_state(data["generator"])
            torch.set_rng_state(data["torch_rng"])
            if self.scaler is not None and data.get("scaler"):
                self.scaler.load_state_dict(data["scaler"])
            if self.ema is not None and data.get("ema"):
                self.ema.load_state_dict(data["ema"])
        except (RuntimeError, ValueError, TypeError, KeyError, IndexError) as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise TrtInferError(f"the resume state does not fit this run (another architecture or recipe): "
                                f"{first[:200]}", hint=RESUME_HINT) from None
        self.state = TrainState(epoch=data["epoch"], best_accuracy=float(data["best_accuracy"]),
                                best_epoch=data["best_epoch"], best_weights=data["best_weights"],
                                history=[EpochResult(**r) for r in data["history"]])


#: A training state is about six times the float32 weights (the weights, the best ones, their moving average,
#: AdamW's two moments); 32 GiB is some 1.4 billion parameters, past every torchvision classifier (ViT-H/14 has
#: 632 million). The bound refuses a device or a runaway file before torch reads it.
MAX_RESUME_BYTES = 32 << 30
RESUME_HINT = "start the run again without --resume (its first epoch replaces the state)"
#: What Trainer.state_dict writes, by type (scaler and ema: a dict or None).
_RESUME_FIELDS: dict[str, type | tuple[type, ...]] = {
    "epoch": int, "model": dict, "optimizer": dict, "scheduler": dict, "generator": torch.Tensor,
    "torch_rng": torch.Tensor, "history": list, "best_accuracy": (int, float), "best_epoch": int,
    "best_weights": (dict, type(None)), "scaler": (dict, type(None)), "ema": (dict, type(None))}


def read_resume_state(path: Path) -> dict[str, Any]:
    """The training state ``--resume`` continues from: a regular file of bounded size, loaded weights-only (no
    code runs), holding what :meth:`Trainer.state_dict` writes; anything else is one line naming the file."""
    from trtinfer.files import check_regular

    try:
        check_regular(path, "--resume state", max_bytes=MAX_RESUME_BYTES)
    except TrtInferError as exc:  # a FIFO or a device in its place: the fix is the same
        raise TrtInferError(exc.message, hint=RESUME_HINT) from None
    try:
        with warnings.catch_warnings():  # torch's notes on the pickle protocol of a file refused below anyway
            warnings.simplefilter("ignore")
            data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # whatever a damaged or hostile pickle makes the weights-only unpickler raise
        raise TrtInferError(f"--resume: {path} is not a trtinfer training state (it does not load as tensors and "
                            f"plain data: {type(exc).__name__})", hint=RESUME_HINT) from None
    problem = resume_state_problem(data)
    if problem is not None:
        raise TrtInferError(f"--resume: {path} is not a trtinfer training state ({problem})", hint=RESUME_HINT)
    return data


def resume_state_problem(data: Any) -> str | None:
    """What keeps ``data`` from being a state :meth:`Trainer.state_dict` wrote, said from "it" on; None when
    nothing does."""
    if not isinstance(data, dict):
        return f"it holds a {type(data).__name__}, not a training state"
    if data.get("resume_version") != RESUME_VERSION:
        return f"it has resume_version {str(data.get('resume_version'))[:20]!r}, this trtinfer writes {RESUME_VERSION}"
    for name, kind in _RESUME_FIELDS.items():
        if name not in data:
            return f"its {name!r} is missing"
        value = data[name]
        if isinstance(value, bool) or not isinstance(value, kind):
            return f"its {name!r} is a {type(value).__name__}"
    for name in ("model", "best_weights"):
        weights = data[name]
        if weights is not None and not (weights and all(isinstance(k, str) and isinstance(v, torch.Tensor)
                                                        for k, v in weights.items())):
            return f"its {name!r} is not a state dict of named tensors"
    if not any(v.ndim == 2 for v in data["model"].values()):
        return "its 'model' has no classifier weight (2-D tensor)"
    fields = {f.name for f in dataclasses.fields(EpochResult)}
    if not all(isinstance(r, dict) and r.keys() == fields and all(isinstance(v, (int, float)) for v in r.values())
               for r in data["history"]):
        return "its 'history' is not a list of epoch results"
    if data["epoch"] < 0 or data["best_epoch"] < 0 or not math.isfinite(data["best_accuracy"]):
        return "its epoch counts or best accuracy are out of range"
    return None
