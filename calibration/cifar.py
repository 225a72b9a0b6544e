"""CIFAR-10/100 python-format folders, read directly: no torchvision, no checksum requirement.

Accepts the batches folder itself or its parent (the ``root`` torchvision users pass).

The batches are pickles, and a pickle can name any function to call while loading; so they are read
with an unpickler that resolves only what the format holds (numpy's array rebuilders and bytes),
and every batch is checked (uint8 N x 3072 rows, one integer label in range per row). Each file is
read as a regular file of bounded size (:func:`trtinfer.files.read_bounded`): a FIFO or device in
the folder is refused in one line, never read and never skipped.
"""

from __future__ import annotations

import io
import os
import pickle
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from trtinfer.errors import DataError
from trtinfer.files import read_bounded

CIFAR10_DIR = "cifar-10-batches-py"
CIFAR100_DIR = "cifar-100-python"
#: Largest CIFAR file read: the official ones are at most 160 MB (CIFAR-100's train).
MAX_CIFAR_FILE_BYTES = 512 * 2**20


@dataclass
class LabeledImages:
    """uint8 NHWC RGB images with integer labels, and where they came from."""

    images: np.ndarray
    labels: np.ndarray
    class_names: list[str]
    source: str
    split: str

    def __len__(self) -> int:
        return len(self.labels)


def find_cifar_dir(path: str | Path) -> tuple[str, Path] | None:
    """Return ("cifar10"|"cifar100", folder) when ``path`` is a CIFAR folder or its parent."""
    path = Path(path)
    for candidate in (path, path / CIFAR10_DIR, path / CIFAR100_DIR):
        if (candidate / "batches.meta").is_file() or (candidate / "data_batch_1").is_file() \
                or (candidate / "test_batch").is_file():
            return "cifar10", candidate
        if (candidate / "meta").is_file() and ((candidate / "train").is_file() or (candidate / "test").is_file()):
            return "cifar100", candidate
    return None


_REDOWNLOAD = "download the official python-format CIFAR files again"


def _numpy_reconstructors() -> dict[str, object]:
    """numpy's own array/scalar rebuilders, taken from numpy itself (never imported by a pickle's name)."""
    try:  # numpy >= 2
        from numpy._core.multiarray import _reconstruct, scalar
        from numpy._core.numeric import _frombuffer  # type: ignore[attr-defined]  # private: absent from numpy's stubs
    except ImportError:  # numpy 1.x
        from numpy.core.multiarray import _reconstruct, scalar  # type: ignore[no-redef]
        from numpy.core.numeric import _frombuffer  # type: ignore[no-redef]
    return {"multiarray._reconstruct": _reconstruct, "multiarray.scalar": scalar, "numeric._frombuffer": _frombuffer}


def _latin1_encode(text: str, encoding: str = "latin1") -> bytes:
    """``_codecs.encode`` as Python 3 uses it to pickle bytes at protocol 2, and nothing more."""
    if not isinstance(text, str) or encoding.replace("-", "").replace("_", "").lower() != "latin1":
        raise pickle.UnpicklingError(f"_codecs.encode({type(text).__name__}, {encoding!r}) is not a pickled bytes value")
    return text.encode("latin1")


def _allowed_globals() -> dict[tuple[str, str], object]:
    """Everything a CIFAR batch pickle may name: numpy arrays (uint8 rows) and bytes, nothing callable beyond."""
    rebuild = _numpy_reconstructors()
    allowed: dict[tuple[str, str], object] = {("numpy", "ndarray"): np.ndarray, ("numpy", "dtype"): np.dtype,
                                              ("_codecs", "encode"): _latin1_encode}
    for core in ("numpy.core", "numpy._core"):  # pickles from numpy 1.x and 2.x name the same functions
        for key, func in rebuild.items():
            module, name = key.split(".")
            allowed[(f"{core}.{module}", name)] = func
    return allowed


class _CifarUnpickler(pickle.Unpickler):
    """Unpickler that resolves only the globals a CIFAR batch holds, so a crafted file cannot run code."""

    def __init__(self, file, path: Path) -> None:
        super().__init__(file, encoding="latin1")
        self.path = path
        self.allowed = _allowed_globals()

    def find_class(self, module: str, name: str):  # noqa: D102 - see the class docstring
        found = self.allowed.get((module, name))
        if found is None:
            raise DataError(f"{self.path} refers to {module}.{name}, which a CIFAR batch never holds; "
                            "refusing to load it (a crafted pickle could run code)", hint=_REDOWNLOAD)
        return found


# Whatever a malformed (not malicious) pickle raises while being read: all mean "not a CIFAR batch".
_UNPICKLE_ERRORS = (pickle.UnpicklingError, EOFError, ValueError, TypeError, KeyError, IndexError, AttributeError,
                    OverflowError, MemoryError, RecursionError, struct.error, OSError)


def _unpickle(path: Path, batch: bool = True) -> dict:
    """Read one CIFAR pickle with :class:`_CifarUnpickler`; DataError naming the file on any problem."""
    if not os.path.lexists(path):
        raise DataError(f"{path} is missing", hint="pass a complete CIFAR python-format folder")
    raw = read_bounded(path, MAX_CIFAR_FILE_BYTES, "CIFAR file", DataError, hint=_REDOWNLOAD)
    try:
        data = _CifarUnpickler(io.BytesIO(raw), path).load()
    except DataError:
        raise
    except _UNPICKLE_ERRORS as exc:
        raise DataError(f"{path} is not a readable CIFAR batch ({type(exc).__name__}: {exc})",
                        hint=_REDOWNLOAD) from exc
    if not isinstance(data, dict):
        raise DataError(f"{path} holds a {type(data).__name__}, not the dict of a CIFAR file", hint=_REDOWNLOAD)
    if batch and "data" not in data:
        raise DataError(f"{path} is not a CIFAR batch (no 'data' key)", hint=_REDOWNLOAD)
    return data


