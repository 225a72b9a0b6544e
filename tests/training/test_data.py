"""training/data.py and training/memory.py on image folders: rows are paths until a batch needs them, one image
is decoded at its native size at a time (then resized), and the memory check counts that native-size decode,
sized from the image headers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from decode_counter import DecodeCounter

torch = pytest.importorskip("torch")

from trtinfer.calibration import sources  # noqa: E402
from trtinfer.calibration.sources import ImageFiles  # noqa: E402
from trtinfer.errors import TrtInferError  # noqa: E402
from trtinfer.preprocess import make_spec  # noqa: E402
from trtinfer.training import memory  # noqa: E402
from trtinfer.training.data import batches, load_train_data  # noqa: E402

SPEC = make_spec(16, "imagenet")


def _folder(root: Path, sizes: list[tuple[int, int]], per_class: int = 4) -> Path:
    """``per_class`` random RGB PNGs in each of three class folders, image i sized ``sizes[i % len(sizes)]`` (WxH)."""
    from PIL import Image

    rng = np.random.default_rng(0)
    i = 0
    for name in ("ant", "bee", "cat"):
        (root / name).mkdir(parents=True)
        for _ in range(per_class):
            width, height = sizes[i % len(sizes)]
            Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8)).save(root / name / f"{i}.png")
            i += 1
    return root


def test_folder_rows_are_paths_and_one_image_is_decoded_at_a_time(tmp_path: Path, monkeypatch):
    root = _folder(tmp_path / "data", [(40, 30), (24, 36)])
    counter = DecodeCounter().install(monkeypatch)  # native-size images decoded, and held at once
    data = load_train_data(root, 0.25, seed=0)
    assert counter.decoded == 0, f"reading the folder decoded {counter.decoded} images up front"
    assert isinstance(data.train.images, ImageFiles) and isinstance(data.val.images, ImageFiles)
    assert len(data.train) == 9 and len(data.val) == 3
    shapes = [tuple(x.shape) for x, _ in batches(data.train, SPEC, 4, torch.Generator().manual_seed(0))]
    assert shapes == [(4, 3, 16, 16), (4, 3, 16, 16)]  # the last row alone is skipped (BatchNorm)
    assert counter.decoded == 8 and counter.most == 1
    [(x, y)] = list(batches(data.val, SPEC, 256, None))  # the evaluation batch: 256 rows, still one image at a time
    assert x.shape == (3, 3, 16, 16) and counter.decoded == 11 and counter.most == 1


def test_plain_batches_are_the_images_preprocessed_one_by_one(tmp_path: Path):
    """Per-image resizing gives the tensors the one preprocessing gives the whole batch."""
    from trtinfer.preprocess import preprocess

    data = sources.load_labeled(_folder(tmp_path / "data", [(40, 30), (24, 36)], per_class=2), "train")
    [(x, y)] = list(batches(data, SPEC, 8, None))
    want = preprocess([data.images[i] for i in range(len(data))], SPEC)
    np.testing.assert_array_equal(x.numpy(), want)
    assert y.tolist() == [0, 0, 1, 1, 2, 2]


def test_largest_image_is_read_from_the_headers(tmp_path: Path, monkeypatch):
    from PIL import ImageFile

    root = _folder(tmp_path / "data", [(32, 32), (32, 32), (300, 200), (32, 32)], per_class=2)

    def no_decoding(*args, **kwargs):
        raise AssertionError("an image was decoded to read its size")

    monkeypatch.setattr(ImageFile.ImageFile, "load", no_decoding)
    assert load_train_data(root, 0.25, seed=0).largest_pixels() == 300 * 200


def test_memory_estimate_counts_the_native_size_decode(tmp_path: Path, monkeypatch):
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.Flatten(), torch.nn.LazyLinear(2))
    model(torch.zeros(1, 3, 16, 16))
    plain = memory.estimate_training_bytes(model, 16, 4, "sgd", False)
    big = memory.estimate_training_bytes(model, 16, 4, "sgd", False, largest_pixels=4000 * 4000)
    assert big - plain == memory.DECODE_BYTES_PER_PIXEL * 4000 * 4000
    monkeypatch.setattr(memory, "available_bytes", lambda device: int((plain + 1_000_000) / memory.USABLE_FRACTION))
    assert memory.check_fits(model, 16, 4, "sgd", False, torch.device("cpu"), largest_pixels=32 * 32) > plain
    with pytest.raises(TrtInferError, match=r"decoding the largest image \(16,000,000 pixels\) at its native "
                                            r"size takes about 0\.2 GiB of it.*hint: downscale the images"):
        memory.check_fits(model, 16, 4, "sgd", False, torch.device("cpu"), largest_pixels=4000 * 4000)
