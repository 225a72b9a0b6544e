"""Encoded images -> the model's FP32 batch, bounded by what decoding them costs."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from ..preprocess import decode_image_bytes, preprocess

if TYPE_CHECKING:
    from .registry import ServedModel
    from .service import Limits

#: File signatures of the formats decoded (anything else is 415 before a decoder sees it).
_SIGNATURES = ((b"\xff\xd8\xff", "JPEG"), (b"\x89PNG\r\n\x1a\n", "PNG"), (b"RIFF", "WebP"))


def image_format(data: bytes) -> str:
    from .service import ServeError

    for signature, name in _SIGNATURES:
        if data.startswith(signature) and (name != "WebP" or data[8:12] == b"WEBP"):
            return name
    raise ServeError(415, f"the upload ({len(data):,} bytes, starting {data[:8]!r}) is not a JPEG, PNG or WebP "
                          "image")


def images_to_tensor(blobs: list[bytes], served: ServedModel, limits: Limits) -> np.ndarray:
    """Encoded images -> the model's float32 batch, preprocessed as its manifest says (runs in a thread)."""
    images = []
    try:
        for blob in blobs:
            image_format(blob)
            images.append(decode_image_bytes(blob))
        return preprocess(images, served.manifest.preprocess)
    finally:
        for image in images:
            image.close()
