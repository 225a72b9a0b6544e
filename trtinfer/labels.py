"""Class-name sets a build can record in the manifest (``--labels``)."""

from __future__ import annotations

from pathlib import Path

from .errors import TrtInferError

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
        names = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    if len(names) != num_classes:
        raise TrtInferError(f"--labels {spec} has {len(names)} names but the model has {num_classes} classes",
                            hint="pass a label set with one name per output class")
    return names
