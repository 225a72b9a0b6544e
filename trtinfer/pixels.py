"""Pixels to the model's input tensor: decode, bound, convert to 8-bit RGB, resize, crop, normalise.

The one implementation of image preprocessing. It imports nothing from trtinfer (numpy only; Pillow
when an image must be decoded or resized) because it ships twice: :mod:`trtinfer.preprocess` wraps it
for the runtime, calibration and ``trtinfer serve``, and ``trtinfer export triton --with-preprocess``
copies this very file into the Triton Python-backend model, so the tensors Triton computes are the
ones the model was calibrated, validated and served on.

Images are bounded before any work (:data:`MAX_IMAGE_PIXELS`, :data:`MAX_ASPECT_RATIO`): a
20000x20000 image costs 3.2 GB and 10 s to resize, a 1x200000 sliver 1 GB, and an empty one
divides by zero. High-bit-depth images (16-bit grayscale, 32-bit int, float) are scaled to 8 bits
rather than clamped, so a 16-bit scan classifies like its 8-bit twin.
"""

from __future__ import annotations

import io
import re
from collections.abc import Sequence
from typing import Any

import numpy as np

#: Largest image (width x height) taken: 64 megapixels (an 8000x8000 photo); the model sees
#: input_size x input_size anyway.
MAX_IMAGE_PIXELS = 64_000_000
#: Most elongated image taken (long side / short side): resizing a sliver's short side up to the
#: model's size makes its long side, and the memory, explode.
MAX_ASPECT_RATIO = 100
#: Encoded formats :func:`decode_image_bytes` accepts (PIL format names).
DECODE_FORMATS = ("JPEG", "PNG", "WEBP")
INTERPOLATIONS = ("bilinear", "bicubic", "nearest")


class ImageError(ValueError):
    """An image that cannot be used, with the fix; :mod:`trtinfer.preprocess` re-raises it as a
    ``DataError`` and the Triton model returns it as the request's error."""

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message} (hint: {self.hint})" if self.hint else self.message


def check_image_size(width: int, height: int, max_pixels: int = MAX_IMAGE_PIXELS, what: str = "the image") -> None:
    """ImageError unless ``width x height`` is non-empty, at most ``max_pixels`` and at most
    :data:`MAX_ASPECT_RATIO` : 1. Called before any decode, conversion or resize, so an oversized
    image costs nothing."""
    width, height = int(width), int(height)
    if width < 1 or height < 1:
        raise ImageError(f"{what} is {width}x{height} pixels (WxH) and has nothing to classify",
                         hint="pass a non-empty image")
    pixels = width * height
    if pixels > max_pixels:
        raise ImageError(f"{what} is {width}x{height} = {pixels:,} pixels, more than the {max_pixels:,} allowed",
                         hint="downscale it first (e.g. PIL's Image.thumbnail); the model sees a small crop anyway")
    ratio = max(width, height) / min(width, height)
    if ratio > MAX_ASPECT_RATIO:
        raise ImageError(f"{what} is {width}x{height} pixels, an aspect ratio of {ratio:,.0f}:1, beyond the "
                         f"{MAX_ASPECT_RATIO}:1 allowed", hint="crop it to the part to classify first")


def uint16_to_uint8(arr: np.ndarray) -> np.ndarray:
    """16-bit values to 8 bits, rounded (v / 257): 65535 -> 255, and an 8-bit value v stored as v * 257 -> v."""
    wide = arr.astype(np.uint32)  # one temporary, worked on in place
    wide += 128
    wide //= 257
    return wide.astype(np.uint8)


def _high_depth_to_uint8(arr: np.ndarray, mode: str) -> np.ndarray:
    """A single-channel PIL "I;16*", "I" or "F" image's values scaled to uint8 (convert("RGB") clamps
    them at 255 instead, which turns a 16-bit image white)."""
    if mode.startswith("I;16"):
        return uint16_to_uint8(arr)
    if mode == "I":  # 32-bit signed; in practice 16-bit data (PNG and TIFF decoders)
        low, high = int(arr.min()), int(arr.max())
        if low < 0 or high > 65535:
            raise ImageError(f"a mode 'I' image holds values from {low} to {high}, outside the 16-bit range 0-65535",
                             hint="scale it to 8 bits yourself (e.g. to mode 'L') with the range its data uses")
        return uint16_to_uint8(arr)
    # "F": 32-bit float, taken as [0, 1] when it stays within it, else as [0, 255]
    values = arr.astype(np.float32)
    if not np.isfinite(values).all():
        raise ImageError("a mode 'F' image holds NaN or inf values", hint="replace them before classifying")
    if values.max() <= 1.0:
        values = values * np.float32(255.0)
    return np.rint(np.clip(values, 0.0, 255.0)).astype(np.uint8)


