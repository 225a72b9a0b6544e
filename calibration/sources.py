"""Labeled image sources for calibration and evaluation, read without torchvision.

``load_labeled(path, split)`` accepts:

- a CIFAR-10 / CIFAR-100 python-format folder (``cifar-10-batches-py``, ``cifar-100-python``) or its
  parent;
- an ImageFolder-style directory: one subfolder of images per class, optionally below split folders
  ``train/`` and ``test/`` (or ``val/``); the rows are the files' paths, and an image is decoded only
  when a reader indexes it, converted to RGB as serving converts it (:func:`trtinfer.pixels.to_uint8_rgb`:
  16-bit images scaled to 8 bits, not clipped);
- a ``.npy`` file of raw images: uint8 NHWC with 3 channels (no labels);
- a ``.npz`` file with ``images`` (or ``x``): uint8 NHWC with 3 channels, and optional ``labels``
  (or ``y``) and ``class_names``.

Arrays must hold raw uint8 RGB pixels: float arrays are refused, because the manifest's
preprocessing (:func:`trtinfer.preprocess.preprocess`, the one implementation) is applied to every
image here, and a float array's own preprocessing cannot be checked against the model's.

A data folder is read within itself: a link inside it may lead anywhere inside it (each folder is
walked once, so link loops end), but a link that leads outside it, a class folder linked to ``/`` or
an image linked to ``/dev/zero``, is refused with one line naming it. Refused rather than skipped:
the rows trained, calibrated and evaluated on are then exactly what the folder holds, never a subset
a warning explained. Every file is read as a regular file (:mod:`trtinfer.files`): FIFOs and
devices are refused in one line, never read.
"""

from __future__ import annotations

import io
import logging
import os
import stat
import struct
import warnings
import zipfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from trtinfer import pixels
from trtinfer.errors import DataError
from trtinfer.files import check_regular, open_regular, read_bounded
from trtinfer.preprocess import MAX_IMAGE_PIXELS, bomb_size

from .cifar import LabeledImages, find_cifar_dir, load_cifar

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm")
#: The PIL decoders for those files: Pillow identifies a file by its content, and a ".png" holding EPS would
#: otherwise reach the EPS plugin, which runs Ghostscript.
IMAGE_FORMATS = ("PNG", "JPEG", "BMP", "GIF", "WEBP", "TIFF", "PPM")
SPLITS = ("train", "test")
# split asked -> folder names that hold it, in order of preference
SPLIT_FOLDERS = {"train": ("train",), "test": ("test", "val", "valid", "validation")}
UNSPLIT = "all"  # LabeledImages.split of a source without split folders
NO_LABEL = -1
# Decoded images above MAX_IMAGE_PIXELS (trtinfer.preprocess's bound, the one serving uses too) are
# refused from the header, before decoding; PIL's own global limit is left alone.
#: Largest image file read: no encoding of an image within MAX_IMAGE_PIXELS takes more (16 bytes a
#: pixel: uncompressed 16-bit RGBA is 8).
MAX_IMAGE_FILE_BYTES = 16 * MAX_IMAGE_PIXELS
_BROKEN_HINT = "remove or replace the broken file"


class ImageFiles(Sequence):
    """Image files by path, each decoded (to uint8 HxWx3 RGB, :func:`decode_image`) only when indexed:
    a folder or a subset of it (:func:`take`) holds paths, and a reader holds the images it uses."""

    def __init__(self, paths: list[Path]) -> None:
        self.paths = paths

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index):
        if isinstance(index, (slice, np.ndarray, list)):
            picked = self.paths[index] if isinstance(index, slice) else [self.paths[int(i)] for i in index]
            return [decode_image(p) for p in picked]
        return decode_image(self.paths[int(index)])

    def largest_pixels(self) -> int:
        """Width x height of the largest image, read from the headers (nothing is decoded); each
        file is checked as :func:`decode_image` checks it, so a bad one is refused here already."""
        return max((_header_pixels(p) for p in self.paths), default=0)


def decode_image(path: Path) -> np.ndarray:
    """One image file -> uint8 HxWx3 RGB; DataError naming the file when it cannot be used.

    Read as a regular file (a FIFO or device is refused in one line) of at most
    :data:`MAX_IMAGE_FILE_BYTES`; the pixel count is checked from the header before decoding
    (:data:`MAX_IMAGE_PIXELS`), so a few-kilobyte file that inflates to gigabytes (a decompression
    bomb) is refused, not decoded; then converted by :func:`trtinfer.pixels.to_uint8_rgb`, the
    conversion serving uses, so a 16-bit or palette image gives the tensors it is served as.
    """
    data = read_bounded(path, MAX_IMAGE_FILE_BYTES, "image", DataError, hint=_BROKEN_HINT)
    with _opened(path, io.BytesIO(data)) as img:
        return pixels.to_uint8_rgb(img)


