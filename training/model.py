"""The network to fine-tune: a torchvision classifier, its head sized for the data's classes, started
from scratch, from torchvision's ImageNet weights, or from a local file; the backbone/head split the
recipe freezes and schedules separately."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from trtinfer.builders.source.archs import RESNET_STYLE, all_archs, fresh_model
from trtinfer.builders.source.weights import classifier_key
from trtinfer.errors import CheckpointError, TrtInferError

from .options import WEIGHTS_IMAGENET


@dataclass
class StartingPoint:
    """What the weights were started from, for the output and the checkpoint card."""

    weights: str  # "scratch", "imagenet", or a file path
    loaded: int = 0  # tensors taken from the weights
    skipped: list[str] = field(default_factory=list)  # tensors kept fresh (replaced stem, head)

    def describe(self) -> str:
        if self.weights == "scratch":
            return "from scratch (random initialisation)"
        kept = f"; kept fresh: {', '.join(self.skipped)}" if self.skipped else ""
        return f"from {self.weights}: loaded {self.loaded} tensors{kept}"


def check_arch(arch: str) -> None:
    if arch not in all_archs():
        raise TrtInferError(f"unknown architecture {arch!r}",
                            hint="use a torchvision classifier name, e.g. resnet18, resnet50, mobilenet_v3_small, "
                                 "efficientnet_b0")


def _imagenet_state_dict(arch: str) -> dict[str, torch.Tensor]:
    import torchvision

    try:
        weights = torchvision.models.get_model_weights(arch).DEFAULT
    except (ValueError, KeyError):
        raise TrtInferError(f"torchvision has no ImageNet weights for {arch}",
                            hint="pass --weights PATH, or leave --weights out to train from scratch") from None
    try:
        return weights.get_state_dict(progress=True)
    except Exception as exc:  # noqa: BLE001 -- urllib, socket and HTTP errors when offline
        raise TrtInferError(f"cannot download torchvision's ImageNet weights for {arch} ({type(exc).__name__}: "
                            f"{str(exc)[:100]})",
                            hint="without network access pass --weights PATH (a local .pth/.safetensors file), "
                                 "or leave --weights out to train from scratch") from None


def _file_state_dict(path: str) -> dict[str, torch.Tensor]:
    from trtinfer.builders.source.checkpoint import load_checkpoint

    return load_checkpoint(path).state_dict


def build_model(arch: str, num_classes: int, cifar_stem: bool, weights: str | None, seed: int,
                ) -> tuple[nn.Module, StartingPoint]:
    """The model with a fresh ``num_classes`` head; pretrained tensors loaded where name and shape fit.

    With ``cifar_stem`` the 3x3 ``conv1`` replaces the pretrained 7x7 one, so it stays fresh, as does
    the head; everything else must load, or the weights are for another architecture.
    """
    check_arch(arch)
    if cifar_stem and arch not in RESNET_STYLE:
        raise TrtInferError(f"--cifar-stem applies to ResNets, not {arch}", hint="drop --cifar-stem")
    model = fresh_model(arch, num_classes, cifar_stem, seed=seed).train()
    if weights is None:
        return model, StartingPoint("scratch")
    source = _imagenet_state_dict(arch) if weights == WEIGHTS_IMAGENET else _file_state_dict(weights)
    own = model.state_dict()
    head = classifier_key(model)
    take: dict[str, torch.Tensor] = {}
    skipped: list[str] = []
    for key, value in own.items():
        theirs = source.get(key)
        if key.startswith(head + "."):
            skipped.append(key)
        elif theirs is not None and tuple(theirs.shape) == tuple(value.shape):
            take[key] = theirs
        elif cifar_stem and key.startswith("conv1."):
            skipped.append(key)
        elif not key.endswith("num_batches_tracked"):
            raise CheckpointError(f"--weights {weights} does not fit {arch}: "
                                  + (f"{key} is {list(theirs.shape)}, the model's {list(value.shape)}"
                                     if theirs is not None else f"it has no {key}"),
                                  hint=f"pass weights of a {arch}, or leave --weights out to train from scratch")
    model.load_state_dict(take, strict=False)
    return model, StartingPoint(weights, loaded=len(take), skipped=sorted({k.rsplit(".", 1)[0] for k in skipped}))


def head_parameters(model: nn.Module) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
    """(backbone, head) parameters: the head is the final classification layer."""
    head = classifier_key(model)
    head_params = list(model.get_submodule(head).parameters())
    ids = {id(p) for p in head_params}
    return [p for p in model.parameters() if id(p) not in ids], head_params


def set_backbone_frozen(model: nn.Module, frozen: bool) -> None:
    """Freeze (or thaw) everything but the head; a frozen backbone's BatchNorm statistics stay fixed too."""
    backbone, _ = head_parameters(model)
    for p in backbone:
        p.requires_grad_(not frozen)
    head = classifier_key(model)
    for name, module in model.named_modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm) and not name.startswith(head):
            module.train(not frozen and model.training)


def describe_params(model: nn.Module) -> dict[str, Any]:
    return {"parameters": sum(p.numel() for p in model.parameters())}
