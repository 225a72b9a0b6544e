"""Results from the batcher's threads reach an event loop in one wake-up per batch, not one per request.

``asyncio.wrap_future`` asks the loop to run a callback for every finished future: one
``call_soon_threadsafe`` each, a write to the loop's wake-up pipe and a system call per request.
With 64 clients and batches of 32, that is 32 wake-ups of the loop for one backend run, on the cores
the model computes on. :func:`wait_result` posts finished futures to one mailbox per loop instead:
the first result of a batch wakes the loop, and the rest are read in the same pass.
"""

from __future__ import annotations

import asyncio
import threading
import weakref
from concurrent.futures import Future
from typing import Any

_mailboxes: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Mailbox] = weakref.WeakKeyDictionary()
_mailboxes_lock = threading.Lock()


class _Mailbox:
    """Finished futures waiting for one loop, and whether the loop has been woken for them."""

    __slots__ = ("loop", "lock", "ready")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = weakref.ref(loop)  # a strong one would keep the loop (the mailboxes' key) alive for ever
        self.lock = threading.Lock()
        self.ready: list[tuple[asyncio.Future[Any], Future]] = []

    def post(self, waiter: asyncio.Future[Any], future: Future) -> None:
        """Any thread: ``future`` is done; wake the loop unless a wake-up is already pending."""
        with self.lock:
            wake = not self.ready
            self.ready.append((waiter, future))
        if wake:
            loop = self.loop()
            try:
                if loop is None:
                    raise RuntimeError("the loop is gone")
                loop.call_soon_threadsafe(self.drain)
            except RuntimeError:  # the loop is closed: nobody awaits these any more
                with self.lock:
                    self.ready.clear()

    def drain(self) -> None:
        """The loop's thread: hand every posted result to its waiter."""
        with self.lock:
            ready, self.ready = self.ready, []
        for waiter, future in ready:
            if waiter.done():  # the awaiting task was cancelled
                continue
            if future.cancelled():
                waiter.cancel()
                continue
            error = future.exception(0)
            if error is None:
                waiter.set_result(future.result(0))
            else:
                waiter.set_exception(error)


def _mailbox(loop: asyncio.AbstractEventLoop) -> _Mailbox:
    box = _mailboxes.get(loop)
    if box is None:
        with _mailboxes_lock:
            box = _mailboxes.get(loop)
            if box is None:
                box = _mailboxes[loop] = _Mailbox(loop)
    return box


async def wait_result(future: Future) -> Any:
    """``await`` a :class:`concurrent.futures.Future` from a coroutine, like ``asyncio.wrap_future``;
    cancelling the await cancels ``future`` (a batcher request that has not started never runs)."""
    loop = asyncio.get_running_loop()
    waiter: asyncio.Future[Any] = loop.create_future()
    box = _mailbox(loop)
    future.add_done_callback(lambda done: box.post(waiter, done))
    try:
        return await waiter
    except asyncio.CancelledError:
        future.cancel()
        raise
