"""serve/images.py: a request's images judged by their headers (count, decoded pixels, format) before any pixel
is decoded, then decoded one at a time into a batch bit-identical to ``trtinfer.preprocess.preprocess``."""

from __future__ import annotations

import io
import struct
import zlib
from types import SimpleNamespace

import numpy as np
import pytest

from trtinfer import pixels
from trtinfer.manifest import PreprocessSpec
from trtinfer.preprocess import decode_image_bytes, make_spec, preprocess
from trtinfer.serve.heap import trim_memory
from trtinfer.serve.images import check_images, images_to_tensor
from trtinfer.serve.options import Limits
from trtinfer.serve.service import ServeError

from .conftest import encode

CIFAR_SPEC = make_spec(32, "cifar10")
RESIZING_SPEC = PreprocessSpec(input_size=24, resize=28, mean=[0.5, 0.4, 0.3], std=[0.2, 0.25, 0.3],
                               interpolation="bicubic")


def served(spec: PreprocessSpec = CIFAR_SPEC) -> SimpleNamespace:
    return SimpleNamespace(manifest=SimpleNamespace(preprocess=spec))


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def declared_png(width: int, height: int) -> bytes:
    """A PNG header declaring ``width x height`` 8-bit RGB pixels, with almost no pixel data (decoding it fails
    as truncated: a refusal that names the limits proves no decoding was tried)."""
    return (b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + _chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + _chunk(b"IEND", b""))


def refusal(blobs: list[bytes], limits: Limits = Limits(), spec: PreprocessSpec = CIFAR_SPEC) -> ServeError:
    with pytest.raises(ServeError) as caught:
        images_to_tensor(blobs, served(spec), limits)
    return caught.value


# -- limits, from the headers --------------------------------------------------------------------------------------
def test_more_images_than_allowed_is_400_before_any_is_looked_at():
    error = refusal([b"not even an image"] * 3, Limits(max_images=2))
    assert error.status == 400
    assert "3 images, more than the 2 allowed" in error.message and "--max-images" in error.message


def test_decoded_pixels_beyond_the_request_limit_are_413_from_the_headers_alone():
    # Every image would fail to decode (its data is missing), so a 413 means only the headers were read; the
    # first two images fit (2 x 2000 x 2000 = 8 MP), the third takes the request past the limit.
    limits = Limits(max_request_pixels=10_000_000)
    error = refusal([declared_png(2000, 2000)] * 3, limits)
    assert error.status == 413, error.message
    assert error.message.startswith("image 3 of 3: the PNG image is 2000x2000 pixels")
    assert "first 3 of 3 images come to 12,000,000" in error.message and "10,000,000" in error.message
    assert "--max-request-mpixels" in error.message
    assert check_images([declared_png(2000, 2000)] * 2, limits) == [4_000_000] * 2  # at the limit's side of it: taken


def test_one_image_past_what_any_image_may_be_is_400():
    # Beyond MAX_IMAGE_PIXELS (or Pillow's own decompression-bomb bound) no flag helps: the image is unusable.
    for width, height in ((9000, 9000), (60000, 60000)):
        error = refusal([declared_png(width, height)], Limits(max_request_pixels=1 << 32))
        assert error.status == 400 and "more than the 64,000,000 allowed" in error.message, error.message
    error = refusal([declared_png(20_000, 10)])
    assert error.status == 400 and "aspect ratio of 2,000:1" in error.message


def test_formats_not_taken_are_415_and_name_the_image():
    png = encode(np.zeros((4, 4, 3), np.uint8), "PNG")
    error = refusal([png, b"GIF89a" + b"\x00" * 32])
    assert error.status == 415 and error.message.startswith("image 2 of 2: the upload (38 bytes")
    assert "not a JPEG, PNG or WebP" in error.message


