"""Training data for ``trtinfer finetune``: the readers the build uses, a seeded class-balanced
validation split, augmentation, and batches preprocessed exactly as the artifact will be.

Images stay uint8 at their native size; an image folder's rows stay paths until a batch needs them.
Each row of a batch is decoded, augmented at its native size (random crop with padding, horizontal
flip: the CIFAR recipe, as the tutorials apply it before upsampling) and turned into the model's
tensor by :func:`trtinfer.pixels.images_to_tensor` with the checkpoint's preprocessing before the
next is decoded, so one native-size image is held at a time whatever the batch size, and training,
validation, the build's accuracy check and serving all see one preprocessing.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from trtinfer import pixels
from trtinfer.calibration.cifar import LabeledImages
from trtinfer.calibration.sources import largest_pixels, load_labeled, take
from trtinfer.errors import DataError, TrtInferError
from trtinfer.manifest import PreprocessSpec

CIFAR10_URL_NOTE = "https://www.cs.toronto.edu/~kriz/cifar.html"


@dataclass
class TrainData:
    """The training rows, the validation rows split off them, and the data's own test split (if any)."""

    train: LabeledImages
    val: LabeledImages
    test: LabeledImages | None
    class_names: list[str]
    source: str
    kind: str  # cifar10 | cifar100 | folder

    @property
    def native_size(self) -> int | None:
        """The images' side when they are all one square size (CIFAR: 32), else None."""
        images = self.train.images
        if isinstance(images, np.ndarray) and images.ndim == 4 and images.shape[1] == images.shape[2]:
            return int(images.shape[1])
        return None

    def largest_pixels(self) -> int:
        """Width x height of the largest image training or evaluation decodes (image folders: from the
        headers), for the memory check."""
        splits = [self.train, self.val] + ([self.test] if self.test is not None else [])
        return max(largest_pixels(split.images) for split in splits)


def download_cifar10(cache: Path) -> Path:
    """The full CIFAR-10 through torchvision into ``cache`` (never the shared subset's folder, whose
    files torchvision's checksums reject); a clear error when offline."""
    import torchvision

    cache.mkdir(parents=True, exist_ok=True)
    try:
        torchvision.datasets.CIFAR10(root=str(cache), train=True, download=True)
    except Exception as exc:  # noqa: BLE001 -- urllib raises URLError, OSError, socket errors, HTTP errors
        raise DataError(f"cannot download CIFAR-10 into {cache} ({type(exc).__name__}: {str(exc)[:120]})",
                        hint=f"without network access pass --data DIR with the python-format CIFAR-10 "
                             f"({CIFAR10_URL_NOTE}) or an image folder") from None
    return cache / "cifar-10-batches-py"


