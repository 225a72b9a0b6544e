"""The one image preprocessing implementation: calibration, evaluation and serving all call it,
so the tensors a model was calibrated and validated on are exactly the ones it is served.

Needs only numpy; PIL is imported when an image has to be resized or decoded.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from .errors import DataError, TrtInferError
from .manifest import PreprocessSpec

NORMALIZATIONS: dict[str, tuple[tuple[float, ...], tuple[float, ...]]] = {
    "imagenet": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "cifar100": ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
    "none": ((0.0, 0.0, 0.0), (1.0, 1.0, 1.0)),
}


def make_spec(input_size: int, normalize: str | None = "imagenet", mean: Sequence[float] | None = None,
              std: Sequence[float] | None = None, resize: int | None = None) -> PreprocessSpec:
    """Build a spec from CLI-style options; explicit mean/std win over a preset."""
    if input_size < 8:
        raise TrtInferError(f"--input-size {input_size} is too small", hint="use the size the model was trained at, e.g. 32 or 224")
    if (mean is None) != (std is None):
        raise TrtInferError("--mean and --std go together", hint="pass both, e.g. --mean 0.5,0.5,0.5 --std 0.5,0.5,0.5")
    if mean is not None and std is not None:
        if len(mean) != 3 or len(std) != 3:
            raise TrtInferError("--mean and --std take three comma-separated values (R,G,B)")
        if min(std) <= 0:
            raise TrtInferError("--std values must be positive")
        name = "custom"
        mean_t, std_t = tuple(float(v) for v in mean), tuple(float(v) for v in std)
    else:
        name = normalize or "imagenet"
        if name not in NORMALIZATIONS:
            raise TrtInferError(f"unknown normalization {name!r}", hint=f"use one of {', '.join(NORMALIZATIONS)} or --mean/--std")
        mean_t, std_t = NORMALIZATIONS[name]
    resize = input_size if resize is None else resize
    if resize < input_size:
        raise TrtInferError(f"--resize {resize} is smaller than --input-size {input_size}")
    return PreprocessSpec(input_size=input_size, resize=resize, mean=list(mean_t), std=list(std_t), normalize=name)


def _to_uint8_rgb(image: Any) -> np.ndarray:
    """PIL image or HWC/HW array -> uint8 HxWx3 RGB."""
    if hasattr(image, "mode") and hasattr(image, "convert"):  # PIL.Image without importing PIL
        if image.mode != "RGB":
            image = image.convert("RGB")
        return np.asarray(image, dtype=np.uint8)
    arr = np.asarray(image)
    if arr.dtype != np.uint8:
        raise DataError(f"images must be uint8 (0-255), got {arr.dtype}",
                        hint="pass PIL images or uint8 HWC arrays; use infer() for float tensors")
    if arr.ndim == 2:
        arr = np.repeat(arr[:, :, None], 3, axis=2)
    if arr.ndim != 3 or arr.shape[2] not in (1, 3, 4):
        raise DataError(f"an image must be HxW, HxWx1, HxWx3 or HxWx4, got shape {arr.shape}",
                        hint="pass channels-last (HWC) uint8 images")
    if arr.shape[2] == 1:
        arr = np.repeat(arr, 3, axis=2)
    elif arr.shape[2] == 4:
        arr = arr[:, :, :3]
    return arr


def _resize_crop(arr: np.ndarray, spec: PreprocessSpec) -> np.ndarray:
    h, w = arr.shape[:2]
    size = spec.input_size
    if (h, w) == (size, size) and spec.resize == size:
        return arr
    from PIL import Image  # lazy: only needed when sizes differ

    scale = spec.resize / min(h, w)
    new_w, new_h = max(size, round(w * scale)), max(size, round(h * scale))
    resample = {"bilinear": Image.BILINEAR, "bicubic": Image.BICUBIC, "nearest": Image.NEAREST}[spec.interpolation]
    img = Image.fromarray(arr).resize((new_w, new_h), resample)
    left, top = (new_w - size) // 2, (new_h - size) // 2
    return np.asarray(img.crop((left, top, left + size, top + size)), dtype=np.uint8)


def preprocess(images: Any, spec: PreprocessSpec) -> np.ndarray:
    """Images (PIL, uint8 HWC arrays, or a uint8 NHWC batch) -> float32 NCHW batch."""
    if isinstance(images, np.ndarray) and images.ndim == 4:
        batch = images
        if batch.dtype != np.uint8:
            raise DataError(f"image batches must be uint8 NHWC, got {batch.dtype}",
                            hint="use infer() for float tensors that are already preprocessed")
        if batch.shape[3] != 3:
            raise DataError(f"image batches must be NHWC with 3 channels, got shape {batch.shape}")
        if batch.shape[1:3] != (spec.input_size, spec.input_size) or spec.resize != spec.input_size:
            batch = np.stack([_resize_crop(img, spec) for img in batch]) if len(batch) else \
                np.zeros((0, spec.input_size, spec.input_size, 3), np.uint8)
    else:
        if not isinstance(images, (list, tuple)):
            images = [images]
        if not images:
            batch = np.zeros((0, spec.input_size, spec.input_size, 3), np.uint8)
        else:
            batch = np.stack([_resize_crop(_to_uint8_rgb(img), spec) for img in images])
    x = batch.astype(np.float32) * np.float32(spec.scale)
    x -= np.asarray(spec.mean, np.float32)
    x /= np.asarray(spec.std, np.float32)
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2))