# -- broken images: 400, naming which ------------------------------------------------------------------------------
def test_truncated_and_corrupt_images_are_400(cifar_images):
    png = encode(cifar_images[0], "PNG")
    jpeg = encode(cifar_images[1].repeat(8, axis=0).repeat(8, axis=1), "JPEG", quality=90)  # 256 x 256
    cases = [
        (png[:200], "truncated or corrupt"),                      # header fine, pixel data cut short
        (png[:30], "not a complete JPEG, PNG or WebP image"),     # header itself cut short
        (jpeg[: len(jpeg) * 2 // 3], "truncated or corrupt"),
        (jpeg[:400], "corrupt"),                                  # cut inside its tables
        (b"\x89PNG\r\n\x1a\n" + b"\xff" * 64, "not a complete JPEG, PNG or WebP image"),
        (b"RIFF\x10\x00\x00\x00WEBPVP8 " + b"\x00" * 20, "is corrupt"),
    ]
    for blob, message in cases:
        error = refusal([png, blob])
        assert error.status == 400 and error.message.startswith("image 2 of 2: ") and message in error.message, \
            (blob[:16], error.message)
    single = refusal([png[:200]])
    assert single.status == 400 and single.message.startswith("the PNG image (32x32, 200 bytes) is truncated")


# -- the tensor: the same as preprocess(), one image at a time -----------------------------------------------------
def odd_modes() -> list[bytes]:
    """1-bit, palette (with transparency), RGBA, grayscale + alpha, 16-bit grayscale PNGs, a CMYK and a grayscale
    JPEG, a lossless WebP, at sizes that are not the model's."""
    from PIL import Image

    rng = np.random.default_rng(3)
    rgb = Image.fromarray(rng.integers(0, 256, (45, 61, 3), dtype=np.uint8))
    images: list[tuple[Image.Image, str, dict]] = [
        (rgb.convert("1"), "PNG", {}),
        (rgb.convert("P", palette=Image.Palette.ADAPTIVE, colors=17), "PNG", {"transparency": 3}),
        (Image.fromarray(rng.integers(0, 256, (40, 33, 4), dtype=np.uint8), "RGBA"), "PNG", {}),
        (rgb.convert("LA"), "PNG", {}),
        (Image.fromarray(rng.integers(0, 65536, (37, 52), dtype=np.uint16)), "PNG", {}),
        (rgb.convert("CMYK"), "JPEG", {"quality": 85}),
        (rgb.convert("L"), "JPEG", {"quality": 85}),
        (rgb, "WEBP", {"lossless": True}),
    ]
    blobs = []
    for image, fmt, options in images:
        buf = io.BytesIO()
        image.save(buf, fmt, **options)
        blobs.append(buf.getvalue())
    assert decode_image_bytes(blobs[4]).mode.startswith("I;16")  # really a 16-bit image
    return blobs


@pytest.mark.parametrize("spec", [CIFAR_SPEC, RESIZING_SPEC], ids=["cifar-32", "resize-28-crop-24-bicubic"])
def test_the_batch_is_bit_identical_to_preprocess(cifar_images, spec):
    blobs = [encode(img, "PNG") for img in cifar_images] + [encode(img, "JPEG", quality=90) for img in cifar_images]
    blobs += odd_modes()
    tensor = images_to_tensor(blobs, served(spec), Limits())
    expected = preprocess([decode_image_bytes(b) for b in blobs], spec)
    assert tensor.dtype == np.float32 and tensor.shape == expected.shape == (len(blobs), 3, spec.input_size,
                                                                             spec.input_size)
    np.testing.assert_array_equal(tensor, expected)
    np.testing.assert_array_equal(tensor, through_arrays(blobs, spec))


def through_arrays(blobs: list[bytes], spec: PreprocessSpec) -> np.ndarray:
    """The batch as preprocess() made it before images were resized as PIL images: each decoded image to a uint8
    RGB array, back to an image to be resized, the whole batch normalised at once."""
    crops = np.stack([pixels.resize_crop(pixels.to_uint8_rgb(decode_image_bytes(b)), spec.input_size, spec.resize,
                                         spec.interpolation) for b in blobs])
    x = crops.astype(np.float32) * np.float32(spec.scale)
    x -= np.asarray(spec.mean, np.float32)
    x /= np.asarray(spec.std, np.float32)
    return x.transpose(0, 3, 1, 2)
    assert images_to_tensor([], served(spec), Limits()).shape == (0, 3, spec.input_size, spec.input_size)


def test_freed_memory_is_handed_back_where_the_c_library_can():
    import ctypes
    import sys

    has_trim = sys.platform.startswith("linux") and hasattr(ctypes.CDLL(None), "malloc_trim")
    assert trim_memory() is has_trim


def test_the_pixel_budget_lets_small_images_through_and_large_ones_take_turns():
    """Real threads: while one large image holds most of the budget, a second large one waits and small ones
    do not; the second runs once the first is done."""
    import threading

    from trtinfer.serve.images import PixelBudget

    budget = PixelBudget(100)
    order: list[str] = []
    holding = threading.Event()

    def large(name: str, release: threading.Event | None) -> None:
        with budget.hold(80):
            order.append(name)
            holding.set()
            if release is not None:
                release.wait(10)

    release = threading.Event()
    a = threading.Thread(target=large, args=("a", release))
    a.start()
    assert holding.wait(10)
    b = threading.Thread(target=large, args=("b", None))
    b.start()
    with budget.hold(10):  # a small image does not wait behind the large ones
        order.append("small")
    b.join(0.3)
    assert b.is_alive() and order == ["a", "small"]  # b waits for a's pixels
    release.set()
    a.join(10)
    b.join(10)
    assert order == ["a", "small", "b"] and not b.is_alive()
    with budget.hold(10_000):  # larger than the whole budget: runs alone once it is free
        pass