def _header_pixels(path: Path) -> int:
    """Width x height from the image's header, the file checked as :func:`decode_image` checks it."""
    with open_regular(path, "image", DataError, MAX_IMAGE_FILE_BYTES, hint=_BROKEN_HINT) as f, _opened(path, f) as img:
        return int(img.size[0]) * int(img.size[1])


@contextmanager
def _opened(path: Path, source: BinaryIO) -> Iterator[Any]:
    """``source`` opened as a PIL image (its header read, nothing decoded) with its size checked; any
    failure to open, decode or convert it while it is open is a DataError naming ``path``."""
    from PIL import Image, UnidentifiedImageError

    try:
        with warnings.catch_warnings():  # over PIL's warning limit is over ours too: refused below
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = Image.open(source, formats=list(IMAGE_FORMATS))
        with img:
            _check_pixels(path, img.size)
            try:
                pixels.check_image_size(img.size[0], img.size[1], MAX_IMAGE_PIXELS, what=f"image {path}")
            except pixels.ImageError as exc:  # empty, or a sliver
                raise DataError(exc.message, hint=exc.hint) from None
            yield img
    except pixels.ImageError as exc:  # values a conversion cannot scale (a mode "I" image beyond 16 bits)
        raise DataError(f"image {path}: {exc.message}", hint=exc.hint) from None
    except Image.DecompressionBombError as exc:  # PIL refuses these before giving the size
        raise _too_large(path, bomb_size(exc)) from exc
    except UnidentifiedImageError as exc:
        raise DataError(f"cannot decode image {path}: it is not a {', '.join(IMAGE_FORMATS)} image",
                        hint=_BROKEN_HINT) from exc
    except (OSError, ValueError, SyntaxError, EOFError, struct.error) as exc:
        raise DataError(f"cannot decode image {path}: {exc}", hint=_BROKEN_HINT) from exc


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
    """Rows ``indices`` of an image array (uint8 NHWC), or of :class:`ImageFiles` as ImageFiles
    (paths: nothing is decoded)."""
    if isinstance(images, ImageFiles):
        return ImageFiles([images.paths[int(i)] for i in np.asarray(indices, dtype=np.int64)])
    return images[np.asarray(indices, dtype=np.int64)]


def largest_pixels(images) -> int:
    """Width x height of the largest image of an array (its shape) or of :class:`ImageFiles` (headers)."""
    if isinstance(images, ImageFiles):
        return images.largest_pixels()
    return int(images.shape[1]) * int(images.shape[2]) if len(images) else 0


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
    if not path.is_dir():
        check_regular(path, "data file", DataError)  # a FIFO or device: one line, never read
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

_Entry = tuple[Path, Path, str]  # (path below the data folder, real path, "dir" | "file" | "other")


def _outside(path: Path, root: Path, real: Path) -> DataError:
    return DataError(f"{path} points outside the data folder {root} (to {real}); a data folder is read only "
                     "within itself", hint="copy the data into the folder instead of linking to it, or pass a folder "
                                           "that holds both")


def _entries(folder: Path, real_folder: Path, root: Path, real_root: Path) -> list[_Entry]:
    """The visible entries of ``folder`` (real path ``real_folder``), sorted by name; DataError for a
    link that leads outside ``root`` (real path ``real_root``). Only links are resolved (one stat
    each): an entry of a real folder inside the root is inside it."""
    try:
        with os.scandir(folder) as listing:
            found = sorted((e for e in listing if not e.name.startswith(".")), key=lambda e: e.name)
    except PermissionError as exc:
        raise DataError(f"cannot read folder {folder} (permission denied)", hint="check its permissions") from exc
    except OSError as exc:
        raise DataError(f"cannot read folder {folder}: {exc.strerror or exc}", hint="check the path") from exc
    entries: list[_Entry] = []
    for entry in found:
        path = folder / entry.name
        if entry.is_symlink():
            real = Path(os.path.realpath(path))
            if not real.is_relative_to(real_root):
                raise _outside(path, root, real)
            try:
                mode = os.stat(real).st_mode
            except OSError:  # a broken link: refused below if it names an image
                mode = 0
            kind = "dir" if stat.S_ISDIR(mode) else "file" if stat.S_ISREG(mode) else "other"
        else:
            real = real_folder / entry.name
            kind = "dir" if entry.is_dir(follow_symlinks=False) else \
                "file" if entry.is_file(follow_symlinks=False) else "other"
        entries.append((path, real, kind))
    return entries


