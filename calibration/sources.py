"""Labeled image sources for calibration and evaluation, read without torchvision.

``load_labeled(path, split)`` accepts:

- a CIFAR-10 / CIFAR-100 python-format folder (``cifar-10-batches-py``, ``cifar-100-python``) or its
  parent;
- an ImageFolder-style directory: one subfolder of images per class, optionally below split folders
  ``train/`` and ``test/`` (or ``val/``); images are decoded lazily and converted to RGB;
- a ``.npy`` file of raw images: uint8 NHWC with 3 channels (no labels);
- a ``.npz`` file with ``images`` (or ``x``): uint8 NHWC with 3 channels, and optional ``labels``
  (or ``y``) and ``class_names``.

Arrays must hold raw uint8 RGB pixels: float arrays are refused, because the manifest's
preprocessing (:func:`trtinfer.preprocess.preprocess`, the one implementation) is applied to every
image here, and a float array's own preprocessing cannot be checked against the model's.
"""

from __future__ import annotations

import logging
import os
import struct
import warnings
import zipfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from trtinfer.errors import DataError
from trtinfer.preprocess import MAX_IMAGE_PIXELS, bomb_size

from .cifar import LabeledImages, find_cifar_dir, load_cifar

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm")
SPLITS = ("train", "test")
# split asked -> folder names that hold it, in order of preference
SPLIT_FOLDERS = {"train": ("train",), "test": ("test", "val", "valid", "validation")}
UNSPLIT = "all"  # LabeledImages.split of a source without split folders
NO_LABEL = -1
# Decoded images above MAX_IMAGE_PIXELS (trtinfer.preprocess's bound, the one serving uses too) are
# refused from the header, before decoding; PIL's own global limit is left alone.


class ImageFiles(Sequence):
    """Image files decoded on access (to uint8 HxWx3 RGB), so only the rows drawn are ever read."""

    def __init__(self, paths: list[Path]) -> None:
        self.paths = paths

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index):
        if isinstance(index, (slice, np.ndarray, list)):
            picked = self.paths[index] if isinstance(index, slice) else [self.paths[int(i)] for i in index]
            return [decode_image(p) for p in picked]
        return decode_image(self.paths[int(index)])


def decode_image(path: Path) -> np.ndarray:
    """One image file -> uint8 HxWx3 RGB; DataError naming the file when it cannot be decoded.

    The pixel count is checked from the header before decoding (:data:`MAX_IMAGE_PIXELS`), so a
    few-kilobyte file that inflates to gigabytes (a decompression bomb) is refused, not decoded.
    """
    from PIL import Image, UnidentifiedImageError

    try:
        with warnings.catch_warnings():  # over PIL's warning limit is over ours too: refused below
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = Image.open(path)
        with img:
            _check_pixels(path, img.size)
            return np.asarray(img.convert("RGB"), dtype=np.uint8)
    except Image.DecompressionBombError as exc:  # PIL refuses these before giving the size
        raise _too_large(path, bomb_size(exc)) from exc
    except (OSError, UnidentifiedImageError, ValueError, SyntaxError, EOFError, struct.error) as exc:
        raise DataError(f"cannot decode image {path}: {exc}",
                        hint="remove or replace the broken file") from exc


def _check_pixels(path: Path, size: tuple[int, int]) -> None:
    """Refuse an image whose header promises more than MAX_IMAGE_PIXELS, before anything is decoded."""
    width, height = size
    if width * height > MAX_IMAGE_PIXELS:
        raise _too_large(path, f"{width}x{height} ({width * height:,} pixels)")


def _too_large(path: Path, size: str) -> DataError:
    """The one message for oversized images, whether PIL or :func:`_check_pixels` noticed."""
    return DataError(f"image {path} is {size}, over the {MAX_IMAGE_PIXELS:,}-pixel bound for decoded images",
                     hint="downscale it (the model's input is far smaller) or remove it")


def take(images, indices: np.ndarray):
    """Rows ``indices`` of an image array (uint8 NHWC) or of :class:`ImageFiles` (list of HWC)."""
    return images[np.asarray(indices, dtype=np.int64)]


# -- dispatch ---------------------------------------------------------------------------------

