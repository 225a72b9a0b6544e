"""Which architecture a state dict belongs to, and rebuilding it.

Every candidate is built once with its parameters on the ``meta`` device (no memory, ~50 ms each),
so its key names and shapes can be compared with the checkpoint's without guessing. torchvision
models are named as torchvision names them (``resnet18``); timm models and Hugging Face directories
(:mod:`.hub_models`) as ``timm:NAME`` and ``hf:ResNetForImageClassification``.
"""

from __future__ import annotations

import functools
import logging
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

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


@dataclass(frozen=True)
class Signature:
    arch: str
    shapes: Mapping[str, tuple[int, ...]]
    classifier: str  # module name, e.g. "fc" or "classifier.1"
    keys: frozenset[str]


def signature_of(arch: str, model: nn.Module, classifier: str | None = None) -> Signature:
    """Key names and shapes of ``model`` (built on ``meta``), with its classifier's module name."""
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items() if not k.endswith(IGNORED_SUFFIXES)}
    return Signature(arch, shapes, classifier or classifier_key(model), frozenset(shapes))


@functools.lru_cache(maxsize=None)
def signature(arch: str, cifar_stem: bool = False, dropout_head: bool = False) -> Signature:
    with _ParamsOnMeta():
        model = _construct(arch)
        if cifar_stem:
            apply_cifar_stem(model)
        if dropout_head:
            wrap_head(model, classifier_key(model))
    return signature_of(arch, model)


@dataclass(frozen=True)
class ArchMatch:
    """What to build: the architecture, its class count and variant, and (Hugging Face) its config."""

    arch: str  # torchvision name, "timm:NAME" or "hf:ResNetForImageClassification"
    num_classes: int
    cifar_stem: bool
    dropout_head: bool = False  # classifier is Sequential(Dropout, Linear): keys fc.1.* instead of fc.*
    # config.json of a Hugging Face directory, as parsed JSON (never code); not part of equality
    hf_config: Mapping[str, Any] | None = field(default=None, compare=False, repr=False)


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
    are tried, then a short list of timm models (:mod:`.hub_models`).
    """
    from . import hub_models

    if hf_config is not None:
        return hub_models.match_hf(state_dict, hf_config, arch)
    if arch and arch.startswith(hub_models.HF_PREFIX):
        raise CheckpointError(f"--arch {arch} needs a Hugging Face save_pretrained directory (config.json and weights)",
                              hint="pass the directory as the checkpoint")
    if arch and arch.startswith(hub_models.TIMM_PREFIX):
        return hub_models.match_timm(state_dict, arch[len(hub_models.TIMM_PREFIX):])
    cifar = has_cifar_stem(state_dict)
    candidates = [arch] if arch else all_archs()
    if arch and arch not in torchvision.models.list_models(module=torchvision.models):
        raise CheckpointError(f"unknown architecture {arch!r}",
                              hint="use a torchvision classification model name, e.g. resnet18, mobilenet_v2, "
                                   "or timm:NAME for a timm model")
    keys = frozenset(_relevant(state_dict))
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
    timm_match = hub_models.infer_timm(state_dict)
    if timm_match is not None:
        return timm_match
    closest = f"; closest is {best[1]} ({best[0]:.0%} of keys shared)" if best[1] else ""
    raise CheckpointError(f"could not recognise the architecture from the checkpoint's {len(keys)} weights{closest}",
                          hint="pass --arch NAME (a torchvision model such as resnet18, mobilenet_v2, efficientnet_b0, "
                               "or timm:NAME for a timm model, e.g. timm:efficientnet_b0)")


def unsaved_buffers(model: nn.Module, state_dict: Mapping[str, torch.Tensor]) -> list[str]:
    """Buffers of ``model`` the checkpoint does not hold (non-persistent ones such as BlurPool's filter or
    Swin's relative position index), ``num_batches_tracked`` aside: the constructor alone computes them."""
    return [name for name, _ in model.named_buffers() if name not in state_dict and not name.endswith(IGNORED_SUFFIXES)]


def load_weights(model: nn.Module, state_dict: Mapping[str, torch.Tensor], what: str) -> nn.Module:
    """Copy ``state_dict`` into ``model`` (built for real by its library) strictly: every key present and
    used; only ``num_batches_tracked`` (absent from old checkpoints) may be missing. Returns ``model``."""
    try:
        missing, unexpected = model.load_state_dict(state_dict, strict=False)
    except RuntimeError as exc:  # size mismatches
        lines = [line.strip() for line in str(exc).splitlines() if "size mismatch" in line]
        raise CheckpointError(f"weights do not fit {what}: {'; '.join(lines[:2]) or str(exc).splitlines()[0][:200]}",
                              hint="pass the --arch the checkpoint was trained with") from None
    missing = [k for k in missing if not k.endswith(IGNORED_SUFFIXES)]
    if missing or unexpected:
        raise CheckpointError(f"weights do not fit {what}: missing {missing[:3]}, unexpected {unexpected[:3]}",
                              hint="pass the --arch the checkpoint was trained with")
    return model


def _seeded(construct: Callable[[], nn.Module], seed: int) -> nn.Module:
    with torch.random.fork_rng(devices=[]), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.manual_seed(seed)
        return construct()


def build_loaded(construct: Callable[[], nn.Module], state_dict: Mapping[str, torch.Tensor], what: str) -> nn.Module:
    """The model as its own library builds it, with the checkpoint's weights: the float32 eval module.

    ``construct`` is the source library's constructor (torchvision's ``get_model``, ``timm.create_model``,
    transformers' model class), run for real on the CPU, never on ``meta``: every buffer the checkpoint
    lacks is then what the library computes. Such a buffer is kept only when a second construction under
    another random seed computes it bit for bit again (a fixed blur filter, an index table, a mask); one
    that depends on the random initialisation cannot be known from the weights, and the model is refused
    naming it. Nothing is zero-filled or guessed.
    """
    model = load_weights(_seeded(construct, 0), state_dict, what)
    unsaved = unsaved_buffers(model, state_dict)
    if unsaved:
        twin = dict(_seeded(construct, 1).named_buffers())
        for name in unsaved:
            mine, other = model.get_buffer(name), twin.get(name)
            if other is None or other.shape != mine.shape or not torch.equal(mine, other):
                raise CheckpointError(
                    f"{what} has a buffer {name} that the checkpoint does not hold and that its constructor does not "
                    "compute the same way twice (it depends on the random initialisation), so its trained value is "
                    "unknown", hint="save the model with that buffer registered persistent "
                                    "(register_buffer(..., persistent=True)), or export it to ONNX yourself")
        log.debug("%s: %d buffers not in the checkpoint, recomputed by the constructor: %s", what, len(unsaved),
                  ", ".join(unsaved[:5]))
    return model.float().eval()


def build_model(match: ArchMatch, state_dict: Mapping[str, torch.Tensor]) -> nn.Module:
    """Instantiate the matched architecture with its library's constructor and load the weights strictly
    (:func:`build_loaded`); the same module is the export's source and the export check's reference."""
    from . import hub_models

    if match.hf_config is not None:
        return hub_models.build_hf(match, state_dict)
    if match.arch.startswith(hub_models.TIMM_PREFIX):
        return hub_models.build_timm(match, state_dict)

    def construct() -> nn.Module:
        model = _construct(match.arch, match.num_classes)
        if match.cifar_stem:
            apply_cifar_stem(model)
        if match.dropout_head:
            wrap_head(model, classifier_key(model))
        return model

    return build_loaded(construct, state_dict, match.arch)
