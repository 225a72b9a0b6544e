"""CIFAR-10/100 python-format folders, read directly: no torchvision, no checksum requirement.

Accepts the batches folder itself or its parent (the ``root`` torchvision users pass).
"""

from __future__ import annotations

import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from trtinfer.errors import DataError

CIFAR10_DIR = "cifar-10-batches-py"
CIFAR100_DIR = "cifar-100-python"


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


def _unpickle(path: Path, batch: bool = True) -> dict:
    try:
        with open(path, "rb") as f:
            data = pickle.load(f, encoding="latin1")
    except FileNotFoundError as exc:
        raise DataError(f"{path} is missing", hint="pass a complete CIFAR python-format folder") from exc
    except (pickle.UnpicklingError, EOFError, ValueError, OSError) as exc:
        raise DataError(f"{path} is not a readable CIFAR batch ({exc})", hint="download the python-format CIFAR files again") from exc
    if not isinstance(data, dict) or (batch and "data" not in data):
        raise DataError(f"{path} is not a CIFAR batch (no 'data' key)")
    return data


def _rows_to_nhwc(rows: np.ndarray, path: Path) -> np.ndarray:
    rows = np.asarray(rows, dtype=np.uint8)
    if rows.ndim != 2 or rows.shape[1] != 3072:
        raise DataError(f"{path}: expected N x 3072 uint8 rows, got shape {rows.shape}")
    return rows.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1).copy()


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
        class_names = _unpickle(names_file, batch=False)["label_names"] if names_file.is_file() else None
        files = [folder / "test_batch"] if split == "test" else sorted(folder.glob("data_batch_*"))
        label_key = "labels"
    else:
        class_names = _unpickle(folder / "meta", batch=False).get("fine_label_names")
        files = [folder / split]
        label_key = "fine_labels"
    files = [f for f in files if f.is_file()]
    if not files:
        raise DataError(f"{folder} has no {split} split", hint=f"pass a folder that holds the CIFAR {split} batch(es)")
    images, labels = [], []
    for f in files:
        batch = _unpickle(f)
        images.append(_rows_to_nhwc(batch["data"], f))
        labels.append(np.asarray(batch[label_key], dtype=np.int64))
    x, y = np.concatenate(images), np.concatenate(labels)
    if len(x) != len(y):
        raise DataError(f"{folder}: {len(x)} images but {len(y)} labels")
    if class_names is None:
        from trtinfer.labels import CIFAR10, CIFAR100
        class_names = CIFAR10 if kind == "cifar10" else CIFAR100
    return LabeledImages(images=x, labels=y, class_names=list(class_names), source=str(folder), split=split)
