"""Small real checkpoints in the formats fine-tuning scripts write, and synthetic logits."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from trtinfer.builders.source.archs import fresh_model


def make_model(arch: str = "resnet18", num_classes: int = 10, cifar_stem: bool = False, seed: int = 0) -> torch.nn.Module:
    return fresh_model(arch, num_classes, cifar_stem, seed)


def save(model: torch.nn.Module, path: Path, fmt: str = "state_dict") -> Path:
    sd = model.state_dict()
    if fmt == "state_dict":
        obj = sd
    elif fmt in ("state_dict_key", "model_state_dict", "model", "net"):
        key = "state_dict" if fmt == "state_dict_key" else fmt
        obj = {key: sd, "epoch": 7, "optimizer_state_dict": {"state": {}, "param_groups": [{"lr": 0.1}]}}
    elif fmt == "ddp":
        obj = {"state_dict": {f"module.{k}": v for k, v in sd.items()}, "epoch": 1}
    elif fmt == "compiled":
        obj = {f"_orig_mod.{k}": v for k, v in sd.items()}
    elif fmt == "compiled_ddp":
        obj = {f"module._orig_mod.{k}": v for k, v in sd.items()}
    elif fmt == "module":
        torch.save(model, path)
        return path
    elif fmt == "torchscript":
        torch.jit.script(model).save(str(path))
        return path
    else:
        raise ValueError(fmt)
    torch.save(obj, path)
    return path


def one_hot_logits(labels: np.ndarray, wrong: int, classes: int = 10) -> np.ndarray:
    """One-hot-ish logits that are right except for the first ``wrong`` rows."""
    out = np.zeros((len(labels), classes), np.float32)
    out[np.arange(len(labels)), labels] = 5.0
    out[np.arange(wrong), (labels[:wrong] + 1) % classes] = 6.0
    return out


LABELS = np.arange(200) % 10
