"""timm models (``--arch timm:NAME``): matched by their signatures, built by ``timm.create_model``.

timm is an optional extra (``trtinfer[timm]``), imported only when such a checkpoint is met; a candidate
whose key names and shapes a state dict has exactly is recognised without ``--arch``.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import warnings
from collections.abc import Mapping
from types import ModuleType

import torch
from torch import nn

from trtinfer.errors import BackendUnavailable, CheckpointError

from .extras import require
from .types import ArchMatch, Signature, relevant_shapes
from .weights import ParamsOnMeta, build_loaded, mismatches, signature_of

log = logging.getLogger(__name__)

TIMM_PREFIX = "timm:"

#: timm models ``--arch`` may be left out for. Each one's key names and shapes are its own among timm's
#: ResNet/MobileNet/EfficientNet-like CNNs (timm 1.0; the slow test in tests/builders/source/test_timm_models.py scans
#: them), except for the twins listed with it, which differ only in code (TF "same" padding, blur pooling,
#: anti-aliasing) that the weights cannot show: a checkpoint fitting twins is refused with their names.
#: Plain resnet18/34/50 have torchvision's layout and are matched as torchvision models (the same computation).
TIMM_CANDIDATES = (
    "resnet10t", "resnet14t", "resnet18d", "resnet26", "resnet26d", "resnet26t",
    "resnet34d", "resnetaa34d", "resnet50d", "resnetaa50d", "resnetblur50d",
    "mobilenetv2_050", "mobilenetv2_100", "mobilenetv2_110d", "mobilenetv2_120d", "mobilenetv2_140",
    "mobilenetv3_small_050", "mobilenetv3_small_075", "tf_mobilenetv3_small_075",
    "mobilenetv3_small_100", "tf_mobilenetv3_small_100", "mobilenetv3_large_075", "tf_mobilenetv3_large_075",
    "mobilenetv3_large_100", "tf_mobilenetv3_large_100", "mobilenetv4_conv_small",
    "efficientnet_b0", "efficientnet_blur_b0", "tf_efficientnet_b0", "efficientnet_b1", "tf_efficientnet_b1",
    "efficientnet_b2", "tf_efficientnet_b2", "efficientnet_b3", "tf_efficientnet_b3",
    "efficientnet_lite0", "tf_efficientnet_lite0",
)


#: class count timm models are built with for their signature (the classifier's rows come from the checkpoint)
SIGNATURE_CLASSES = 1000


#: keys one of the candidates' state dicts always has (timm stems): anything else is not looked at
TIMM_STEM_KEYS = ("conv_stem.weight", "conv1.0.weight", "conv1.weight")


def _timm() -> ModuleType:
    return require("timm", "timm", "a timm model (--arch timm:NAME)")


def _timm_model(name: str, num_classes: int | None = None, on_meta: bool = True) -> nn.Module:
    """``timm.create_model(name)``: on ``meta`` for key names and shapes, else for real (what is exported)."""
    timm = _timm()
    kwargs = {} if num_classes is None else {"num_classes": num_classes}
    with warnings.catch_warnings(), ParamsOnMeta() if on_meta else contextlib.nullcontext():
        warnings.simplefilter("ignore")
        return timm.create_model(name, pretrained=False, **kwargs)


def _timm_classifier(model: nn.Module) -> str | None:
    """Module name of timm's ``get_classifier()`` (``fc``, ``classifier``, ``head.fc``); None: the last Linear."""
    get_classifier = getattr(model, "get_classifier", None)
    head = get_classifier() if callable(get_classifier) else None
    return next((n for n, m in model.named_modules() if m is head), None) if isinstance(head, nn.Module) else None


@functools.lru_cache(maxsize=None)
def timm_signature(name: str) -> Signature:
    """Key names and shapes of timm's ``name`` with a classifier (some, such as EVA-02's pre-training configs,
    default to ``num_classes=0``: no head, which no fine-tuned classifier's checkpoint matches)."""
    model = _timm_model(name, SIGNATURE_CLASSES)
    return signature_of(TIMM_PREFIX + name, model, _timm_classifier(model))


def match_timm(state_dict: Mapping[str, torch.Tensor], name: str) -> ArchMatch:
    """Check a state dict against the timm model ``name`` (``--arch timm:NAME``)."""
    timm = _timm()
    if not name or not timm.is_model(name):
        close = sorted(timm.list_models(f"*{name[:6]}*"))[:5] if name else []
        raise CheckpointError(f"unknown timm model {name!r}" + (f" (close: {', '.join(close)})" if close else ""),
                              hint="pass --arch timm:NAME with a name from timm.list_models(), e.g. timm:resnet18")
    sig = timm_signature(name)
    num_classes, problems = mismatches(sig, state_dict)
    if problems or not num_classes:
        raise CheckpointError(f"checkpoint does not fit --arch {TIMM_PREFIX}{name}: "
                              + ("; ".join(problems) or "no classifier weights"),
                              hint="pass the timm model the checkpoint was trained with")
    return ArchMatch(TIMM_PREFIX + name, int(num_classes), False)


def infer_timm(state_dict: Mapping[str, torch.Tensor]) -> ArchMatch | None:
    """The one candidate timm model whose keys and shapes the state dict has exactly; None when none fits
    (or timm is not installed); a CheckpointError naming them when twins fit."""
    keys = frozenset(relevant_shapes(state_dict))
    if not any(k in keys for k in TIMM_STEM_KEYS):
        return None
    try:
        _timm()
    except BackendUnavailable:
        log.info("timm is not installed: timm architectures are not tried")
        return None
    fits: list[tuple[str, int]] = []
    for name in TIMM_CANDIDATES:
        try:
            sig = timm_signature(name)
        except Exception as exc:  # a candidate this timm version lacks
            log.debug("skipping timm %s: %s", name, exc)
            continue
        if sig.keys != keys:
            continue
        num_classes, problems = mismatches(sig, state_dict)
        if num_classes and not problems:
            fits.append((name, int(num_classes)))
    if len(fits) > 1:
        names = ", ".join(TIMM_PREFIX + n for n, _ in fits)
        raise CheckpointError(f"the weights fit several timm models that differ only in code (padding, pooling): "
                              f"{names}", hint="pass --arch timm:NAME, the model the checkpoint was trained with")
    return ArchMatch(TIMM_PREFIX + fits[0][0], fits[0][1], False) if fits else None


def build_timm(match: ArchMatch, state_dict: Mapping[str, torch.Tensor]) -> nn.Module:
    """``timm.create_model(NAME, pretrained=False, num_classes=N)`` built for real, the weights loaded strictly
    (:func:`.weights.build_loaded`: timm's own non-persistent buffers, never zero-filled ones)."""
    name, num_classes = match.arch[len(TIMM_PREFIX):], match.num_classes
    return build_loaded(lambda: _timm_model(name, num_classes, on_meta=False), state_dict, match.arch)
