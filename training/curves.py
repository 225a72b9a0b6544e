"""Training curves as a PNG beside the checkpoint: loss and top-1 per epoch, train and validation."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any


def plot_curves(history: Sequence[Any], path: Path, title: str) -> Path:
    """``history``: the epochs' results (``train_loss``, ``val_loss``, ``train_accuracy``, ``val_accuracy``)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from trtinfer.atomic import atomic_file

    epochs = [r.epoch for r in history]
    fig, (loss_ax, acc_ax) = plt.subplots(1, 2, figsize=(10, 4))
    loss_ax.plot(epochs, [r.train_loss for r in history], "o-", label="train (augmented, smoothed)")
    loss_ax.plot(epochs, [r.val_loss for r in history], "s-", label="validation")
    loss_ax.set(xlabel="epoch", ylabel="cross-entropy loss", title="loss")
    acc_ax.plot(epochs, [100 * r.train_accuracy for r in history], "o-", label="train (augmented)")
    acc_ax.plot(epochs, [100 * r.val_accuracy for r in history], "s-", label="validation")
    acc_ax.set(xlabel="epoch", ylabel="top-1 (%)", title="accuracy")
    for ax in (loss_ax, acc_ax):
        ax.grid(alpha=0.3)
        ax.legend()
        ax.set_xticks(epochs if len(epochs) <= 20 else epochs[::max(1, len(epochs) // 10)])
    fig.suptitle(title)
    fig.tight_layout()
    with atomic_file(path, "wb") as f:
        fig.savefig(f, format="png", dpi=110)
    plt.close(fig)
    return path