def _is_pil(image: Any) -> bool:
    return hasattr(image, "mode") and hasattr(image, "convert")  # PIL.Image without importing PIL


def _is_high_depth(mode: str) -> bool:
    return mode.startswith("I;16") or mode in ("I", "F")


def to_uint8_rgb(image: Any) -> np.ndarray:
    """PIL image or HWC/HW array (uint8, or uint16 scaled down) -> uint8 HxWx3 RGB, size checked first."""
    if _is_pil(image):
        width, height = image.size
        check_image_size(width, height)
        mode = image.mode
        if _is_high_depth(mode):
            gray = _high_depth_to_uint8(np.asarray(image), mode)
            return np.repeat(gray[:, :, None], 3, axis=2)
        if mode != "RGB":
            image = image.convert("RGB")
        return np.asarray(image, dtype=np.uint8)
    arr = np.asarray(image)
    if arr.dtype not in (np.uint8, np.uint16):
        raise ImageError(f"images must be uint8 (0-255) or uint16 (0-65535), got {arr.dtype}",
                         hint="pass PIL images or uint8 HWC arrays; use infer() for float tensors")
    if arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[2] not in (1, 3, 4)):
        raise ImageError(f"an image must be HxW, HxWx1, HxWx3 or HxWx4, got shape {arr.shape}",
                         hint="pass channels-last (HWC) uint8 images")
    check_image_size(arr.shape[1], arr.shape[0])
    if arr.dtype == np.uint16:
        arr = uint16_to_uint8(arr)
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
    corrupt files and other formats become one-line ImageErrors instead of raw OSErrors. Pillow's
    own limit (``PIL.Image.MAX_IMAGE_PIXELS``) still applies when ``max_pixels`` is above it.
    """
    image = open_image(data, max_pixels)
    try:
        check_image_size(image.size[0], image.size[1], max_pixels, what=f"the {image.format} image")
        try:
            image.load()
        except MemoryError:
            raise
        except Exception as exc:  # noqa: BLE001 -- truncated data raises OSError, broken chunks SyntaxError, ...
            raise ImageError(f"the {image.format} image ({image.size[0]}x{image.size[1]}, {len(data):,} bytes) is "
                             f"truncated or corrupt: {type(exc).__name__}: {exc}",
                             hint="send the whole file again, or re-encode it") from exc
    except BaseException:
        image.close()
        raise
    return image


def open_image(data: bytes, max_pixels: int = MAX_IMAGE_PIXELS) -> Any:
    """Encoded JPEG, PNG or WebP bytes -> a ``PIL.Image`` whose header only has been read: its ``size``,
    ``mode`` and ``format`` are known and no pixel is decoded yet (``load()`` decodes them). Data that is
    no such image, or a header Pillow itself refuses as a decompression bomb, is an ImageError; the
    caller checks the size (:func:`check_image_size`) and closes the image."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise ImageError(f"decode_image_bytes takes bytes, got {type(data).__name__}",
                         hint="pass the encoded file's contents (e.g. path.read_bytes())")
    if not len(data):
        raise ImageError("the image data is empty (0 bytes)", hint="send the encoded JPEG, PNG or WebP file")
    from PIL import Image, UnidentifiedImageError

    formats = "JPEG, PNG or WebP"
    try:
        return Image.open(io.BytesIO(bytes(data)), formats=list(DECODE_FORMATS))  # reads the header only
    except UnidentifiedImageError as exc:
        raise ImageError(f"the data ({len(data):,} bytes, starting {bytes(data[:8])!r}) is not a complete "
                         f"{formats} image", hint=f"send a whole {formats} file") from exc
    except Image.DecompressionBombError as exc:  # Pillow's own header check, for sizes far beyond max_pixels
        raise ImageError(f"the image is {bomb_size(exc)}, more than the {max_pixels:,} allowed",
                         hint="downscale it before sending") from exc
    except MemoryError:
        raise
    except Exception as exc:  # noqa: BLE001 -- a corrupt header may raise anything from a decoder plugin
        raise ImageError(f"the image data ({len(data):,} bytes) is corrupt: {type(exc).__name__}: {exc}",
                         hint="send the file again, or re-encode it") from exc