def _rows_to_nhwc(rows: object, path: Path) -> np.ndarray:
    """The ``data`` entry (uint8 N x 3072, channel-planar) -> uint8 NHWC images."""
    if not isinstance(rows, np.ndarray) or rows.dtype != np.uint8:
        kind = f"a {rows.dtype} array" if isinstance(rows, np.ndarray) else f"a {type(rows).__name__}"
        raise DataError(f"{path}: 'data' is {kind}, expected a uint8 N x 3072 array", hint=_REDOWNLOAD)
    if rows.ndim != 2 or rows.shape[1] != 3072:
        raise DataError(f"{path}: expected N x 3072 uint8 rows, got shape {rows.shape}", hint=_REDOWNLOAD)
    return rows.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1).copy()


def _labels(batch: dict, key: str, rows: int, num_classes: int, path: Path) -> np.ndarray:
    """The batch's ``key`` labels as int64, checked: integers, one per row, each in 0..num_classes-1."""
    if key not in batch:
        raise DataError(f"{path} has no '{key}' entry (keys: {sorted(map(str, batch))})", hint=_REDOWNLOAD)
    raw = batch[key]
    if not isinstance(raw, (list, tuple, np.ndarray)):
        raise DataError(f"{path}: '{key}' is a {type(raw).__name__}, expected a list of class indices",
                        hint=_REDOWNLOAD)
    try:
        labels = np.asarray(raw) if len(raw) else np.zeros(0, np.int64)
    except (ValueError, TypeError, OverflowError) as exc:
        raise DataError(f"{path}: '{key}' is not a list of class indices ({exc})", hint=_REDOWNLOAD) from exc
    if labels.dtype.kind not in "iu" or labels.ndim != 1:
        sample = next((v for v in raw if isinstance(v, bool) or not isinstance(v, (int, np.integer))), None)
        what = f"holds {sample!r} ({type(sample).__name__})" if sample is not None else f"is {labels.dtype} {labels.shape}"
        raise DataError(f"{path}: '{key}' {what}; CIFAR labels are integer class indices", hint=_REDOWNLOAD)
    if len(labels) != rows:
        raise DataError(f"{path}: {rows} images but {len(labels)} '{key}'", hint=_REDOWNLOAD)
    bad = labels[(labels < 0) | (labels >= num_classes)]
    if len(bad):
        raise DataError(f"{path}: '{key}' holds {int(bad[0])}, outside 0..{num_classes - 1} "
                        f"({len(bad)} labels out of range)", hint=_REDOWNLOAD)
    return labels.astype(np.int64)


def _class_names(meta: dict, key: str, path: Path) -> list[str] | None:
    """``label_names`` / ``fine_label_names`` of a meta file as a list of str; None when absent."""
    names = meta.get(key)
    if names is None:
        return None
    if not isinstance(names, (list, tuple)) or not all(isinstance(n, (str, bytes)) for n in names) or not names:
        raise DataError(f"{path}: '{key}' is not a list of class names", hint=_REDOWNLOAD)
    return [n.decode("latin1") if isinstance(n, bytes) else n for n in names]


def load_cifar(path: str | Path, split: str = "test") -> LabeledImages:
    """Read the ``train`` or ``test`` split of a CIFAR-10/100 python-format folder."""
    if split not in ("train", "test"):
        raise ValueError(f"split must be train or test, not {split!r}")
    found = find_cifar_dir(path)
    if found is None:
        raise DataError(f"{path} is not a CIFAR-10/100 python-format folder (nor its parent)",
                        hint=f"pass the folder holding {CIFAR10_DIR}/ or {CIFAR100_DIR}/, or that folder itself")
    kind, folder = found
    if kind == "cifar10":
        names_file = folder / "batches.meta"
        class_names = _class_names(_unpickle(names_file, batch=False), "label_names", names_file) \
            if os.path.lexists(names_file) else None
        files = [folder / "test_batch"] if split == "test" else sorted(folder.glob("data_batch_*"))
        label_key = "labels"
    else:
        class_names = _class_names(_unpickle(folder / "meta", batch=False), "fine_label_names", folder / "meta")
        files = [folder / split]
        label_key = "fine_labels"
    if class_names is None:
        from trtinfer.labels import CIFAR10, CIFAR100
        class_names = CIFAR10 if kind == "cifar10" else CIFAR100
    files = [f for f in files if os.path.lexists(f)]  # a FIFO or device among them is refused, not skipped
    if not files:
        raise DataError(f"{folder} has no {split} split", hint=f"pass a folder that holds the CIFAR {split} batch(es)")
    images, labels = [], []
    for f in files:
        batch = _unpickle(f)
        images.append(_rows_to_nhwc(batch["data"], f))
        labels.append(_labels(batch, label_key, len(images[-1]), len(class_names), f))
    x, y = np.concatenate(images), np.concatenate(labels)
    return LabeledImages(images=x, labels=y, class_names=list(class_names), source=str(folder), split=split)
