"""Class-name sets a build can record in the manifest (``--labels``)."""

from __future__ import annotations

import codecs
from pathlib import Path

from .errors import TrtInferError
from .files import read_bounded

# A label file is one short name per class (ImageNet's 1000 names are ~10 KB): anything near this is a wrong file.
MAX_LABEL_FILE_BYTES = 16 * 1024 * 1024

CIFAR10 = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]

CIFAR100 = (
    "apple aquarium_fish baby bear beaver bed bee beetle bicycle bottle bowl boy bridge bus butterfly camel can "
    "castle caterpillar cattle chair chimpanzee clock cloud cockroach couch crab crocodile cup dinosaur dolphin "
    "elephant flatfish forest fox girl hamster house kangaroo keyboard lamp lawn_mower leopard lion lizard lobster "
    "man maple_tree motorcycle mountain mouse mushroom oak_tree orange orchid otter palm_tree pear pickup_truck "
    "pine_tree plain plate poppy porcupine possum rabbit raccoon ray road rocket rose sea seal shark shrew skunk "
    "skyscraper snail snake spider squirrel streetcar sunflower sweet_pepper table tank telephone television tiger "
    "tractor train trout tulip turtle wardrobe whale willow_tree wolf woman worm"
).split()


def imagenet() -> list[str]:
    try:
        from torchvision.models._meta import _IMAGENET_CATEGORIES
    except ImportError as exc:  # build-time only; the runtime reads labels from the manifest
        raise TrtInferError("ImageNet labels come from torchvision", hint="pip install 'trtinfer[build]'") from exc
    return list(_IMAGENET_CATEGORIES)


def read_label_file(path: Path, spec: str) -> list[str]:
    """One class name a line (blank lines skipped), from a bounded, UTF-8, duplicate-free file.

    The names end up in the manifest and in every prediction, so a file that would give mojibake,
    two classes under one name, or an unbounded read is refused with the fix.
    """
    raw = read_bounded(path, MAX_LABEL_FILE_BYTES, "label file (--labels)",
                       hint="pass a text file with one class name per line")  # no FIFO, device or endless read
    skip = len(codecs.BOM_UTF8) if raw.startswith(codecs.BOM_UTF8) else 0  # a BOM is not part of the first name
    try:
        text = raw[skip:].decode("utf-8")
    except UnicodeDecodeError as exc:
        offset = skip + exc.start
        raise TrtInferError(f"--labels {spec} is not UTF-8 text: byte 0x{raw[offset]:02x} at offset {offset} "
                            f"({exc.reason})", hint="save the file as UTF-8, one class name per line") from exc
    numbered = [(number, line.strip()) for number, line in enumerate(text.splitlines(), 1) if line.strip()]
    _refuse_duplicates(numbered, spec)
    return [name for _, name in numbered]


def _refuse_duplicates(numbered: list[tuple[int, str]], spec: str) -> None:
    """Two output classes under one name make predictions ambiguous: name every repeat and its lines."""
    lines: dict[str, list[int]] = {}
    for number, name in numbered:
        lines.setdefault(name, []).append(number)
    repeated = [(name, where) for name, where in lines.items() if len(where) > 1]
    if repeated:
        shown = ", ".join(f"{name!r} (lines {', '.join(map(str, where))})" for name, where in repeated[:5])
        more = f" and {len(repeated) - 5} more" if len(repeated) > 5 else ""
        raise TrtInferError(f"--labels {spec} repeats class names: {shown}{more}",
                            hint="give every output class a distinct name, one per line")


def resolve_labels(spec: str | None, num_classes: int) -> list[str]:
    """``cifar10|cifar100|imagenet|FILE`` (one name a line) or None -> one name per class."""
    if spec is None:
        if num_classes == len(CIFAR10):
            return list(CIFAR10)
        if num_classes == len(CIFAR100):
            return list(CIFAR100)
        if num_classes == 1000:
            return imagenet()
        return [f"class_{i}" for i in range(num_classes)]
    key = spec.lower()
    if key == "cifar10":
        names = list(CIFAR10)
    elif key == "cifar100":
        names = list(CIFAR100)
    elif key == "imagenet":
        names = imagenet()
    else:
        path = Path(spec)
        if not path.is_file():
            raise TrtInferError(f"--labels {spec}: not cifar10, cifar100, imagenet or an existing file",
                                hint="pass a text file with one class name per line")
        names = read_label_file(path, spec)
    if len(names) != num_classes:
        raise TrtInferError(f"--labels {spec} has {len(names)} names but the model has {num_classes} classes",
                            hint="pass a label set with one name per output class")
    return names
