"""The fine-tune with the quantizers in the loop: ``trtinfer finetune``'s data readers, augmentation and
preprocessing (:func:`training.data.batches`), plain SGD with momentum and a cosine schedule at a small
learning rate, progress per batch and a line per epoch."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from trtinfer.errors import TrtInferError
from trtinfer.manifest import QatEpochRecord


@dataclass(frozen=True)
class QatRecipe:
    epochs: int
    lr: float
    batch_size: int
    seed: int


def fine_tune(model: Any, train: Any, val: Any, spec: Any, recipe: QatRecipe,
              advance: Callable[[int, int, str], None], on_epoch: Callable[[QatEpochRecord], None]
              ) -> list[QatEpochRecord]:
    """Train ``model`` (fake-quantized) in place on ``train`` (LabeledImages) for ``recipe.epochs``; after each
    epoch, evaluate on ``val`` (held out of training) and call ``on_epoch`` with the epoch's record (the
    manifest's, and the fields :func:`training.curves.plot_curves` draws). ``advance(done, total, note)``
    reports the rows of the epoch done so far."""
    import torch
    import torch.nn.functional as F

    from trtinfer.training.data import batches

    torch.manual_seed(recipe.seed)
    generator = torch.Generator().manual_seed(recipe.seed)
    optimizer = torch.optim.SGD(model.parameters(), lr=recipe.lr, momentum=0.9, nesterov=True)
    steps = recipe.epochs * max(1, -(-len(train) // recipe.batch_size))
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=steps)
    history: list[QatEpochRecord] = []
    for epoch in range(1, recipe.epochs + 1):
        started = time.perf_counter()
        model.train()
        freeze_batchnorm(model)
        loss_sum, correct, seen = 0.0, 0, 0
        for x, y in batches(train, spec, recipe.batch_size, generator):
            logits = model(x)
            loss = F.cross_entropy(logits, y)
            if not torch.isfinite(loss):
                raise TrtInferError(f"the quantization-aware fine-tune's loss became {loss.item()} in epoch {epoch}",
                                    hint="lower --qat-lr")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            seen += len(y)
            loss_sum += float(loss.detach()) * len(y)
            correct += int((logits.argmax(1) == y).sum())
            advance(seen, len(train), f"epoch {epoch}/{recipe.epochs} loss {loss_sum / seen:.3f}")
        val_loss, val_accuracy = evaluate(model, val, spec)
        result = QatEpochRecord(epoch, round(loss_sum / max(1, seen), 6), round(correct / max(1, seen), 6),
                                round(val_loss, 6), round(val_accuracy, 6), round(time.perf_counter() - started, 2))
        history.append(result)
        on_epoch(result)
    model.eval()
    return history


def freeze_batchnorm(model: Any) -> None:
    """BatchNorm keeps its running statistics (eval mode) while everything else trains: the quantizers' ranges
    were calibrated with them, and batch statistics would move every activation off those ranges (with
    ModelOpt's unfolded BatchNorm, a randomly initialised MobileNetV2 got NaN gradients on its first step).
    Its scale and shift still learn. NNCF's path has no BatchNorm left (folded before quantizing)."""
    import torch

    for module in model.modules():
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            module.eval()


def evaluate(model: Any, data: Any, spec: Any) -> tuple[float, float]:
    """(loss, top-1) of ``model`` in eval mode on ``data``, preprocessed as the artifact does."""
    import torch
    import torch.nn.functional as F

    from trtinfer.training.data import batches

    model.eval()
    loss_sum, correct = 0.0, 0
    with torch.no_grad():
        for x, y in batches(data, spec, 256, None):
            logits = model(x)
            loss_sum += float(F.cross_entropy(logits, y, reduction="sum"))
            correct += int((logits.argmax(1) == y).sum())
    return loss_sum / max(1, len(data)), correct / max(1, len(data))
