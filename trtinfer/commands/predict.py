"""``trtinfer predict ARTIFACT IMAGE...``: the top-k labels of image files, through the runtime.

Every input is bounded by what it costs to read: each path must be a regular file of at most
:data:`MAX_IMAGE_BYTES` (a FIFO, a device or ``/dev/zero`` is one line, never a hang or a read without
end), standard input is read up to the same bound, and images are decoded one at a time, each
preprocessed into its model rows and closed before the next is decoded, with inference every
:data:`CHUNK_IMAGES` rows; so memory holds one decoded image and one chunk of rows, however many
files are named.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click

from ..pixels import MAX_IMAGE_PIXELS

#: Largest encoded image read, in bytes: 4 per pixel of the largest image decoded (MAX_IMAGE_PIXELS, 64 MP),
#: 256 MB. An 8-bit photo at that size is at most 3 bytes a pixel even stored uncompressed as PNG (192 MB)
#: and 10-40 MB as JPEG or WebP, so no photo that could be decoded is refused (only 16-bit PNGs of noise-like
#: content near 64 MP come close); while a file or pipe that never ends (/dev/zero, `yes |`) stops there.
MAX_IMAGE_BYTES = 4 * MAX_IMAGE_PIXELS
#: Images preprocessed per inference run (fewer where the runtime's max_batch is smaller): a chunk
#: holds model rows (3x224x224 float32 is 0.6 MB), never decoded images, which are closed one by one.
CHUNK_IMAGES = 32
#: The image argument that means standard input.
STDIN = "-"
_TOO_LARGE_HINT = "an encoded photo is far smaller; downscale or re-encode it (e.g. as JPEG) first"


@click.command("predict")
@click.argument("artifact", type=click.Path(path_type=Path))
@click.argument("images", nargs=-1, required=True, type=click.Path(path_type=Path, allow_dash=True))
@click.option("--top-k", default=3, show_default=True, type=click.IntRange(1, 1000), help="Labels per image.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document (for scripts).")
@click.option("--backend", default="auto", show_default=True, help="auto, tensorrt, onnxruntime or openvino.")
def predict(artifact: Path, images: tuple[Path, ...], top_k: int, as_json: bool, backend: str) -> None:
    """Classify IMAGES (JPEG, PNG, WebP; any mode: L, RGBA, P, CMYK, 16-bit) with ARTIFACT.

    IMAGE may be - (once) for an image on standard input; a file named - is ./-:

    \b
        cat cat.png | trtinfer predict ARTIFACT -

    Each image is a regular file (or stream) of at most 256 MB; images are
    decoded one at a time.
    """
    import trtinfer
    from trtinfer.errors import DataError
    from trtinfer.files import check_regular

    names = [str(path) for path in images]
    if names.count(STDIN) > 1:
        raise DataError(f"{STDIN} (standard input) is named {names.count(STDIN)} times",
                        hint="standard input holds one image; name it once")
    for path in images:  # a missing file, FIFO or device is refused before the model loads
        if str(path) != STDIN:
            check_regular(path, "image", DataError, MAX_IMAGE_BYTES, _TOO_LARGE_HINT)
    results: list[list[tuple[str, float]]] = []
    with trtinfer.load(artifact, backend=backend) as model:
        chunk = max(1, min(CHUNK_IMAGES, model.max_batch))
        rows: list[Any] = []
        for row in _preprocessed(images, model.manifest.preprocess):
            rows.append(row)
            if len(rows) == chunk:
                results += _classify(model, rows, top_k)
                rows = []
        if rows:
            results += _classify(model, rows, top_k)
        facts = {"model": model.manifest.name, "precision": model.manifest.precision, "backend": model.backend}
    if as_json:
        click.echo(json.dumps({**facts, "images": [
            {"image": str(path), "predictions": [{"label": label, "probability": round(p, 6)} for label, p in top]}
            for path, top in zip(images, results)]}, indent=2))
        return
    for path, top in zip(images, results):
        click.echo(f"{path}: " + ", ".join(f"{label} {100 * p:.1f}%" for label, p in top))


def _read(path: Path) -> bytes:
    """An image's encoded bytes: the regular file, or standard input, up to :data:`MAX_IMAGE_BYTES`."""
    from trtinfer.errors import DataError
    from trtinfer.files import read_bounded, read_stream_bounded

    if str(path) != STDIN:
        return read_bounded(path, MAX_IMAGE_BYTES, "image", DataError, _TOO_LARGE_HINT)
    stream = getattr(sys.stdin, "buffer", None)
    if stream is None:
        raise DataError("standard input is closed", hint="pipe an image into it, or name image files")
    if stream.isatty():
        raise DataError("standard input is a terminal, not an image",
                        hint=f"pipe an image into it: cat cat.png | trtinfer predict ARTIFACT {STDIN}")
    return read_stream_bounded(stream, MAX_IMAGE_BYTES, "standard input", DataError, _TOO_LARGE_HINT)


def _preprocessed(images: tuple[Path, ...], spec: Any) -> Iterator[Any]:
    """Each image's model row (1, C, H, W), in order; its decoded pixels are freed before the next
    image is read. Errors name the image."""
    from trtinfer.errors import DataError
    from trtinfer.preprocess import decode_image_bytes, preprocess

    for path in images:
        data = _read(path)
        try:
            image = decode_image_bytes(data)
            del data
            try:
                row = preprocess(image, spec)
            finally:
                image.close()
        except DataError as exc:
            raise DataError(f"{path}: {exc.message}", hint=exc.hint) from None
        yield row


def _classify(model: Any, rows: list[Any], top_k: int) -> list[list[tuple[str, float]]]:
    """One inference over a chunk of preprocessed rows (what ``Model.predict`` does after preprocessing)."""
    import numpy as np

    from trtinfer.runtime.model import top_k_labels

    return top_k_labels(model.infer(np.concatenate(rows)), model.labels, top_k)
