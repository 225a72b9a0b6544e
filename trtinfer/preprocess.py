"""The runtime's face of image preprocessing: presets, CLI-style specs, and the manifest's
:class:`PreprocessSpec` applied through :mod:`trtinfer.pixels`, the one implementation (which the
Triton export ships verbatim), so the tensors a model was calibrated and validated on are exactly
the ones it is served. Image problems surface as :class:`DataError` (one CLI line, a 400 in serve).

Needs only numpy; PIL is imported when an image has to be resized or decoded.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import numpy as np

from . import defaults, pixels
from .errors import DataError, TrtInferError
from .manifest import PreprocessSpec
from .pixels import DECODE_FORMATS, MAX_ASPECT_RATIO, MAX_IMAGE_PIXELS, bomb_size

__all__ = ["DECODE_FORMATS", "MAX_ASPECT_RATIO", "MAX_IMAGE_PIXELS", "MEAN_RANGE", "NORMALIZATIONS", "STD_RANGE",
           "bomb_size", "check_image_size", "decode_image_bytes", "make_spec", "normalization_problem", "open_image",
           "preprocess", "preprocess_one"]

NORMALIZATIONS: dict[str, tuple[tuple[float, ...], tuple[float, ...]]] = {
    "imagenet": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "cifar100": ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
    "none": ((0.0, 0.0, 0.0), (1.0, 1.0, 1.0)),
}

#: Bounds of a per-channel mean and std, in the units of the scaled pixels (x * scale, 0..1 by default). Real
#: recipes give means in 0..1 (ImageNet's 0.485) or in 0..255 pixel units (123.675), stds of 0.2-0.3 or
#: 50-80; the bounds leave room around both and refuse only what no preprocessing means: a mean of 1e308 or
#: 1e39 (infinite once in float32), a std of 1e-50 (every input non-finite) or 1e6 (every input ~0). Within
#: them a normalised value stays below (255 + 255) / 0.001 = 510,000 in magnitude, finite in float32.
MEAN_RANGE = (-255.0, 255.0)
STD_RANGE = (1e-3, 1e3)
NORMALIZATION_HINT = (f"means lie within {MEAN_RANGE[0]:g}..{MEAN_RANGE[1]:g} and stds within {STD_RANGE[0]:g}.."
                      f"{STD_RANGE[1]:g}, e.g. --mean 0.485,0.456,0.406 --std 0.229,0.224,0.225 (ImageNet)")

_F = TypeVar("_F", bound=Callable[..., Any])


def _data_errors(function: _F) -> _F:
    """``pixels.ImageError`` (which cannot import trtinfer's errors) re-raised as a DataError."""
    @functools.wraps(function)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return function(*args, **kwargs)
        except pixels.ImageError as exc:
            raise DataError(exc.message, hint=exc.hint) from exc
    return wrapper  # type: ignore[return-value]


def make_spec(input_size: int, normalize: str | None = defaults.NORMALIZE, mean: Sequence[float] | None = None,
              std: Sequence[float] | None = None, resize: int | None = None) -> PreprocessSpec:
    """Build a spec from CLI-style options; explicit mean/std win over a preset."""
    if input_size < 8:
        raise TrtInferError(f"--input-size {input_size} is too small", hint="use the size the model was trained at, e.g. 32 or 224")
    if (mean is None) != (std is None):
        raise TrtInferError("--mean and --std go together", hint="pass both, e.g. --mean 0.5,0.5,0.5 --std 0.5,0.5,0.5")
    if mean is not None and std is not None:
        problem = normalization_problem(mean, std)
        if problem is not None:
            raise TrtInferError(f"--{problem}", hint=NORMALIZATION_HINT)
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


def normalization_problem(mean: Any, std: Any) -> str | None:
    """What is wrong with a per-channel ``mean``/``std`` (three finite numbers each, within :data:`MEAN_RANGE`
    and :data:`STD_RANGE`), said from the value's name on (``"std 0,1,1 must lie within ..."``); None when
    nothing is. The one check of the CLI's --mean/--std (:func:`make_spec`) and of a checkpoint card's."""
    for name, values, (low, high) in (("mean", mean, MEAN_RANGE), ("std", std, STD_RANGE)):
        shown = _show(values)
        if isinstance(values, np.ndarray):
            values = values.tolist()
        if not isinstance(values, Sequence) or isinstance(values, (str, bytes)) or len(values) != 3:
            return f"{name} {shown} must be three numbers (R,G,B)"
        if not all(_is_finite_number(v) for v in values):
            # NaN or inf would be written into the manifest and make every prediction NaN.
            return f"{name} {shown} must be three finite numbers"
        if not all(low <= float(v) <= high for v in values):
            sign = "be positive and " if low > 0 and min(float(v) for v in values) <= 0 else ""
            return f"{name} {shown} must {sign}lie within {low:g}..{high:g}"
    return None


def _show(values: Any) -> str:
    """``0.5,1e-50,1`` for numbers; a short repr of anything else."""
    if isinstance(values, (list, tuple, np.ndarray)) and len(values) <= 8 and \
            all(_is_finite_number(v) or isinstance(v, float) for v in values):
        return ",".join(f"{float(v):g}" for v in values)
    text = repr(values)
    return text if len(text) <= 60 else text[:57] + "..."


def _is_finite_number(value: Any) -> bool:
    if isinstance(value, (bool, str, bytes)):
        return False
    try:
        return math.isfinite(float(value))
    except (TypeError, ValueError, OverflowError):
        return False


@_data_errors
def check_image_size(width: int, height: int, max_pixels: int = MAX_IMAGE_PIXELS, what: str = "the image") -> None:
    """DataError unless ``width x height`` is non-empty, at most ``max_pixels`` and at most
    :data:`MAX_ASPECT_RATIO` : 1 (:func:`trtinfer.pixels.check_image_size`)."""
    pixels.check_image_size(width, height, max_pixels, what)


@_data_errors
def decode_image_bytes(data: bytes, max_pixels: int = MAX_IMAGE_PIXELS) -> Any:
    """Encoded JPEG, PNG or WebP bytes -> a loaded ``PIL.Image``, size checked before the pixels are
    decoded (:func:`trtinfer.pixels.decode_image_bytes`); corrupt data is a DataError."""
    return pixels.decode_image_bytes(data, max_pixels)


@_data_errors
def open_image(data: bytes, max_pixels: int = MAX_IMAGE_PIXELS) -> Any:
    """Encoded JPEG, PNG or WebP bytes -> a ``PIL.Image`` with only its header read (size, mode, format; no
    pixel decoded yet) (:func:`trtinfer.pixels.open_image`); data that is no such image is a DataError."""
    return pixels.open_image(data, max_pixels)


@_data_errors
def preprocess_one(image: Any, spec: PreprocessSpec) -> np.ndarray:
    """One image (PIL or uint8 HWC array) -> its float32 CHW row, bit-identical to that image's row of
    :func:`preprocess` (the same crop and the same float32 operations), without a batch around it."""
    crop = pixels.crop_image(image, spec.input_size, spec.resize, spec.interpolation)
    return pixels.normalize(crop, spec.mean, spec.std, spec.scale).transpose(2, 0, 1)


@_data_errors
def preprocess(images: Any, spec: PreprocessSpec) -> np.ndarray:
    """Images (PIL, uint8 HWC arrays, or a uint8 NHWC batch) -> float32 NCHW batch, as ``spec`` says
    (:func:`trtinfer.pixels.images_to_tensor`)."""
    return pixels.images_to_tensor(images, input_size=spec.input_size, resize=spec.resize, mean=spec.mean,
                                   std=spec.std, scale=spec.scale, interpolation=spec.interpolation)
