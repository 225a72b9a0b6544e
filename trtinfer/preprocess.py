"""The one image preprocessing implementation: calibration, evaluation and serving all call it,
so the tensors a model was calibrated and validated on are exactly the ones it is served.

Needs only numpy; PIL is imported when an image has to be resized or decoded.

Images are bounded before any work (:data:`MAX_IMAGE_PIXELS`, :data:`MAX_ASPECT_RATIO`): a
20000x20000 image costs 3.2 GB and 10 s to resize, a 1x200000 sliver 1 GB, and an empty one
divides by zero. High-bit-depth images (16-bit grayscale, 32-bit int, float) are scaled to 8 bits
rather than clamped, so a 16-bit scan classifies like its 8-bit twin.
"""

from __future__ import annotations

import io
import math
import re
from collections.abc import Sequence
from typing import Any

import numpy as np

from . import defaults
from .errors import DataError, TrtInferError
from .manifest import PreprocessSpec

NORMALIZATIONS: dict[str, tuple[tuple[float, ...], tuple[float, ...]]] = {
    "imagenet": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "cifar100": ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
    "none": ((0.0, 0.0, 0.0), (1.0, 1.0, 1.0)),
}

#: Largest image (width x height) predict()/preprocess() and decode_image_bytes take: 64 megapixels
#: (an 8000x8000 photo); the model sees input_size x input_size anyway.
MAX_IMAGE_PIXELS = 64_000_000
#: Most elongated image taken (long side / short side): resizing a sliver's short side up to the
#: model's size makes its long side, and the memory, explode.
MAX_ASPECT_RATIO = 100
#: Encoded formats decode_image_bytes accepts (PIL format names).
DECODE_FORMATS = ("JPEG", "PNG", "WEBP")


def make_spec(input_size: int, normalize: str | None = defaults.NORMALIZE, mean: Sequence[float] | None = None,
              std: Sequence[float] | None = None, resize: int | None = None) -> PreprocessSpec:
    """Build a spec from CLI-style options; explicit mean/std win over a preset."""
    if input_size < 8:
        raise TrtInferError(f"--input-size {input_size} is too small", hint="use the size the model was trained at, e.g. 32 or 224")
    if (mean is None) != (std is None):
        raise TrtInferError("--mean and --std go together", hint="pass both, e.g. --mean 0.5,0.5,0.5 --std 0.5,0.5,0.5")
    if mean is not None and std is not None:
        if len(mean) != 3 or len(std) != 3:
            raise TrtInferError("--mean and --std take three comma-separated values (R,G,B)")
        for flag, values in (("--mean", mean), ("--std", std)):
            # NaN or inf would be written into the manifest and make every prediction NaN.
            if not all(_is_finite_number(v) for v in values):
                shown = ",".join(str(v) for v in values)
                raise TrtInferError(f"{flag} {shown} must be three finite numbers",
                                    hint="e.g. --mean 0.485,0.456,0.406 --std 0.229,0.224,0.225 (ImageNet)")
        if min(std) <= 0:
            raise TrtInferError("--std values must be positive")
        name = "custom"
        mean_t, std_t = tuple(float(v) for v in mean), tuple(float(v) for v in std)
    else:
        name = normalize or defaults.NORMALIZE
        if name not in NORMALIZATIONS:
            raise TrtInferError(f"unknown normalization {name!r}", hint=f"use one of {', '.join(NORMALIZATIONS)} or --mean/--std")
        mean_t, std_t = NORMALIZATIONS[name]
    resize = input_size if resize is None else resize
    if resize < input_size:
        raise TrtInferError(f"--resize {resize} is smaller than --input-size {input_size}")
    return PreprocessSpec(input_size=input_size, resize=resize, mean=list(mean_t), std=list(std_t), normalize=name)


def _is_finite_number(value: Any) -> bool:
    try:
        return math.isfinite(float(value))
    except (TypeError, ValueError):
        return False


