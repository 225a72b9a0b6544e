"""The checkpoint card: ``ckpt.trtinfer.json`` beside a checkpoint ``trtinfer finetune`` wrote.

It says what ``trtinfer build`` would otherwise ask for (architecture, classes and their names, input
size, normalisation, CIFAR stem) and what the training achieved, so the user repeats no flag. A flag
given anyway wins, with a warning when it differs. The card names the checkpoint's sha256: a card
beside a replaced checkpoint is ignored (with a warning), never applied to weights it does not
describe.
"""

from __future__ import annotations

import dataclasses
import json
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from trtinfer.atomic import atomic_file
from trtinfer.errors import CheckpointError
from trtinfer.files import read_bounded
from trtinfer.preprocess import normalization_problem

CARD_SUFFIX = ".trtinfer.json"
CARD_VERSION = 1
MAX_CARD_BYTES = 4 << 20


def card_path(checkpoint: str | Path) -> Path:
    """``ckpt.pth`` -> ``ckpt.trtinfer.json``."""
    checkpoint = Path(checkpoint)
    return checkpoint.with_name(checkpoint.stem + CARD_SUFFIX)


@dataclass
class CheckpointCard:
    arch: str
    num_classes: int
    labels: list[str]
    input_size: int
    resize: int
    normalize: str
    mean: list[float]
    std: list[float]
    cifar_stem: bool
    checkpoint_sha256: str
    val_accuracy: float | None = None
    test_accuracy: float | None = None
    history: list[dict[str, float]] = field(default_factory=list)
    recipe: dict[str, Any] = field(default_factory=dict)
    data: dict[str, Any] = field(default_factory=dict)
    trtinfer_version: str = ""
    card_version: int = CARD_VERSION

    def write(self, checkpoint: str | Path) -> Path:
        path = card_path(checkpoint)
        with atomic_file(path, "w") as f:
            f.write(json.dumps(asdict(self), indent=2, allow_nan=False) + "\n")
        return path

    @classmethod
    def read(cls, checkpoint: str | Path) -> CheckpointCard | None:
        """The card beside ``checkpoint``, or None when there is none; a damaged card is an error."""
        path = card_path(checkpoint)
        if not path.exists() and not path.is_symlink():
            return None
        hint = f"delete {path.name} or write it again with trtinfer finetune"
        raw = read_bounded(path, MAX_CARD_BYTES, "checkpoint card", CheckpointError, hint=hint)  # FIFOs: one line
        try:
            data = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, ValueError, RecursionError) as exc:
            raise CheckpointError(f"cannot read {path}: {exc}", hint=hint) from None
        if not isinstance(data, dict) or data.get("card_version") != CARD_VERSION:
            raise CheckpointError(f"{path} is not a version-{CARD_VERSION} checkpoint card", hint=hint)
        try:
            card = cls(**{k: v for k, v in data.items() if k in cls.__dataclass_fields__})
            card.check(path)
        except (TypeError, ValueError) as exc:
            raise CheckpointError(f"{path} is malformed: {exc}", hint=hint) from None
        return card

    def check(self, where: Path) -> None:
        def need(ok: bool, what: str) -> None:
            if not ok:
                raise ValueError(what)

        need(isinstance(self.arch, str) and bool(self.arch), "arch must be a name")
        need(isinstance(self.num_classes, int) and self.num_classes >= 1, "num_classes must be a positive integer")
        need(isinstance(self.labels, list) and len(self.labels) == self.num_classes
             and all(isinstance(x, str) for x in self.labels), "labels must be num_classes names")
        # two classes under one name: the artifact's manifest would be refused by every load
        repeated = [name for name, count in Counter(self.labels).items() if count > 1]
        need(not repeated, f"labels name a class twice: {', '.join(map(repr, repeated[:5]))}"
                           f"{f' and {len(repeated) - 5} more' if len(repeated) > 5 else ''}")
        for name in ("input_size", "resize"):
            value = getattr(self, name)
            need(isinstance(value, int) and 8 <= value <= 8192, f"{name} must be an integer in 8..8192")
        problem = normalization_problem(self.mean, self.std)  # the bounds --mean/--std are held to
        need(problem is None, str(problem))
        need(isinstance(self.cifar_stem, bool), "cifar_stem must be true or false")
        need(isinstance(self.checkpoint_sha256, str) and len(self.checkpoint_sha256) == 64, "checkpoint_sha256")


def read_card_for(checkpoint: Path, warn: Callable[[str], None]) -> CheckpointCard | None:
    """The card beside a checkpoint file when it describes that file (same sha256); a card beside other
    weights is ignored with a warning. Directories (Hugging Face checkpoints) have no card."""
    if not checkpoint.is_file():
        return None
    card = CheckpointCard.read(checkpoint)
    if card is None:
        return None
    from trtinfer.hashing import sha256_file

    if sha256_file(checkpoint) != card.checkpoint_sha256:
        warn(f"{card_path(checkpoint).name} describes other weights than {checkpoint.name} (sha256 differs): "
             "ignored; pass --arch, --input-size, --normalize and --labels yourself")
        return None
    return card


def apply_card(opts: Any, card: CheckpointCard, warn: Callable[[str], None]) -> Any:
    """``opts`` (BuildOptions) with the card's facts where no flag was given; a flag that differs wins
    and is warned about."""
    name = card_path(opts.checkpoint).name
    changes: dict[str, Any] = {}

    def take(flag: str, field_name: str, ours: Any, theirs: Any) -> None:
        if ours is None:
            changes[field_name] = theirs
        elif ours != theirs:
            warn(f"{flag} {ours} differs from {name}'s {theirs} (what the checkpoint was trained with); using {ours}")

    take("--arch", "arch", opts.arch, card.arch)
    take("--input-size", "input_size", opts.input_size, card.input_size)
    if opts.input_size is None or opts.input_size == card.input_size:
        take("--resize", "resize", opts.resize, card.resize)
    if opts.mean is not None or opts.std is not None:
        if [round(v, 6) for v in (opts.mean or ())] != [round(v, 6) for v in card.mean] or \
                [round(v, 6) for v in (opts.std or ())] != [round(v, 6) for v in card.std]:
            warn(f"--mean/--std differ from {name}'s {card.mean}/{card.std}; using the flags")
    elif opts.normalize is not None:
        take("--normalize", "normalize", opts.normalize, card.normalize)
    elif card.normalize == "custom":
        changes["mean"], changes["std"] = tuple(card.mean), tuple(card.std)
    else:
        changes["normalize"] = card.normalize
    return dataclasses.replace(opts, **changes)