def resize_crop(arr: np.ndarray, input_size: int, resize: int, interpolation: str = "bilinear") -> np.ndarray:
    """Shorter side resized to ``resize``, then the centre ``input_size`` square (uint8 HWC in and out)."""
    h, w = arr.shape[:2]
    size = input_size
    if (h, w) == (size, size) and resize == size:
        return arr
    from PIL import Image  # lazy: only needed when sizes differ

    return _resize_crop_pil(Image.fromarray(arr), input_size, resize, interpolation)


def _resize_crop_pil(image: Any, input_size: int, resize: int, interpolation: str) -> np.ndarray:
    """:func:`resize_crop` of an RGB ``PIL.Image`` (the same pixels as ``Image.fromarray`` of its array)."""
    from PIL import Image

    w, h = image.size
    size = input_size
    if (h, w) == (size, size) and resize == size:
        return np.asarray(image, dtype=np.uint8)
    scale = resize / min(h, w)
    new_w, new_h = max(size, round(w * scale)), max(size, round(h * scale))
    resample = {"bilinear": Image.Resampling.BILINEAR, "bicubic": Image.Resampling.BICUBIC,
                "nearest": Image.Resampling.NEAREST}[interpolation]
    img = image.resize((new_w, new_h), resample)
    left, top = (new_w - size) // 2, (new_h - size) // 2
    return np.asarray(img.crop((left, top, left + size, top + size)), dtype=np.uint8)


def crop_image(image: Any, input_size: int, resize: int, interpolation: str = "bilinear") -> np.ndarray:
    """One image (PIL or uint8/uint16 HWC array) -> its uint8 ``input_size`` x ``input_size`` x 3 crop: exactly
    the row :func:`images_to_tensor` makes of it, size checked first. An 8-bit PIL image is converted and
    resized as a PIL image, so it costs at most one RGB copy of itself, not the three that a round trip
    through a numpy array takes (decoded RGB, its array, the array back as an image)."""
    if _is_pil(image) and not _is_high_depth(image.mode):
        check_image_size(*image.size)
        rgb = image if image.mode == "RGB" else image.convert("RGB")
        try:
            return _resize_crop_pil(rgb, input_size, resize, interpolation)
        finally:
            if rgb is not image:
                rgb.close()
    return resize_crop(to_uint8_rgb(image), input_size, resize, interpolation)


def normalize(pixels: np.ndarray, mean: Sequence[float], std: Sequence[float],
              scale: float = 1.0 / 255.0) -> np.ndarray:
    """uint8 channels-last pixels (HWC or NHWC) -> float32 ``(x * scale - mean) / std``, same layout; the same
    float32 operations whether it is given one image or a batch, so a row is bit-identical either way."""
    x = pixels.astype(np.float32) * np.float32(scale)
    x -= np.asarray(mean, np.float32)
    x /= np.asarray(std, np.float32)
    return x


def images_to_tensor(images: Any, input_size: int, resize: int, mean: Sequence[float], std: Sequence[float],
                     scale: float = 1.0 / 255.0, interpolation: str = "bilinear") -> np.ndarray:
    """Images (PIL, uint8 HWC arrays, or a uint8 NHWC batch) -> float32 NCHW batch.

    Each image's size is checked (:func:`check_image_size`) before it is converted or resized;
    uint16 arrays and 16-bit / int / float PIL images are scaled to 8 bits first. The keyword
    arguments are the manifest's ``preprocess`` record's fields of the same names.
    """
    if isinstance(images, np.ndarray) and images.ndim == 4:
        batch = images
        if batch.dtype not in (np.uint8, np.uint16):
            raise ImageError(f"image batches must be uint8 (or uint16) NHWC, got {batch.dtype}",
                             hint="use infer() for float tensors that are already preprocessed")
        if batch.shape[3] != 3:
            raise ImageError(f"image batches must be NHWC with 3 channels, got shape {batch.shape}")
        check_image_size(batch.shape[2], batch.shape[1], what="each image of the batch")
        if batch.dtype == np.uint16:
            batch = uint16_to_uint8(batch)
        if batch.shape[1:3] != (input_size, input_size) or resize != input_size:
            batch = np.stack([resize_crop(img, input_size, resize, interpolation) for img in batch]) if len(batch) \
                else np.zeros((0, input_size, input_size, 3), np.uint8)
    else:
        if not isinstance(images, (list, tuple)):
            images = [images]
        if not images:
            batch = np.zeros((0, input_size, input_size, 3), np.uint8)
        else:
            batch = np.stack([crop_image(img, input_size, resize, interpolation) for img in images])
    return np.ascontiguousarray(normalize(batch, mean, std, scale).transpose(0, 3, 1, 2))
