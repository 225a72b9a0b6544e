"""The source stage's shared vocabulary: a loaded checkpoint, a model's signature, a matched architecture.

Every reader (torch files, safetensors, Hugging Face directories) returns a :class:`Checkpoint`; every
matcher (torchvision, timm, Hugging Face) compares a state dict with a :class:`Signature` and answers
with an :class:`ArchMatch`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeGuard

import torch

from trtinfer.manifest import CheckpointRecord

#: state-dict entries no architecture is judged by (absent from old checkpoints)
IGNORED_SUFFIXES = ("num_batches_tracked",)


@dataclass
class Checkpoint:
    """A loaded checkpoint: always a clean ``state_dict``, plus the module when the file held one."""

    path: Path
    sha256: str
    format: str  # state_dict | dict[<key>] | module | torchscript | safetensors | hf[<weights file>]
    state_dict: dict[str, torch.Tensor]
    module: torch.nn.Module | None = None
    extra_keys: list[str] = field(default_factory=list)
    stripped_prefixes: list[str] = field(default_factory=list)
    labels: list[str] | None = None  # class names the checkpoint itself names (e.g. a Hugging Face id2label)
    hf_config: dict[str, Any] | None = None  # config.json of a Hugging Face directory, parsed as JSON

    def record(self) -> CheckpointRecord:
        """What the manifest's ``source.checkpoint`` says about this file."""
        return CheckpointRecord(path=str(self.path), file=self.path.name, sha256=self.sha256, format=self.format,
                                stripped_prefixes=tuple(self.stripped_prefixes), other_keys=tuple(self.extra_keys))


@dataclass(frozen=True)
class Signature:
    arch: str
    shapes: Mapping[str, tuple[int, ...]]
    classifier: str  # module name, e.g. "fc" or "classifier.1"
    keys: frozenset[str]


@dataclass(frozen=True)
class ArchMatch:
    """What to build: the architecture, its class count and variant, and (Hugging Face) its config."""

    arch: str  # torchvision name, "timm:NAME" or "hf:ResNetForImageClassification"
    num_classes: int
    cifar_stem: bool
    dropout_head: bool = False  # classifier is Sequential(Dropout, Linear): keys fc.1.* instead of fc.*
    # config.json of a Hugging Face directory, as parsed JSON (never code); not part of equality
    hf_config: Mapping[str, Any] | None = field(default=None, compare=False, repr=False)


def relevant_shapes(state_dict: Mapping[str, torch.Tensor]) -> dict[str, tuple[int, ...]]:
    """The shapes of a state dict's entries, :data:`IGNORED_SUFFIXES` left out: what a signature is compared with."""
    return {k: tuple(v.shape) for k, v in state_dict.items() if not k.endswith(IGNORED_SUFFIXES)}


def is_tensor_dict(obj: Any) -> TypeGuard[Mapping[str, torch.Tensor]]:
    """A non-empty mapping of names to tensors: a state dict."""
    return isinstance(obj, Mapping) and len(obj) > 0 and all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items())


@dataclass(frozen=True)
class LoadedModel:
    """The source stage's result: the checkpoint, the architecture it matched, the model built from it,
    and the module to validate the export against (the checkpoint's own when it held one)."""

    checkpoint: Checkpoint
    match: ArchMatch
    model: torch.nn.Module
    reference: torch.nn.Module
