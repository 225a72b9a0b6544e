"""calibration/sources.py on hostile folders: a data folder is never followed outside its root (links out are
refused naming the link), links inside it are fine, and every file read is a regular file (FIFOs and devices
refused in one line, never a hang)."""

from __future__ import annotations

import os
import pickle
import threading
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from decode_counter import DecodeCounter
from trtinfer.calibration.sources import decode_image, load_labeled
from trtinfer.errors import DataError


def _png(path: Path, value: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((8, 8, 3), value, np.uint8)).save(path)
    return path


def _data(tmp_path: Path) -> Path:
    """data/cat/0.png and data/dog/1.png, beside tmp_path/elsewhere/far.png outside the data folder."""
    _png(tmp_path / "data" / "cat" / "0.png", 10)
    _png(tmp_path / "data" / "dog" / "1.png", 20)
    _png(tmp_path / "elsewhere" / "far.png", 30)
    return tmp_path / "data"


def _refused(call: Callable[[], object], seconds: float = 5.0) -> DataError:
    """The DataError ``call`` raises, within ``seconds`` (a hang or a walk of the filesystem fails the test)."""
    outcome: list[BaseException | object] = []

    def run() -> None:
        try:
            outcome.append(call())
        except BaseException as exc:  # noqa: BLE001 -- handed to the test
            outcome.append(exc)

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    worker.join(seconds)
    assert outcome, f"no answer within {seconds} s (hung, or walking far beyond the data folder)"
    assert isinstance(outcome[0], DataError), f"expected a DataError, got {outcome[0]!r}"
    assert "\n" not in str(outcome[0])
    return outcome[0]


def _release(fifo: Path) -> None:
    """Unblock a reader left waiting on ``fifo`` (the unfixed code opens it)."""
    try:
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
    except OSError:
        pass


def _refused_on_fifo(fifo: Path, call: Callable[[], object]) -> DataError:
    """Make ``fifo``, then :func:`_refused` of ``call``; a reader left waiting on it is released either way."""
    os.mkfifo(fifo)
    try:
        return _refused(call)
    finally:
        _release(fifo)


def test_class_folder_linked_outside_the_root_is_refused(tmp_path: Path):
    root = _data(tmp_path)
    (root / "eel").symlink_to(tmp_path / "elsewhere")
    err = _refused(lambda: load_labeled(root, "train"))
    assert f"{root / 'eel'} points outside the data folder {root} (to {tmp_path / 'elsewhere'})" in str(err)


def test_class_folder_linked_to_the_filesystem_root_is_refused_without_walking_it(tmp_path: Path):
    root = _data(tmp_path)
    (root / "everything").symlink_to("/")
    assert f"{root / 'everything'} points outside the data folder {root} (to /)" in str(_refused(
        lambda: load_labeled(root, "train")))


def test_split_folder_linked_outside_the_root_is_refused(tmp_path: Path):
    _png(tmp_path / "elsewhere" / "cat" / "far.png")
    root = tmp_path / "data"
    _png(root / "train" / "cat" / "0.png")
    (root / "test").symlink_to(tmp_path / "elsewhere")
    assert "points outside the data folder" in str(_refused(lambda: load_labeled(root, "test")))


def test_image_linked_outside_the_root_is_refused(tmp_path: Path):
    root = _data(tmp_path)
    (root / "cat" / "far.png").symlink_to(tmp_path / "elsewhere" / "far.png")
    err = _refused(lambda: load_labeled(root, "train"))
    assert f"{root / 'cat' / 'far.png'} points outside the data folder" in str(err)
    assert "hint: copy the data into" in str(err)


def test_device_linked_into_a_class_folder_is_refused(tmp_path: Path):
    root = _data(tmp_path)
    (root / "cat" / "zero.png").symlink_to("/dev/zero")
    assert "zero.png points outside the data folder" in str(_refused(lambda: load_labeled(root, "train")))


