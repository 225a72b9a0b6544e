"""trtinfer.files: regular files only, sizes bounded before reading (real FIFOs, devices and symlinks)."""

import io
import os
import threading
from pathlib import Path

import pytest

from trtinfer.errors import DataError, TrtInferError
from trtinfer.files import check_regular, read_bounded, read_stream_bounded


def test_a_regular_file_within_the_bound_is_read_whole(tmp_path):
    path = tmp_path / "a.json"
    path.write_bytes(b"x" * 100)
    assert read_bounded(path, 100) == b"x" * 100
    assert check_regular(path) == 100


def test_a_file_over_the_bound_is_refused_before_reading(tmp_path):
    path = tmp_path / "big"
    path.write_bytes(b"x" * 101)
    with pytest.raises(DataError, match="101 bytes, over the 100-byte bound"):
        read_bounded(path, 100, "image", DataError)


def test_a_fifo_is_refused_without_hanging(tmp_path):
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    done = []
    worker = threading.Thread(target=lambda: done.append(pytest.raises(TrtInferError, read_bounded, fifo, 10)),
                              daemon=True)
    worker.start()
    worker.join(10)
    assert done, "reading a FIFO hung"
    assert "FIFO" in str(done[0].value)


@pytest.mark.parametrize("device", ["/dev/zero", "/dev/null"])
def test_devices_are_refused(device):
    with pytest.raises(TrtInferError, match="character device, not a regular file"):
        read_bounded(device, 1 << 20, "image")


def test_directories_and_missing_paths_are_one_line_errors(tmp_path):
    with pytest.raises(TrtInferError, match="is a directory"):
        check_regular(tmp_path)
    with pytest.raises(TrtInferError, match="not found"):
        check_regular(tmp_path / "absent")


def test_a_symlink_to_a_device_is_refused(tmp_path):
    link = tmp_path / "cat.png"
    link.symlink_to("/dev/zero")
    with pytest.raises(TrtInferError, match="character device"):
        read_bounded(link, 100)


def test_a_stream_is_read_up_to_its_bound_only():
    assert read_stream_bounded(io.BytesIO(b"abc"), 3) == b"abc"
    stream = io.BytesIO(b"a" * 10_000)
    with pytest.raises(TrtInferError, match="more than 100 bytes"):
        read_stream_bounded(stream, 100)
    assert stream.tell() == 101  # stopped one byte past the bound


def test_a_label_file_that_is_a_fifo_or_device_is_one_line(tmp_path):
    """`--labels PIPE` hung reading it (its stat size, 0, passed the bound)."""
    from trtinfer.labels import read_label_file

    fifo = tmp_path / "labels.txt"
    os.mkfifo(fifo)
    with pytest.raises(TrtInferError, match="label file.*FIFO"):
        read_label_file(fifo, str(fifo))
    with pytest.raises(TrtInferError, match="character device"):
        read_label_file(Path("/dev/zero"), "/dev/zero")