def check_image_size(width: int, height: int, max_pixels: int = MAX_IMAGE_PIXELS, what: str = "the image") -> None:
    """DataError unless ``width x height`` is non-empty, at most ``max_pixels`` and at most
    :data:`MAX_ASPECT_RATIO` : 1. Called before any decode, conversion or resize, so an oversized
    image costs nothing."""
    width, height = int(width), int(height)
    if width < 1 or height < 1:
        raise DataError(f"{what} is {width}x{height} pixels (WxH) and has nothing to classify",
                        hint="pass a non-empty image")
    pixels = width * height
    if pixels > max_pixels:
        raise DataError(f"{what} is {width}x{height} = {pixels:,} pixels, more than the {max_pixels:,} allowed",
                        hint="downscale it first (e.g. PIL's Image.thumbnail); the model sees a small crop anyway")
    ratio = max(width, height) / min(width, height)
    if ratio > MAX_ASPECT_RATIO:
        raise DataError(f"{what} is {width}x{height} pixels, an aspect ratio of {ratio:,.0f}:1, beyond the "
                        f"{MAX_ASPECT_RATIO}:1 allowed", hint="crop it to the part to classify first")


def _uint16_to_uint8(arr: np.ndarray) -> np.ndarray:
    """16-bit values to 8 bits, rounded (v / 257): 65535 -> 255, and an 8-bit value v stored as v * 257 -> v."""
    return ((arr.astype(np.uint32) + 128) // 257).astype(np.uint8)


def _high_depth_to_uint8(arr: np.ndarray, mode: str) -> np.ndarray:
    """A single-channel PIL "I;16*", "I" or "F" image's values scaled to uint8 (convert("RGB") clamps
    them at 255 instead, which turns a 16-bit image white)."""
    if mode.startswith("I;16"):
        return _uint16_to_uint8(arr)
    if mode == "I":  # 32-bit signed; in practice 16-bit data (PNG and TIFF decoders)
        low, high = int(arr.min()), int(arr.max())
        if low < 0 or high > 65535:
            raise DataError(f"a mode 'I' image holds values from {low} to {high}, outside the 16-bit range 0-65535",
                            hint="scale it to 8 bits yourself (e.g. to mode 'L') with the range its data uses")
        return _uint16_to_uint8(arr)
    # "F": 32-bit float, taken as [0, 1] when it stays within it, else as [0, 255]
    values = arr.astype(np.float32)
    if not np.isfinite(values).all():
        raise DataError("a mode 'F' image holds NaN or inf values", hint="replace them before classifying")
    if values.max() <= 1.0:
        values = values * np.float32(255.0)
    return np.rint(np.clip(values, 0.0, 255.0)).astype(np.uint8)


def _to_uint8_rgb(image: Any) -> np.ndarray:
    """PIL image or HWC/HW array (uint8, or uint16 scaled down) -> uint8 HxWx3 RGB, size checked first."""
    if hasattr(image, "mode") and hasattr(image, "convert"):  # PIL.Image without importing PIL
        width, height = image.size
        check_image_size(width, height)
        mode = image.mode
        if mode.startswith("I;16") or mode in ("I", "F"):
            gray = _high_depth_to_uint8(np.asarray(image), mode)
            return np.repeat(gray[:, :, None], 3, axis=2)
        if mode != "RGB":
            image = image.convert("RGB")
        return np.asarray(image, dtype=np.uint8)
    arr = np.asarray(image)
    if arr.dtype not in (np.uint8, np.uint16):
        raise DataError(f"images must be uint8 (0-255) or uint16 (0-65535), got {arr.dtype}",
                        hint="pass PIL images or uint8 HWC arrays; use infer() for float tensors")
    if arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[2] not in (1, 3, 4)):
        raise DataError(f"an image must be HxW, HxWx1, HxWx3 or HxWx4, got shape {arr.shape}",
                        hint="pass channels-last (HWC) uint8 images")
    check_image_size(arr.shape[1], arr.shape[0])
    if arr.dtype == np.uint16:
        arr = _uint16_to_uint8(arr)
    if arr.ndim == 2:
        arr = np.repeat(arr[:, :, None], 3, axis=2)
    if arr.shape[2] == 1:
        arr = np.repeat(arr, 3, axis=2)
    elif arr.shape[2] == 4:
        arr = arr[:, :, :3]
    return arr


def bomb_size(exc: BaseException) -> str:
    """The size Pillow's DecompressionBombError names ("400,000,000 pixels"): Pillow refuses such
    images inside ``Image.open``, before an image (and its size) exists to check."""
    found = re.search(r"\((\d+) pixels\)", str(exc))
    return f"{int(found.group(1)):,} pixels" if found else "more pixels than Pillow opens"


