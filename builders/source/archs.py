"""Which architecture a state dict belongs to, and rebuilding it.

Every candidate is built once with its parameters on the ``meta`` device (no memory, ~50 ms each),
so its key names and shapes can be compared with the checkpoint's without guessing. torchvision
models are named as torchvision names them (``resnet18``); timm models and Hugging Face directories
(:mod:`.timm_models`, :mod:`.huggingface`) as ``timm:NAME`` and ``hf:ResNetForImageClassification``. What
all three share (signatures, strict loading) is :mod:`.weights`.
"""

from __future__ import annotations

import functools
import logging
import warnings
from collections.abc import Mapping
from typing import Any

import torch
import torchvision
from torch import nn

from trtinfer.errors import CheckpointError

from . import huggingface, timm_models
from .types import ArchMatch, Signature, relevant_shapes
from .weights import ParamsOnMeta, build_loaded, classifier_key, mismatches, signature_of

log = logging.getLogger(__name__)

# Families we test and document; every other torchvision classifier is accepted too.
FAMILIES = {
    "resnet": ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152", "resnext50_32x4d",
               "resnext101_32x8d", "resnext101_64x4d", "wide_resnet50_2", "wide_resnet101_2"),
    "mobilenet": ("mobilenet_v2", "mobilenet_v3_large", "mobilenet_v3_small"),
    "vgg": ("vgg11", "vgg11_bn", "vgg13", "vgg13_bn", "vgg16", "vgg16_bn", "vgg19", "vgg19_bn"),
    "densenet": ("densenet121", "densenet161", "densenet169", "densenet201"),
    "efficientnet": tuple(f"efficientnet_b{i}" for i in range(8)) + ("efficientnet_v2_s", "efficientnet_v2_m",
                                                                      "efficientnet_v2_l"),
    "alexnet": ("alexnet",),
    "regnet": tuple(f"regnet_{k}_{s}" for k in "xy" for s in ("400mf", "800mf", "1_6gf", "3_2gf", "8gf", "16gf",
                                                                "32gf")) + ("regnet_y_128gf",),
    "convnext": ("convnext_tiny", "convnext_small", "convnext_base", "convnext_large"),
    "shufflenet": ("shufflenet_v2_x0_5", "shufflenet_v2_x1_0", "shufflenet_v2_x1_5", "shufflenet_v2_x2_0"),
}
RESNET_STYLE = set(FAMILIES["resnet"])


def all_archs() -> list[str]:
    known = [a for fam in FAMILIES.values() for a in fam]
    others = [a for a in torchvision.models.list_models(module=torchvision.models) if a not in known]
    return known + others


def family_of(arch: str) -> str:
    """The family of a torchvision name, or of a ``timm:``/``hf:`` one by its name's start."""
    for fam, members in FAMILIES.items():
        if arch in members:
            return fam
    if ":" in arch:
        name = arch.partition(":")[2].lower().removeprefix("tf_")
        return next((fam for fam in FAMILIES if name.startswith(fam)), "other")
    return "other"