def load_labeled(path: str | Path, split: str = "train") -> LabeledImages:
    """Read the ``split`` ("train" or "test") of a data source; see the module docstring for formats.

    ``images`` is a uint8 NHWC array, or an :class:`ImageFiles` sequence for image folders.
    ``labels`` holds -1 for every row of an unlabeled source (``.npy``, ``.npz`` without labels).
    Sources without a train/test split return all rows with ``split == "all"``.
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, not {split!r}")
    path = Path(path).expanduser()
    if not path.exists():
        raise DataError(f"data path not found: {path}",
                        hint="pass a CIFAR folder (or its parent), an image folder, or a .npy/.npz file")
    if path.is_file():
        suffix = path.suffix.lower()
        if suffix == ".npy":
            return _load_npy(path)
        if suffix == ".npz":
            return _load_npz(path)
        raise DataError(f"{path} is a file but not .npy or .npz",
                        hint="pass a CIFAR folder (or its parent), an image folder, or a .npy/.npz file")
    if not os.access(path, os.R_OK | os.X_OK):
        raise DataError(f"cannot read folder {path} (permission denied)", hint="check its permissions")
    if find_cifar_dir(path) is not None:
        data = load_cifar(path, split)
        return LabeledImages(images=data.images, labels=data.labels, class_names=data.class_names,
                             source=str(Path(data.source).resolve()), split=data.split)
    return _load_image_folder(path, split)


def source_kind(path: str | Path) -> str:
    """"cifar10", "cifar100", "imagefolder", "npy" or "npz" (without reading the images)."""
    path = Path(path)
    if path.is_file():
        return path.suffix.lower().lstrip(".")
    found = find_cifar_dir(path)
    return found[0] if found else "imagefolder"


# -- arrays -----------------------------------------------------------------------------------

def _check_image_array(arr: np.ndarray, where: Path) -> np.ndarray:
    if arr.dtype.kind == "f":
        raise DataError(
            f"{where} holds {arr.dtype} values; trtinfer takes raw uint8 RGB images so that it can apply "
            "the model's own preprocessing",
            hint="save the images before normalization, e.g. (x * 255).round().astype('uint8') in NHWC order")
    if arr.dtype != np.uint8:
        raise DataError(f"{where} holds {arr.dtype} values, expected uint8 images (0-255)",
                        hint="save the images as uint8 NHWC RGB")
    if arr.ndim != 4:
        raise DataError(f"{where} has shape {arr.shape}; expected a uint8 batch N x H x W x 3 (NHWC)",
                        hint="stack the images into one NHWC array")
    if arr.shape[3] != 3:
        if arr.shape[1] == 3:
            raise DataError(f"{where} has shape {arr.shape}, which looks channels-first (NCHW)",
                            hint="save it channels-last: x.transpose(0, 2, 3, 1)")
        raise DataError(f"{where} has {arr.shape[3]} channels (shape {arr.shape}); the model takes 3 (RGB)",
                        hint="convert the images to RGB before saving them")
    if len(arr) == 0:
        raise DataError(f"{where} holds no images", hint="pass a file with at least one image")
    return arr


def _read_array(path: Path):
    try:
        return np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise DataError(f"cannot read {path}: {exc}", hint="write it with numpy.save / numpy.savez") from exc


def _load_npy(path: Path) -> LabeledImages:
    arr = _check_image_array(_read_array(path), path)
    labels = np.full(len(arr), NO_LABEL, dtype=np.int64)
    return LabeledImages(images=arr, labels=labels, class_names=[], source=str(path.resolve()), split=UNSPLIT)


def _load_npz(path: Path) -> LabeledImages:
    npz = _read_array(path)
    with npz:
        keys = set(npz.files)
        if "manifest" in keys and "x" in keys and "indices" in keys:
            raise DataError(f"{path} is a trtinfer calibration set, not raw images",
                            hint="pass it with --calib-set, or pass the image source it was made from")
        image_key = next((k for k in ("images", "x") if k in keys), None)
        if image_key is None:
            raise DataError(f"{path} has no 'images' (or 'x') array; it holds {sorted(keys)}",
                            hint="save the images under the key 'images' (labels under 'labels')")
        try:
            arr = _check_image_array(npz[image_key], path)
            label_key = next((k for k in ("labels", "y") if k in keys), None)
            labels = npz[label_key] if label_key else None
            names = [str(n) for n in npz["class_names"]] if "class_names" in keys else None
        except ValueError as exc:  # object arrays need pickle: refused
            raise DataError(f"cannot read {path}: {exc}", hint="store plain numeric arrays") from exc
    if labels is None:
        labels = np.full(len(arr), NO_LABEL, dtype=np.int64)
    else:
        labels = np.asarray(labels)
        if labels.dtype.kind not in "iu" or labels.ndim != 1:
            raise DataError(f"{path}: labels must be a 1-D integer array, got {labels.dtype} {labels.shape}",
                            hint="store class indices, not one-hot vectors or names")
        if len(labels) != len(arr):
            raise DataError(f"{path}: {len(arr)} images but {len(labels)} labels")
        labels = labels.astype(np.int64)
        if labels.min() < 0:
            raise DataError(f"{path}: labels must be class indices >= 0 (found {labels.min()})")
    if names is None:
        names = [f"class_{i}" for i in range(int(labels.max()) + 1)] if labels.max() >= 0 else []
    elif labels.max() >= len(names):
        raise DataError(f"{path}: label {labels.max()} but only {len(names)} class_names")
    return LabeledImages(images=arr, labels=labels, class_names=names, source=str(path.resolve()), split=UNSPLIT)


# -- image folders ----------------------------------------------------------------------------

def _is_image(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_EXTENSIONS and path.is_file() and not path.name.startswith(".")


def _subdirs(folder: Path) -> list[Path]:
    try:
        return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    except PermissionError as exc:
        raise DataError(f"cannot read folder {folder} (permission denied)", hint="check its permissions") from exc


def _split_folders(root: Path) -> dict[str, Path]:
    names = {p.name.lower(): p for p in _subdirs(root)}
    found = {}
    for split, candidates in SPLIT_FOLDERS.items():
        for name in candidates:
            if name in names:
                found[split] = names[name]
                break
    return found


def _load_image_folder(root: Path, split: str) -> LabeledImages:
    splits = _split_folders(root)
    if splits:
        if split not in splits:
            wanted = " or ".join(f"{n}/" for n in SPLIT_FOLDERS[split])
            raise DataError(f"{root} has split folders ({', '.join(p.name for p in splits.values())}) but no {wanted}",
                            hint=f"add a {SPLIT_FOLDERS[split][0]}/ folder of class subfolders")
        folder, split_name = splits[split], split
        # Class indices come from the union over splits so that train and test agree.
        class_names = sorted({d.name for f in splits.values() for d in _subdirs(f)})
    else:
        folder, split_name = root, UNSPLIT
        class_names = [d.name for d in _subdirs(root)]
    if not class_names:
        loose = [p for p in folder.iterdir() if _is_image(p)] if folder.is_dir() else []
        if loose:
            raise DataError(f"{folder} holds images but no class subfolders",
                            hint="put the images in one subfolder per class (ImageFolder layout)")
        raise DataError(f"{folder} is empty: no CIFAR batches, no class subfolders of images",
                        hint="pass a CIFAR folder (or its parent), an ImageFolder-style directory, or a .npy/.npz")
    paths: list[Path] = []
    labels: list[int] = []
    for index, name in enumerate(class_names):
        class_dir = folder / name
        if not class_dir.is_dir():
            continue
        try:
            files = sorted(p for p in class_dir.rglob("*") if _is_image(p))
        except PermissionError as exc:
            raise DataError(f"cannot read folder {class_dir} (permission denied)", hint="check its permissions") from exc
        paths.extend(files)
        labels.extend([index] * len(files))
    if not paths:
        raise DataError(f"{folder} has class subfolders but no images in them "
                        f"(looked for {', '.join(IMAGE_EXTENSIONS)})",
                        hint="check that the folder holds the image files")
    return LabeledImages(images=ImageFiles(paths), labels=np.asarray(labels, dtype=np.int64),  # type: ignore[arg-type]
                         class_names=class_names, source=str(root.resolve()), split=split_name)


def class_counts(data: LabeledImages) -> np.ndarray:
    """Images per class (length ``len(class_names)``); empty for unlabeled sources."""
    labels = data.labels[data.labels >= 0]
    return np.bincount(labels, minlength=len(data.class_names)) if len(labels) else np.zeros(0, np.int64)


def empty_classes(data: LabeledImages) -> list[str]:
    """Names of the classes that have no image in this split."""
    counts = class_counts(data)
    return [data.class_names[i] for i in np.flatnonzero(counts == 0)] if len(counts) else []
