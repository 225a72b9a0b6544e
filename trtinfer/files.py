"""Reading a file a user names: a regular file only, its size checked before a byte is read.

A FIFO hangs a reader, ``/dev/zero`` never ends and a 40 GB file named as a 4 kB config fills memory:
every path trtinfer reads from a user (images, configs, tuning caches, checkpoints' side files) goes
through :func:`check_regular`, :func:`open_regular` or :func:`read_bounded`, which refuse all three in
one line. The file is opened non-blocking and checked again on the open descriptor, so a path
swapped for a FIFO between the check and the read cannot hang it either.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

from .errors import TrtInferError

#: what a non-regular file is, for the message
_KINDS = ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISCHR, "a character device"),
          (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"))


def _kind(mode: int) -> str:
    return next((name for test, name in _KINDS if test(mode)), "not a regular file")


def _not_regular(path: Path, mode: int, what: str, error: type[TrtInferError]) -> TrtInferError:
    return error(f"{what} {path} is {_kind(mode)}, not a regular file",
                 hint="pass a regular file (copy the data to a file first)")


def _too_large(path: Path, size: int, max_bytes: int, what: str, error: type[TrtInferError],
               hint: str | None) -> TrtInferError:
    return error(f"{what} {path} is {size:,} bytes, over the {max_bytes:,}-byte bound for it",
                 hint=hint or "pass the right file; this one is far larger than such a file can be")


def check_regular(path: str | Path, what: str = "file", error: type[TrtInferError] = TrtInferError,
                  max_bytes: int | None = None, hint: str | None = None) -> int:
    """The size of ``path`` (symlinks followed), or ``error`` when it is missing, not a regular file
    (FIFO, device, directory, socket) or larger than ``max_bytes``."""
    path = Path(path)
    try:
        info = os.stat(path)
    except FileNotFoundError:
        raise error(f"{what} not found: {path}", hint="check the path") from None
    except OSError as exc:
        raise error(f"cannot read {what} {path}: {exc.strerror or exc}", hint="check the path and its permissions") \
            from None
    if not stat.S_ISREG(info.st_mode):
        raise _not_regular(path, info.st_mode, what, error)
    if max_bytes is not None and info.st_size > max_bytes:
        raise _too_large(path, info.st_size, max_bytes, what, error, hint)
    return info.st_size


@contextmanager
def open_regular(path: str | Path, what: str = "file", error: type[TrtInferError] = TrtInferError,
                 max_bytes: int | None = None, hint: str | None = None) -> Iterator[BinaryIO]:
    """The regular file ``path`` open for reading; ``error`` as :func:`check_regular` says otherwise.

    Checked by path first (one line for a FIFO or device, no open), then opened non-blocking and
    checked again on the descriptor, so a path swapped for a FIFO in between cannot hang the reader.
    For readers that need part of a file (an image's header); :func:`read_bounded` reads it whole."""
    path = Path(path)
    check_regular(path, what, error, max_bytes, hint)
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    except OSError as exc:
        raise error(f"cannot read {what} {path}: {exc.strerror or exc}", hint="check the path and its permissions") \
            from None
    with os.fdopen(fd, "rb") as f:
        mode = os.fstat(f.fileno()).st_mode
        if not stat.S_ISREG(mode):  # swapped after the check
            raise _not_regular(path, mode, what, error)
        yield f


def read_bounded(path: str | Path, max_bytes: int, what: str = "file", error: type[TrtInferError] = TrtInferError,
                 hint: str | None = None) -> bytes:
    """The bytes of the regular file ``path``, at most ``max_bytes`` of them; ``error`` otherwise.

    Opened by :func:`open_regular` (a FIFO or device is one line, never a hang), and the read stops
    one byte past the bound whatever the file claims."""
    path = Path(path)
    with open_regular(path, what, error, max_bytes, hint) as f:
        data = f.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise _too_large(path, len(data), max_bytes, what, error, hint)
    return data


def read_stream_bounded(stream: BinaryIO, max_bytes: int, what: str = "standard input",
                        error: type[TrtInferError] = TrtInferError, hint: str | None = None) -> bytes:
    """At most ``max_bytes`` from a stream (standard input): the read stops one byte past the bound."""
    chunks: list[bytes] = []
    total = 0
    while total <= max_bytes:
        chunk = stream.read(min(1 << 20, max_bytes + 1 - total))
        if not chunk:
            break
        chunks.append(chunk)
        total += len(chunk)
    if total > max_bytes:
        raise error(f"{what} holds more than {max_bytes:,} bytes, the bound for it",
                    hint=hint or "pass a smaller input")
    return b"".join(chunks)
