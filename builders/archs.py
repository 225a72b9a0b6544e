"""Which torchvision architecture a state dict belongs to, and rebuilding it.

Every candidate is built once with its parameters on the ``meta`` device (no memory, ~50 ms each),
so its key names and shapes can be compared with the checkpoint's without guessing.
"""

from __future__ import annotations

import functools
import logging
import warnings
from collections.abc import Mapping
from dataclasses import dataclass

import torch
import torchvision
from torch import nn
from torch.overrides import TorchFunctionMode

from trtinfer.errors import CheckpointError

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
IGNORED_SUFFIXES = ("num_batches_tracked",)


class _ParamsOnMeta(TorchFunctionMode):
    """Put only parameter/buffer storage on ``meta``; other tensor maths (RegNet's width schedule)
    stays on the CPU, which ``with torch.device('meta')`` would break."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = dict(kwargs or {})
        if func in (torch.empty, torch.zeros, torch.ones) and kwargs.get("device") is None:
            kwargs["device"] = "meta"
        return func(*args, **kwargs)


def all_archs() -> list[str]:
    known = [a for fam in FAMILIES.values() for a in fam]
    others = [a for a in torchvision.models.list_models(module=torchvision.models) if a not in known]
    return known + others


def family_of(arch: str) -> str:
    for fam, members in FAMILIES.items():
        if arch in members:
            return fam
    return "other"


def _construct(arch: str, num_classes: int | None = None) -> nn.Module:
    kwargs = {} if num_classes is None else {"num_classes": num_classes}
    if arch in ("googlenet", "inception_v3"):
        kwargs.update(aux_logits=False, init_weights=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return torchvision.models.get_model(arch, weights=None, **kwargs)


def classifier_key(model: nn.Module) -> str:
    """Name of the final classification layer (last Linear; SqueezeNet's is a 1x1 Conv2d)."""
    last_linear = last_conv = None
    for name, mod in model.named_modules():
        if isinstance(mod, nn.Linear):
            last_linear = name
        elif isinstance(mod, nn.Conv2d):
            last_conv = name
    name = last_linear or last_conv
    if name is None:
        raise CheckpointError("model has no Linear or Conv2d classifier")
    return name


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


@dataclass(frozen=True)
class Signature:
    arch: str
    shapes: Mapping[str, tuple[int, ...]]
    classifier: str  # module name, e.g. "fc" or "classifier.1"
    keys: frozenset[str]


@functools.lru_cache(maxsize=None)
def signature(arch: str, cifar_stem: bool = False) -> Signature:
    with _ParamsOnMeta():
        model = _construct(arch)
        if cifar_stem:
            apply_cifar_stem(model)
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items() if not k.endswith(IGNORED_SUFFIXES)}
    return Signature(arch, shapes, classifier_key(model), frozenset(shapes))


@dataclass(frozen=True)
class ArchMatch:
    arch: str
    num_classes: int
    cifar_stem: bool


def _relevant(state_dict: Mapping[str, torch.Tensor]) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in state_dict.items() if not k.endswith(IGNORED_SUFFIXES)}


def has_cifar_stem(state_dict: Mapping[str, torch.Tensor]) -> bool:
    w = state_dict.get("conv1.weight")
    return w is not None and w.ndim == 4 and tuple(w.shape[2:]) == (3, 3) and "layer1.0.conv1.weight" in state_dict


def mismatches(sig: Signature, state_dict: Mapping[str, torch.Tensor], limit: int = 5) -> tuple[int | None, list[str]]:
    """(num_classes or None, first differences) between a signature and a state dict."""
    got = _relevant(state_dict)
    problems: list[str] = []
    cls_w = got.get(f"{sig.classifier}.weight")
    num_classes = cls_w[0] if cls_w else None
    for key in sorted(sig.keys - got.keys()):
        problems.append(f"missing {key} {list(sig.shapes[key])}")
    for key in sorted(got.keys() - sig.keys):
        problems.append(f"unexpected {key} {list(got[key])}")
    for key in sorted(sig.keys & got.keys()):
        want, have = sig.shapes[key], got[key]
        if key.startswith(sig.classifier + ".") and num_classes is not None:
            want = (num_classes,) + want[1:]
        if want != have:
            problems.append(f"{key}: checkpoint {list(have)} vs {sig.arch} {list(want)}")
    return num_classes, problems[:limit] if limit else problems


def match_arch(state_dict: Mapping[str, torch.Tensor], arch: str | None = None) -> ArchMatch:
    """Find (or check) the architecture, class count and stem variant of a state dict."""
    cifar = has_cifar_stem(state_dict)
    candidates = [arch] if arch else all_archs()
    if arch and arch not in torchvision.models.list_models(module=torchvision.models):
        raise CheckpointError(f"unknown architecture {arch!r}",
                              hint="use a torchvision classification model name, e.g. resnet18, mobilenet_v2")
    keys = frozenset(_relevant(state_dict))
    best: tuple[float, str] = (0.0, "")
    for name in candidates:
        try:
            sig = signature(name, cifar and name in RESNET_STYLE)
        except Exception as exc:  # an architecture torchvision cannot build here
            log.debug("skipping %s: %s", name, exc)
            continue
        if sig.keys == keys:
            num_classes, problems = mismatches(sig, state_dict)
            if not problems and num_classes:
                return ArchMatch(name, int(num_classes), cifar and name in RESNET_STYLE)
        overlap = len(sig.keys & keys) / max(1, len(sig.keys | keys))
        best = max(best, (overlap, name))
    if arch:
        sig = signature(arch, cifar and arch in RESNET_STYLE)
        _, problems = mismatches(sig, state_dict, limit=5)
        raise CheckpointError(f"checkpoint does not fit --arch {arch}: " + "; ".join(problems),
                              hint="drop --arch to infer it, or pass the architecture the checkpoint was trained with")
    closest = f"; closest is {best[1]} ({best[0]:.0%} of keys shared)" if best[1] else ""
    raise CheckpointError(f"could not recognise the architecture from the checkpoint's {len(keys)} weights{closest}",
                          hint="pass --arch NAME (a torchvision model such as resnet18, mobilenet_v2, efficientnet_b0)")


def build_model(match: ArchMatch, state_dict: Mapping[str, torch.Tensor]) -> nn.Module:
    """Instantiate the matched architecture and load the weights strictly."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with _ParamsOnMeta():  # weights come from the checkpoint: skip random init
            model = _construct(match.arch, match.num_classes)
            if match.cifar_stem:
                apply_cifar_stem(model)
    missing, unexpected = model.load_state_dict(state_dict, strict=False, assign=True)
    missing = [k for k in missing if not k.endswith(IGNORED_SUFFIXES)]
    if missing or unexpected:
        raise CheckpointError(f"weights do not fit {match.arch}: missing {missing[:3]}, unexpected {unexpected[:3]}",
                              hint="pass the --arch the checkpoint was trained with")
    for name, buf in model.named_buffers():
        if buf.is_meta:  # e.g. num_batches_tracked absent from old checkpoints
            parent = model.get_submodule(name.rpartition(".")[0]) if "." in name else model
            parent._buffers[name.rpartition(".")[2]] = torch.zeros(buf.shape, dtype=buf.dtype)
    return model.float().eval()
