"""Handing the C heap's free memory back to the system after a large request (glibc's ``malloc_trim(0)``): the
image decoder and the JSON parser process both free tens of MB at once, which glibc would otherwise keep.
No dependency beyond ctypes, so the parser process can import it beside the protocol."""

from __future__ import annotations

import ctypes
import functools
import logging
import sys
from collections.abc import Callable

log = logging.getLogger(__name__)


def trim_memory() -> bool:
    """Hand the C heap's free memory back to the system; False where the C library has no such call (musl,
    macOS)."""
    trim = _malloc_trim()
    if trim is None:
        return False
    trim(0)
    return True


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        function = ctypes.CDLL(None).malloc_trim  # the C library the process already runs on
    except (OSError, AttributeError):
        log.debug("this C library has no malloc_trim; freed memory stays with the process")
        return None
    function.argtypes = [ctypes.c_size_t]
    function.restype = ctypes.c_int
    return function