def test_links_inside_the_root_are_followed_and_loops_end(tmp_path: Path):
    root = _data(tmp_path)
    (root / "cat" / "alias.png").symlink_to("../dog/1.png")
    (root / "cat" / "loop").symlink_to(".")  # a loop: walked once
    (root / "cat" / "up").symlink_to("..")  # the whole root again, below a class: walked once
    (root / "pup").symlink_to("dog")
    root_link = tmp_path / "data-link"  # the root itself may be a link
    root_link.symlink_to(root)
    data = load_labeled(root_link, "train")
    assert data.class_names == ["cat", "dog", "pup"]
    # cat: 0.png, alias.png and, through up/, dog/1.png once (cat/ and pup/ are walked already)
    assert np.bincount(data.labels).tolist() == [3, 1, 1]
    assert [int(data.images[i][0, 0, 0]) for i in range(len(data))] == [10, 20, 20, 20, 20]


def test_fifo_in_a_class_folder_is_refused_in_one_line(tmp_path: Path):
    root = _data(tmp_path)
    fifo = root / "cat" / "pipe.png"
    err = _refused_on_fifo(fifo, lambda: load_labeled(root, "train"))
    assert f"image {fifo} is a FIFO (named pipe), not a regular file" in str(err)


def test_decoding_a_fifo_is_refused_without_hanging(tmp_path: Path):
    fifo = tmp_path / "pipe.png"
    err = _refused_on_fifo(fifo, lambda: decode_image(fifo))
    assert "is a FIFO (named pipe)" in str(err)


def test_array_file_that_is_a_fifo_is_refused(tmp_path: Path):
    fifo = tmp_path / "images.npy"
    err = _refused_on_fifo(fifo, lambda: load_labeled(fifo, "train"))
    assert f"{fifo} is a FIFO (named pipe), not a regular file" in str(err)


def test_cifar_batch_that_is_a_fifo_is_refused_not_skipped(tmp_path: Path):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    rows = np.zeros((2, 3072), np.uint8)
    (folder / "batches.meta").write_bytes(pickle.dumps({"label_names": [f"c{i}" for i in range(10)]}, protocol=2))
    (folder / "data_batch_1").write_bytes(pickle.dumps({"data": rows, "labels": [0, 1]}, protocol=2))
    err = _refused_on_fifo(folder / "data_batch_2", lambda: load_labeled(tmp_path, "train"))
    assert f"{folder / 'data_batch_2'} is a FIFO (named pipe), not a regular file" in str(err)


def test_only_the_listed_formats_are_decoded(tmp_path: Path):
    """Pillow goes by content: a ".png" holding PostScript must not reach the EPS plugin (it runs Ghostscript)."""
    fake = tmp_path / "fake.png"
    fake.write_bytes(b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\nshowpage\n")
    with pytest.raises(DataError, match=r"fake\.png: it is not a PNG, JPEG, BMP, GIF, WEBP, TIFF, PPM image"):
        decode_image(fake)


def test_calibration_and_evaluation_sets_decode_one_image_at_a_time(tmp_path: Path, monkeypatch):
    """A folder of large photos must not be held at native size a chunk (256 images) at a time."""
    from trtinfer.calibration.calibset import make_calibration_set, make_eval_set
    from trtinfer.preprocess import make_spec

    for i in range(6):
        _png(tmp_path / "data" / ("cat" if i % 2 else "dog") / f"{i}.png", i)
    counter = DecodeCounter().install(monkeypatch)
    make_calibration_set(tmp_path / "data", make_spec(8, "imagenet"), samples=6)
    make_eval_set(tmp_path / "data", make_spec(8, "imagenet"))
    assert counter.decoded == 12 and counter.most <= 2  # the one being preprocessed, and the last one until it is replaced


def test_a_calibration_set_that_is_a_fifo_is_named_as_one(tmp_path: Path):
    """It was reported as "calibration set not found" (is_file() is false for a FIFO)."""
    from trtinfer.calibration.calibset import load_calibration_set

    fifo = tmp_path / "calib.npz"
    os.mkfifo(fifo)
    with pytest.raises(DataError, match="calibration set .* is a FIFO"):
        load_calibration_set(fifo)
    with pytest.raises(DataError, match="calibration set not found"):
        load_calibration_set(tmp_path / "absent.npz")
