"""SIGINT and SIGTERM alike: both interrupt long work with an exception, so every ``finally`` runs
and no temporary is left behind; a few critical steps (renaming a set of artifacts into place,
removing temporaries) hold the signal until they are done, so an interrupt never splits a set.

Python turns SIGINT into KeyboardInterrupt by itself but lets SIGTERM kill the process on the
spot (no cleanup at all); :func:`termination_raises` makes SIGTERM raise :class:`Interrupted` too.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from pathlib import Path
from types import FrameType
from typing import Any

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Interrupted(KeyboardInterrupt):
    """The process got SIGINT or SIGTERM. ``written``: artifacts completed before it arrived."""

    def __init__(self, signum: int = signal.SIGINT, written: list[Path] | None = None) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum
        self.written = list(written or [])

    @property
    def exit_code(self) -> int:
        return 128 + int(self.signum)


def _raise(signum: int, frame: FrameType | None) -> None:
    raise Interrupted(signum)


@contextlib.contextmanager
def termination_raises() -> Iterator[None]:
    """While inside, SIGTERM (and SIGINT) raise :class:`Interrupted` in the main thread; the previous
    handlers come back on the way out."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {sig: signal.signal(sig, _raise) for sig in SIGNALS}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


class _Held:
    def __init__(self) -> None:
        self.received: int | None = None
        self.written: list[Path] = []  # what the section completed, for the Interrupted it may raise


@contextlib.contextmanager
def held_signals() -> Iterator[_Held]:
    """Hold SIGINT/SIGTERM during a short critical section, then deliver the first one held as
    :class:`Interrupted` (carrying ``.written``, which the section may set) once the section has
    ended. Outside the main thread there is nothing to hold: signals reach the main thread only."""
    held = _Held()
    if threading.current_thread() is not threading.main_thread():
        yield held
        return

    def record(signum: int, frame: FrameType | None) -> None:
        held.received = held.received or signum

    previous: dict[int, Any] = {sig: signal.signal(sig, record) for sig in SIGNALS}
    try:
        yield held
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if held.received:
        raise Interrupted(held.received, written=held.written)
