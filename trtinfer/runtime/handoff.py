"""A coroutine's request on the batcher: results reach its event loop in one wake-up per batch.

``asyncio.wrap_future`` over a :class:`concurrent.futures.Future` costs, per request, the future's
condition variable and lock, a done-callback, and one ``call_soon_threadsafe`` (a write to the
loop's wake-up pipe, a system call) on the cores the model computes on. :class:`LoopFuture` is what
the batcher settles instead: the part of the ``concurrent.futures.Future`` interface the batcher calls,
delivering to a plain asyncio future through one mailbox per loop. The first result of a batch wakes
the loop; the rest are read in the same pass. Measured with 64 coroutine clients on a 2-core AMX Xeon
(standard-stem ResNet-18 INT8 on OpenVINO): 0.78 of direct full-batch ``infer`` through
``wrap_future``, 0.87 with a mailbox per loop behind a ``concurrent.futures.Future``, 0.90 without it.
"""

from __future__ import annotations

import asyncio
import threading
import weakref
from typing import Any

_mailboxes: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Mailbox] = weakref.WeakKeyDictionary()
_mailboxes_lock = threading.Lock()


class _Mailbox:
    """Outcomes waiting for one loop, and whether the loop has been woken for them."""

    __slots__ = ("loop", "lock", "ready")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = weakref.ref(loop)  # a strong one would keep the loop (the mailboxes' key) alive for ever
        self.lock = threading.Lock()
        self.ready: list[tuple[asyncio.Future[Any], Any, BaseException | None]] = []

    def post(self, waiter: asyncio.Future[Any], value: Any, error: BaseException | None) -> None:
        """Any thread: ``waiter`` gets ``value`` (or ``error``); wake the loop unless a wake-up is pending."""
        self.post_many([(waiter, value, error)])

    def post_many(self, outcomes: list[tuple[asyncio.Future[Any], Any, BaseException | None]]) -> None:
        with self.lock:
            wake = not self.ready
            self.ready.extend(outcomes)
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
        """The loop's thread: hand every posted outcome to its waiter (unless its await was cancelled)."""
        with self.lock:
            ready, self.ready = self.ready, []
        for waiter, value, error in ready:
            if waiter.done():
                continue
            if error is None:
                waiter.set_result(value)
            else:
                waiter.set_exception(error)


_recent = threading.local()  # each thread's last (loop, mailbox): a server's thread makes every request on one loop


def _mailbox(loop: asyncio.AbstractEventLoop) -> _Mailbox:
    last = getattr(_recent, "box", None)
    if last is not None and last.loop() is loop:
        return last
    box = _mailboxes.get(loop)
    if box is None:
        with _mailboxes_lock:
            box = _mailboxes.get(loop)
            if box is None:
                box = _mailboxes[loop] = _Mailbox(loop)
    _recent.box = box
    return box


_PENDING, _RUNNING, _FINISHED = 0, 1, 2


class LoopFuture:
    """The batcher's handle on one coroutine's request (made on the loop's thread, settled from a worker).

    It answers the calls the batcher makes on a ``concurrent.futures.Future`` (``done``, ``running``,
    ``cancelled``, ``set_running_or_notify_cancel``, ``set_result``, ``set_exception``); the coroutine
    awaits ``waiter``. Cancelling that await cancels ``waiter``, so a request that has not started is
    dropped, and a running one's result is discarded.
    """

    __slots__ = ("waiter", "_box", "_state")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.waiter: asyncio.Future[Any] = loop.create_future()
        self._box = _mailbox(loop)
        self._state = _PENDING

    def cancelled(self) -> bool:
        return self.waiter.cancelled()

    def done(self) -> bool:
        return self._state == _FINISHED or self.waiter.done()

    def running(self) -> bool:
        return self._state == _RUNNING

    def set_running_or_notify_cancel(self) -> bool:
        """False when the await was cancelled (the request must not run); else it is running now."""
        if self.waiter.cancelled():
            return False
        self._state = _RUNNING
        return True

    def set_result(self, value: Any) -> None:
        self._state = _FINISHED
        self._box.post(self.waiter, value, None)

    def set_exception(self, error: BaseException) -> None:
        self._state = _FINISHED
        self._box.post(self.waiter, None, error)


def set_results(futures: list[Any], values: list[Any]) -> None:
    """Settle each future with its value: a batch's coroutine requests reach each loop's mailbox in one
    post (one lock, at most one wake-up), the others (``concurrent.futures.Future``) one by one."""
    posts: dict[_Mailbox, list[tuple[asyncio.Future[Any], Any, BaseException | None]]] = {}
    for future, value in zip(futures, values):
        if type(future) is LoopFuture:
            future._state = _FINISHED
            box = future._box
            outcomes = posts.get(box)
            if outcomes is None:
                outcomes = posts[box] = []
            outcomes.append((future.waiter, value, None))
        else:
            future.set_result(value)
    for box, outcomes in posts.items():
        box.post_many(outcomes)