def _balanced_split(labels: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train rows, val rows): ``fraction`` of each class, drawn with ``seed``."""
    rng = np.random.default_rng(seed)
    val: list[np.ndarray] = []
    for cls in np.unique(labels):
        rows = np.flatnonzero(labels == cls)
        count = int(round(len(rows) * fraction))
        if len(rows) >= 2:
            count = min(max(count, 1), len(rows) - 1)
        else:
            count = 0
        val.append(rng.permutation(rows)[:count])
    val_rows = np.sort(np.concatenate(val)) if val else np.zeros(0, np.int64)
    train_rows = np.setdiff1d(np.arange(len(labels)), val_rows)
    return train_rows, val_rows


def _subset(data: LabeledImages, rows: np.ndarray, split: str) -> LabeledImages:
    return LabeledImages(images=take(data.images, rows), labels=data.labels[rows], class_names=data.class_names,
                         source=data.source, split=split)


def load_train_data(path: Path, val_fraction: float, seed: int) -> TrainData:
    """Labelled training rows from ``path`` (CIFAR-10/100 python folder or its parent, image folder)."""
    from trtinfer.calibration.cifar import find_cifar_dir

    found = find_cifar_dir(path)
    kind = found[0] if found else "folder"
    train = load_labeled(path, "train")
    if len(train) == 0:
        raise DataError(f"{path} holds no training images", hint="pass a folder with one sub-folder of images per class")
    if (train.labels < 0).any():
        raise DataError(f"{path} has no labels", hint="pass labelled data: a CIFAR folder or an image folder "
                                                      "with one sub-folder per class")
    names = list(train.class_names)
    counts = np.bincount(train.labels, minlength=len(names))
    if len(names) < 2 or (counts == 0).any():
        empty = [names[i] for i in np.flatnonzero(counts == 0)][:5]
        raise DataError(f"{path} has {len(names)} classes" + (f", and none of {', '.join(empty)} has an image"
                                                               if empty else ""),
                        hint="a classifier needs at least two classes, each with images")
    test = None
    if train.split == "train":
        try:
            test = load_labeled(path, "test")
        except DataError:
            test = None
        if test is not None and list(test.class_names) != names:
            raise DataError(f"the test split of {path} has classes {test.class_names[:5]}, the train split "
                            f"{names[:5]}", hint="give both splits the same class folders")
    train_rows, val_rows = _balanced_split(train.labels, val_fraction, seed)
    return TrainData(train=_subset(train, train_rows, "train"), val=_subset(train, val_rows, "val"), test=test,
                     class_names=names, source=str(train.source), kind=kind)


def augment(image: np.ndarray, generator: torch.Generator) -> np.ndarray:
    """Random crop after zero padding by an eighth of the side (4 px at 32), and a horizontal flip."""
    h, w = image.shape[:2]
    pad = max(1, min(h, w) // 8)
    padded = np.zeros((h + 2 * pad, w + 2 * pad, 3), np.uint8)
    padded[pad:pad + h, pad:pad + w] = image
    dy, dx = (int(v) for v in torch.randint(0, 2 * pad + 1, (2,), generator=generator))
    out = padded[dy:dy + h, dx:dx + w]
    if bool(torch.rand(1, generator=generator) < 0.5):
        out = out[:, ::-1]
    return np.ascontiguousarray(out)


def to_tensor(images: list[np.ndarray], spec: PreprocessSpec) -> torch.Tensor:
    """uint8 HWC images -> the model's float32 NCHW batch, as the artifact's preprocessing does it."""
    try:
        x = pixels.images_to_tensor(images, input_size=spec.input_size, resize=spec.resize, mean=spec.mean,
                                    std=spec.std, scale=spec.scale, interpolation=spec.interpolation)
    except pixels.ImageError as exc:
        raise DataError(exc.message, hint=exc.hint) from None
    return torch.from_numpy(x)


def _row(images: Any, index: int, spec: PreprocessSpec, generator: torch.Generator | None) -> torch.Tensor:
    """Row ``index`` decoded, augmented with ``generator`` (if any) and preprocessed: its (1, 3, H, W) tensor.
    A function of its own so that its native-size images are freed before the next row is decoded."""
    image = pixels.to_uint8_rgb(images[index])
    if generator is not None:
        image = augment(image, generator)
    return to_tensor([image], spec)


def batches(data: LabeledImages, spec: PreprocessSpec, batch_size: int, generator: torch.Generator | None,
            ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """(x, y) batches: shuffled and augmented with ``generator``, in order and plain without it. Rows are
    decoded one at a time (:func:`_row`), so memory holds one native-size image, not a batch of them."""
    n = len(data)
    order = torch.randperm(n, generator=generator).numpy() if generator is not None else np.arange(n)
    labels = torch.from_numpy(np.asarray(data.labels, dtype=np.int64))
    for start in range(0, n, batch_size):
        rows = order[start:start + batch_size]
        if generator is not None and len(rows) < 2:
            continue  # BatchNorm cannot train on a batch of one
        x = torch.cat([_row(data.images, int(i), spec, generator) for i in rows])
        yield x, labels[torch.from_numpy(rows)]


def check_classes(data: TrainData, num_classes: int | None) -> None:
    if num_classes is not None and num_classes != len(data.class_names):
        raise TrtInferError(f"the data has {len(data.class_names)} classes, the resumed training {num_classes}",
                            hint="resume with the data it was started on, or start again without --resume")