def decode_image_bytes(data: bytes, max_pixels: int = MAX_IMAGE_PIXELS) -> Any:
    """Encoded JPEG, PNG or WebP bytes -> a loaded ``PIL.Image``, for servers taking uploads.

    The size in the header is checked (:func:`check_image_size`) before the pixels are decoded,
    so a small file declaring a huge image (a decompression bomb) costs nothing; truncated or
    corrupt files and other formats become one-line DataErrors instead of raw OSErrors. Pillow's
    own limit (``PIL.Image.MAX_IMAGE_PIXELS``) still applies when ``max_pixels`` is above it.
    """
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise DataError(f"decode_image_bytes takes bytes, got {type(data).__name__}",
                        hint="pass the encoded file's contents (e.g. path.read_bytes())")
    if not len(data):
        raise DataError("the image data is empty (0 bytes)", hint="send the encoded JPEG, PNG or WebP file")
    from PIL import Image, UnidentifiedImageError

    formats = "JPEG, PNG or WebP"
    try:
        image = Image.open(io.BytesIO(bytes(data)), formats=list(DECODE_FORMATS))  # reads the header only
    except UnidentifiedImageError as exc:
        raise DataError(f"the data ({len(data):,} bytes, starting {bytes(data[:8])!r}) is not a complete {formats} "
                        "image", hint=f"send a whole {formats} file") from exc
    except Image.DecompressionBombError as exc:  # Pillow's own header check, for sizes far beyond max_pixels
        raise DataError(f"the image is {bomb_size(exc)}, more than the {max_pixels:,} allowed",
                        hint="downscale it before sending") from exc
    except MemoryError:
        raise
    except Exception as exc:  # noqa: BLE001 -- a corrupt header may raise anything from a decoder plugin
        raise DataError(f"the image data ({len(data):,} bytes) is corrupt: {type(exc).__name__}: {exc}",
                        hint="send the file again, or re-encode it") from exc
    try:
        check_image_size(image.size[0], image.size[1], max_pixels, what=f"the {image.format} image")
        try:
            image.load()
        except MemoryError:
            raise
        except Exception as exc:  # noqa: BLE001 -- truncated data raises OSError, broken chunks SyntaxError, ...
            raise DataError(f"the {image.format} image ({image.size[0]}x{image.size[1]}, {len(data):,} bytes) is "
                            f"truncated or corrupt: {type(exc).__name__}: {exc}",
                            hint="send the whole file again, or re-encode it") from exc
    except BaseException:
        image.close()
        raise
    return image


def _resize_crop(arr: np.ndarray, spec: PreprocessSpec) -> np.ndarray:
    h, w = arr.shape[:2]
    size = spec.input_size
    if (h, w) == (size, size) and spec.resize == size:
        return arr
    from PIL import Image  # lazy: only needed when sizes differ

    scale = spec.resize / min(h, w)
    new_w, new_h = max(size, round(w * scale)), max(size, round(h * scale))
    resample = {"bilinear": Image.Resampling.BILINEAR, "bicubic": Image.Resampling.BICUBIC,
                "nearest": Image.Resampling.NEAREST}[spec.interpolation]
    img = Image.fromarray(arr).resize((new_w, new_h), resample)
    left, top = (new_w - size) // 2, (new_h - size) // 2
    return np.asarray(img.crop((left, top, left + size, top + size)), dtype=np.uint8)


def preprocess(images: Any, spec: PreprocessSpec) -> np.ndarray:
    """Images (PIL, uint8 HWC arrays, or a uint8 NHWC batch) -> float32 NCHW batch.

    Each image's size is checked (:func:`check_image_size`) before it is converted or resized;
    uint16 arrays and 16-bit / int / float PIL images are scaled to 8 bits first."""
    if isinstance(images, np.ndarray) and images.ndim == 4:
        batch = images
        if batch.dtype not in (np.uint8, np.uint16):
            raise DataError(f"image batches must be uint8 (or uint16) NHWC, got {batch.dtype}",
                            hint="use infer() for float tensors that are already preprocessed")
        if batch.shape[3] != 3:
            raise DataError(f"image batches must be NHWC with 3 channels, got shape {batch.shape}")
        check_image_size(batch.shape[2], batch.shape[1], what="each image of the batch")
        if batch.dtype == np.uint16:
            batch = _uint16_to_uint8(batch)
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
