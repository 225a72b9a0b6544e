"""Fitting a state dict to a model: signatures built on ``meta``, their differences, strict loading.

What every architecture source (torchvision, timm, Hugging Face) shares: a candidate is built with its
parameters on the ``meta`` device (no memory, ~50 ms) so its key names and shapes can be compared with the
checkpoint's, and the chosen one is built for real and loaded without guessing.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable, Mapping

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from trtinfer.errors import CheckpointError

from .types import IGNORED_SUFFIXES, Signature, relevant_shapes

log = logging.getLogger(__name__)


class ParamsOnMeta(TorchFunctionMode):
    """Put only parameter/buffer storage on ``meta``; other tensor maths (RegNet's width schedule)
    stays on the CPU, which ``with torch.device('meta')`` would break."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = dict(kwargs or {})
        if func in (torch.empty, torch.zeros, torch.ones) and kwargs.get("device") is None:
            kwargs["device"] = "meta"
        return func(*args, **kwargs)


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


def signature_of(arch: str, model: nn.Module, classifier: str | None = None) -> Signature:
    """Key names and shapes of ``model`` (built on ``meta``), with its classifier's module name."""
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items() if not k.endswith(IGNORED_SUFFIXES)}
    return Signature(arch, shapes, classifier or classifier_key(model), frozenset(shapes))


def mismatches(sig: Signature, state_dict: Mapping[str, torch.Tensor], limit: int = 5) -> tuple[int | None, list[str]]:
    """(num_classes or None, first differences) between a signature and a state dict."""
    got = relevant_shapes(state_dict)
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