def _is_image(entry: _Entry) -> bool:
    """An image file by its name; one that is not a regular file (FIFO, device, broken link) is refused."""
    path, _, kind = entry
    if kind == "dir" or path.suffix.lower() not in IMAGE_EXTENSIONS:
        return False
    if kind != "file":
        check_regular(path, "image", DataError)
    return True


def _subdirs(folder: Path, real_folder: Path, root: Path, real_root: Path) -> list[tuple[Path, Path]]:
    return [(path, real) for path, real, kind in _entries(folder, real_folder, root, real_root) if kind == "dir"]


def _images(folder: Path, real_folder: Path, root: Path, real_root: Path) -> list[Path]:
    """The images below ``folder``, links inside the root followed; each folder is walked once (by
    its real path), so a link loop ends."""
    found: list[Path] = []
    seen, todo = {real_folder}, [(folder, real_folder)]
    while todo:
        here, real_here = todo.pop()
        for entry in _entries(here, real_here, root, real_root):
            path, real, kind = entry
            if kind == "dir" and real not in seen:
                seen.add(real)
                todo.append((path, real))
            elif _is_image(entry):
                found.append(path)
    return sorted(found)


def _split_folders(root: Path, real_root: Path) -> dict[str, tuple[Path, Path]]:
    names = {path.name.lower(): (path, real) for path, real in _subdirs(root, real_root, root, real_root)}
    found = {}
    for split, candidates in SPLIT_FOLDERS.items():
        for name in candidates:
            if name in names:
                found[split] = names[name]
                break
    return found


def _load_image_folder(root: Path, split: str) -> LabeledImages:
    real_root = Path(os.path.realpath(root))
    splits = _split_folders(root, real_root)
    if splits:
        if split not in splits:
            wanted = " or ".join(f"{n}/" for n in SPLIT_FOLDERS[split])
            raise DataError(f"{root} has split folders ({', '.join(p.name for p, _ in splits.values())}) but no "
                            f"{wanted}", hint=f"add a {SPLIT_FOLDERS[split][0]}/ folder of class subfolders")
        (folder, real_folder), split_name = splits[split], split
        # Class indices come from the union over splits so that train and test agree.
        class_names = sorted({d.name for f, r in splits.values() for d, _ in _subdirs(f, r, root, real_root)})
    else:
        (folder, real_folder), split_name = (root, real_root), UNSPLIT
        class_names = [d.name for d, _ in _subdirs(root, real_root, root, real_root)]
    if not class_names:
        if any(_is_image(e) for e in _entries(folder, real_folder, root, real_root)):
            raise DataError(f"{folder} holds images but no class subfolders",
                            hint="put the images in one subfolder per class (ImageFolder layout)")
        raise DataError(f"{folder} is empty: no CIFAR batches, no class subfolders of images",
                        hint="pass a CIFAR folder (or its parent), an ImageFolder-style directory, or a .npy/.npz")
    class_dirs = {path.name: (path, real) for path, real in _subdirs(folder, real_folder, root, real_root)}
    paths: list[Path] = []
    labels: list[int] = []
    for index, name in enumerate(class_names):
        if name not in class_dirs:  # a class of the other split only
            continue
        files = _images(*class_dirs[name], root, real_root)
        paths.extend(files)
        labels.extend([index] * len(files))
    if not paths:
        raise DataError(f"{folder} has class subfolders but no images in them "
                        f"(looked for {', '.join(IMAGE_EXTENSIONS)})",
                        hint="check that the folder holds the image files")
    return LabeledImages(images=ImageFiles(paths), labels=np.asarray(labels, dtype=np.int64),  # type: ignore[arg-type]
                         class_names=class_names, source=str(real_root), split=split_name)


def class_counts(data: LabeledImages) -> np.ndarray:
    """Images per class (length ``len(class_names)``); empty for unlabeled sources."""
    labels = data.labels[data.labels >= 0]
    return np.bincount(labels, minlength=len(data.class_names)) if len(labels) else np.zeros(0, np.int64)


def empty_classes(data: LabeledImages) -> list[str]:
    """Names of the classes that have no image in this split."""
    counts = class_counts(data)
    return [data.class_names[i] for i in np.flatnonzero(counts == 0)] if len(counts) else []
