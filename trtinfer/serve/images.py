"""Encoded images -> the model's FP32 batch, bounded by what decoding them costs, not by their bytes.

A 10 KB PNG can declare 64 million pixels, so a request is judged by its images' headers before any pixel is
decoded: at most ``limits.max_images`` images (400 beyond, ``--max-images``) and at most
``limits.max_request_pixels`` decoded pixels all together (413 beyond, ``--max-request-mpixels``). Then the
images are decoded and preprocessed one at a time into the preallocated batch, so a request holds one decoded
image (and its RGB conversion) besides the batch, never all of them; each row is bit-identical to
:func:`trtinfer.preprocess.preprocess` of that image.

JPEG draft mode (decoding at 1/2, 1/4 or 1/8 scale) would decode large photos cheaper, but its pixels are not
the full decode's, so the tensor would differ from what the model was calibrated and validated on: not used.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

import numpy as np

from ..errors import DataError
from ..preprocess import check_image_size, decode_image_bytes, open_image, preprocess_one
from .failures import ServeError
from .heap import trim_memory

if TYPE_CHECKING:
    from .options import Limits
    from .registry import ServedModel


#: File signatures of the formats decoded (anything else is 415 before a decoder sees it).
_SIGNATURES = ((b"\xff\xd8\xff", "JPEG"), (b"\x89PNG\r\n\x1a\n", "PNG"), (b"RIFF", "WebP"))
#: After a request whose images came to more decoded pixels than this (4 MiP, 16 MiB as RGBX), the C heap's
#: free memory is handed back to the system: glibc keeps large freed blocks in its arenas otherwise.
TRIM_AFTER_PIXELS = 4 << 20


def image_format(data: bytes, which: str = "") -> str:
    """The format its signature names; anything else is a 415 (``which``: "image 3 of 8: " or "")."""
    for signature, name in _SIGNATURES:
        if data.startswith(signature) and (name != "WebP" or data[8:12] == b"WEBP"):
            return name
    raise ServeError(415, f"{which}the upload ({len(data):,} bytes, starting {data[:8]!r}) is not a JPEG, PNG or "
                          "WebP image")


def check_images(blobs: list[bytes], limits: Limits) -> list[int]:
    """Each image's decoded pixels, from its header (no pixel is decoded): 400 for more than
    ``limits.max_images`` images or an unusable image, 415 for a format not taken, 413 once the images so far
    come to more than ``limits.max_request_pixels``."""
    count = len(blobs)
    if count > limits.max_images:
        raise ServeError(400, f"the request has {count:,} images, more than the {limits.max_images:,} allowed "
                              "per request; send them in several requests, or start the server with a higher "
                              "--max-images")
    total, pixels = 0, []
    for index, blob in enumerate(blobs):
        which = _which(index, count)
        image_format(blob, which)
        with _numbered(which):
            image = open_image(blob)
            try:
                width, height = image.size
                kind = image.format
            finally:
                image.close()
            check_image_size(width, height, what=f"the {kind} image")
        pixels.append(width * height)
        total += width * height
        if total > limits.max_request_pixels:
            so_far = f"the first {index + 1} of {count} images come" if count > 1 else "the image comes"
            raise ServeError(413, f"{which}the {kind} image is {width}x{height} pixels, and {so_far} to {total:,} "
                                  f"decoded pixels, more than the {limits.max_request_pixels:,} "
                                  f"({limits.max_request_pixels / 2**20:g} MiP) allowed per request; send fewer "
                                  "or smaller images, or start the server with a higher --max-request-mpixels")
    return pixels


class PixelBudget:
    """Decoded pixels in flight across the whole server. Each request is bounded by ``--max-request-mpixels``,
    but HTTP's thread pool and gRPC's workers decode many requests at once; holding an image's pixels while it
    is decoded bounds the server's decoded-image memory by this budget whatever the concurrency. Small images
    never wait (a CIFAR row is 1,024 pixels); large ones take turns. An image larger than the whole budget
    waits for it to be free and then runs alone."""

    def __init__(self, capacity: int) -> None:
        self.capacity = max(1, capacity)
        self._free = self.capacity
        self._changed = threading.Condition()

    @contextmanager
    def hold(self, pixels: int) -> Iterator[None]:
        need = min(max(1, pixels), self.capacity)
        with self._changed:
            self._changed.wait_for(lambda: self._free >= need)
            self._free -= need
        try:
            yield
        finally:
            with self._changed:
                self._free += need
                self._changed.notify_all()


def pixel_budget(limits: Limits) -> PixelBudget:
    """The server's budget: two requests' worth of the largest images at once (about 2 x 16 MiP x 5 bytes of
    decoded RGB and its conversion: 160 MiB at the defaults), while small images decode on every core."""
    return PixelBudget(2 * limits.max_request_pixels)


def images_to_tensor(blobs: list[bytes], served: ServedModel, limits: Limits,
                     budget: PixelBudget | None = None) -> np.ndarray:
    """Encoded images -> the model's float32 batch, preprocessed as its manifest says (runs in a thread):
    checked from their headers first (:func:`check_images`), then decoded one at a time, each holding its
    pixels in the server's ``budget`` while it is decoded."""
    spec = served.manifest.preprocess
    pixels = check_images(blobs, limits)
    total = sum(pixels)
    budget = budget or PixelBudget(limits.max_request_pixels)
    batch = np.empty((len(blobs), 3, spec.input_size, spec.input_size), np.float32)
    try:
        for index, blob in enumerate(blobs):
            with budget.hold(pixels[index]), _numbered(_which(index, len(blobs))):
                image = decode_image_bytes(blob)
                try:
                    batch[index] = preprocess_one(image, spec)
                finally:
                    image.close()
    finally:
        if total > TRIM_AFTER_PIXELS:
            trim_memory()
    return batch


def _which(index: int, count: int) -> str:
    return f"image {index + 1} of {count}: " if count > 1 else ""


@contextmanager
def _numbered(which: str) -> Iterator[None]:
    """A DataError (an unusable image) as a 400 that says which image of the request it is."""
    try:
        yield
    except DataError as exc:
        raise ServeError(400, which + exc.one_line()) from None
