"""Coroutines' requests settled from worker threads: one wake-up of the loop per batch, and every outcome
(result, error, cancellation on either side) arrives as ``asyncio.wrap_future`` would deliver it."""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import Future

import pytest

from trtinfer.runtime import handoff


def test_a_batch_of_results_wakes_the_loop_once(monkeypatch):
    drains = []
    original = handoff._Mailbox.drain

    def counted(self):
        drains.append(len(self.ready))
        original(self)

    monkeypatch.setattr(handoff._Mailbox, "drain", counted)

    async def main():
        loop = asyncio.get_running_loop()
        futures = [handoff.LoopFuture(loop) for _ in range(32)]
        threads_future: Future = Future()  # a thread client's request in the same batch
        posted = threading.Event()

        def batch_done():  # a batcher worker finishing one batch
            assert all(f.set_running_or_notify_cancel() for f in futures)
            threads_future.set_running_or_notify_cancel()
            handoff.set_results([*futures, threads_future], [*range(32), "thread"])
            posted.set()

        threading.Thread(target=batch_done).start()
        posted.wait(10)  # the loop is blocked while the whole batch is posted
        results = await asyncio.gather(*(f.waiter for f in futures))
        assert all(f.done() and not f.running() for f in futures)
        return results, threads_future.result(0)

    assert asyncio.run(main()) == (list(range(32)), "thread")
    assert drains == [32]  # asyncio.wrap_future would have woken the loop 32 times


def test_errors_and_results_settled_before_the_await():
    async def main():
        loop = asyncio.get_running_loop()
        failed, done = handoff.LoopFuture(loop), handoff.LoopFuture(loop)
        threading.Thread(target=failed.set_exception, args=(ValueError("bad rows"),)).start()
        done.set_result("early")
        with pytest.raises(ValueError, match="bad rows"):
            await failed.waiter
        return await done.waiter

    assert asyncio.run(main()) == "early"


def test_cancelling_the_await_keeps_the_request_from_running_or_drops_its_result():
    async def main():
        loop = asyncio.get_running_loop()
        queued = handoff.LoopFuture(loop)
        task = asyncio.ensure_future(queued.waiter)
        await asyncio.sleep(0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert queued.cancelled() and queued.done()
        assert not queued.set_running_or_notify_cancel()  # the batcher drops it: it never runs

        running = handoff.LoopFuture(loop)
        assert running.set_running_or_notify_cancel() and running.running()
        running.waiter.cancel()  # cancelled while its batch runs: the result arrives and is dropped quietly
        worker = threading.Thread(target=running.set_result, args=(1,))
        worker.start()
        worker.join()
        await asyncio.sleep(0.05)
        assert running.waiter.cancelled()

    asyncio.run(main())


def test_a_result_after_the_loop_closed_is_dropped_quietly():
    loop = asyncio.new_event_loop()

    async def make():
        return handoff.LoopFuture(loop)

    future = loop.run_until_complete(make())
    loop.close()
    future.set_running_or_notify_cancel()
    future.set_result(1)  # the poster must not raise into the batcher's worker
    assert not handoff._mailbox(loop).ready


def test_a_finished_loop_is_not_kept_alive():
    import gc
    import weakref

    async def main():
        future = handoff.LoopFuture(asyncio.get_running_loop())
        future.set_result(1)
        return await future.waiter

    loop = asyncio.new_event_loop()
    assert loop.run_until_complete(main()) == 1
    loop.close()
    gone = weakref.ref(loop)
    del loop
    gc.collect()
    assert gone() is None


def test_each_loop_gets_its_own_mailbox_from_one_thread():
    async def box():
        return handoff._mailbox(asyncio.get_running_loop())

    first, second = asyncio.new_event_loop(), asyncio.new_event_loop()
    try:
        a, b = first.run_until_complete(box()), second.run_until_complete(box())
        assert a is not b and a.loop() is first and b.loop() is second
        assert first.run_until_complete(box()) is a
    finally:
        first.close()
        second.close()