def _construct(arch: str, num_classes: int | None = None) -> nn.Module:
    kwargs = {} if num_classes is None else {"num_classes": num_classes}
    if arch in ("googlenet", "inception_v3"):
        kwargs.update(aux_logits=False, init_weights=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return torchvision.models.get_model(arch, weights=None, **kwargs)


def apply_cifar_stem(model: nn.Module) -> nn.Module:
    """The common CIFAR variant of torchvision ResNets: 3x3 stride-1 conv1, no max-pool."""
    conv1 = model.conv1
    if not isinstance(conv1, nn.Conv2d):
        raise TypeError(f"{type(model).__name__}.conv1 is not a Conv2d: not a torchvision ResNet")
    out_ch = conv1.out_channels
    model.conv1 = nn.Conv2d(3, out_ch, kernel_size=3, stride=1, padding=1, bias=False)
    model.maxpool = nn.Identity()
    return model


def fresh_model(arch: str, num_classes: int = 10, cifar_stem: bool = False, seed: int = 0) -> nn.Module:
    """A randomly initialised torchvision classifier (seeded), with the CIFAR stem for ResNets if asked."""
    torch.manual_seed(seed)
    model = _construct(arch, num_classes)
    if cifar_stem and arch in RESNET_STYLE:
        apply_cifar_stem(model)
    return model.eval()


def wrap_head(model: nn.Module, classifier: str) -> nn.Module:
    """Replace the Linear classifier at ``classifier`` by ``Sequential(Dropout, Linear)`` (keys
    ``<classifier>.1.weight``), the head fine-tuning scripts most often put on a torchvision model."""
    linear = model.get_submodule(classifier)
    if not isinstance(linear, nn.Linear):
        raise TypeError(f"{classifier} of {type(model).__name__} is a {type(linear).__name__}, not a Linear")
    parent, _, attr = classifier.rpartition(".")
    holder = model.get_submodule(parent) if parent else model
    setattr(holder, attr, nn.Sequential(nn.Dropout(), linear))  # dropout is the identity in eval mode
    return model


@functools.lru_cache(maxsize=None)
def signature(arch: str, cifar_stem: bool = False, dropout_head: bool = False) -> Signature:
    with ParamsOnMeta():
        model = _construct(arch)
        if cifar_stem:
            apply_cifar_stem(model)
        if dropout_head:
            wrap_head(model, classifier_key(model))
    return signature_of(arch, model)


def has_cifar_stem(state_dict: Mapping[str, torch.Tensor]) -> bool:
    w = state_dict.get("conv1.weight")
    return w is not None and w.ndim == 4 and tuple(w.shape[2:]) == (3, 3) and "layer1.0.conv1.weight" in state_dict


def _fits(sig: Signature, keys: frozenset[str], state_dict: Mapping[str, torch.Tensor]) -> int | None:
    """The class count when ``state_dict`` has exactly ``sig``'s keys and shapes, else None."""
    if sig.keys != keys:
        return None
    num_classes, problems = mismatches(sig, state_dict)
    return int(num_classes) if num_classes and not problems else None


def _dropout_head_match(name: str, stem: bool, plain: Signature, keys: frozenset[str],
                        state_dict: Mapping[str, torch.Tensor]) -> ArchMatch | None:
    """``name`` with its classifier wrapped in Sequential(Dropout, Linear), when that is what fits."""
    if f"{plain.classifier}.1.weight" not in keys:
        return None
    try:
        num_classes = _fits(signature(name, stem, dropout_head=True), keys, state_dict)
    except Exception as exc:  # e.g. SqueezeNet's Conv2d classifier cannot be wrapped
        log.debug("no dropout-head variant of %s: %s", name, exc)
        return None
    return ArchMatch(name, num_classes, stem, dropout_head=True) if num_classes else None


def match_arch(state_dict: Mapping[str, torch.Tensor], arch: str | None = None,
               hf_config: Mapping[str, Any] | None = None) -> ArchMatch:
    """Find (or check) the architecture, class count and variant of a state dict.

    ``hf_config``: the config.json of a Hugging Face directory (``Checkpoint.hf_config``), which names the
    architecture itself. ``arch`` ``timm:NAME`` checks a timm model; without ``arch``, torchvision models
    are tried, then a short list of timm models (:mod:`.timm_models`).
    """
    if hf_config is not None:
        return huggingface.match_hf(state_dict, hf_config, arch)
    if arch and arch.startswith(huggingface.HF_PREFIX):
        raise CheckpointError(f"--arch {arch} needs a Hugging Face save_pretrained directory (config.json and weights)",
                              hint="pass the directory as the checkpoint")
    if arch and arch.startswith(timm_models.TIMM_PREFIX):
        return timm_models.match_timm(state_dict, arch[len(timm_models.TIMM_PREFIX):])
    cifar = has_cifar_stem(state_dict)
    candidates = [arch] if arch else all_archs()
    if arch and arch not in torchvision.models.list_models(module=torchvision.models):
        raise CheckpointError(f"unknown architecture {arch!r}",
                              hint="use a torchvision classification model name, e.g. resnet18, mobilenet_v2, "
                                   "or timm:NAME for a timm model")
    keys = frozenset(relevant_shapes(state_dict))
    best: tuple[float, str] = (0.0, "")
    for name in candidates:
        stem = cifar and name in RESNET_STYLE
        try:
            sig = signature(name, stem)
        except Exception as exc:  # an architecture torchvision cannot build here
            log.debug("skipping %s: %s", name, exc)
            continue
        num_classes = _fits(sig, keys, state_dict)
        if num_classes:
            return ArchMatch(name, num_classes, stem)
        wrapped = _dropout_head_match(name, stem, sig, keys, state_dict)
        if wrapped is not None:
            return wrapped
        overlap = len(sig.keys & keys) / max(1, len(sig.keys | keys))
        best = max(best, (overlap, name))
    if arch:
        sig = signature(arch, cifar and arch in RESNET_STYLE)
        _, problems = mismatches(sig, state_dict, limit=5)
        raise CheckpointError(f"checkpoint does not fit --arch {arch}: " + "; ".join(problems),
                              hint="drop --arch to infer it, or pass the architecture the checkpoint was trained with")
    timm_match = timm_models.infer_timm(state_dict)
    if timm_match is not None:
        return timm_match
    closest = f"; closest is {best[1]} ({best[0]:.0%} of keys shared)" if best[1] else ""
    raise CheckpointError(f"could not recognise the architecture from the checkpoint's {len(keys)} weights{closest}",
                          hint="pass --arch NAME (a torchvision model such as resnet18, mobilenet_v2, efficientnet_b0, "
                               "or timm:NAME for a timm model, e.g. timm:efficientnet_b0)")


def build_model(match: ArchMatch, state_dict: Mapping[str, torch.Tensor]) -> nn.Module:
    """Instantiate the matched architecture with its library's constructor and load the weights strictly
    (:func:`build_loaded`); the same module is the export's source and the export check's reference."""
    if match.hf_config is not None:
        return huggingface.build_hf(match, state_dict)
    if match.arch.startswith(timm_models.TIMM_PREFIX):
        return timm_models.build_timm(match, state_dict)

    def construct() -> nn.Module:
        model = _construct(match.arch, match.num_classes)
        if match.cifar_stem:
            apply_cifar_stem(model)
        if match.dropout_head:
            wrap_head(model, classifier_key(model))
        return model

    return build_loaded(construct, state_dict, match.arch)
