"""Results handed from worker threads to an event loop: one wake-up per burst, and every outcome
(result, error, cancellation on either side) arrives as ``asyncio.wrap_future`` would deliver it."""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import Future

import pytest

from trtinfer.runtime import handoff


def test_a_burst_of_results_wakes_the_loop_once(monkeypatch):
    drains = []
    original = handoff._Mailbox.drain

    def counted(self):
        drains.append(len(self.ready))
        original(self)

    monkeypatch.setattr(handoff._Mailbox, "drain", counted)

    async def main():
        futures = [Future() for _ in range(32)]
        waiting = asyncio.gather(*(handoff.wait_result(f) for f in futures))
        await asyncio.sleep(0)  # every waiter has registered its callback
        posted = threading.Event()

        def batch_done():  # a batcher worker finishing one batch
            for i, future in enumerate(futures):
                future.set_running_or_notify_cancel()
                future.set_result(i)
            posted.set()

        threading.Thread(target=batch_done).start()
        posted.wait(10)  # the loop is blocked while the whole batch is posted
        return await waiting

    assert asyncio.run(main()) == list(range(32))
    assert drains == [32]  # asyncio.wrap_future would have woken the loop 32 times


def test_errors_and_results_already_there():
    async def main():
        failed: Future = Future()
        failed.set_exception(ValueError("bad rows"))
        done: Future = Future()
        done.set_result("early")
        with pytest.raises(ValueError, match="bad rows"):
            await handoff.wait_result(failed)
        return await handoff.wait_result(done)

    assert asyncio.run(main()) == "early"


def test_cancelling_the_await_cancels_the_request_and_the_reverse():
    async def main():
        queued: Future = Future()
        task = asyncio.ensure_future(handoff.wait_result(queued))
        await asyncio.sleep(0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert queued.cancelled()  # a batcher request that has not started never runs

        dropped: Future = Future()
        waiter = asyncio.ensure_future(handoff.wait_result(dropped))
        await asyncio.sleep(0)
        threading.Thread(target=dropped.cancel).start()
        with pytest.raises(asyncio.CancelledError):
            await waiter

    asyncio.run(main())


def test_a_result_after_the_loop_closed_is_dropped_quietly():
    loop = asyncio.new_event_loop()
    future: Future = Future()

    async def register():
        asyncio.ensure_future(handoff.wait_result(future))
        await asyncio.sleep(0)

    loop.run_until_complete(register())
    loop.close()
    future.set_running_or_notify_cancel()
    future.set_result(1)  # the poster must not raise into the batcher's worker
    assert not handoff._mailbox(loop).ready


def test_a_finished_loop_is_not_kept_alive():
    import gc
    import weakref

    async def main():
        done: Future = Future()
        done.set_result(1)
        return await handoff.wait_result(done)

    loop = asyncio.new_event_loop()
    assert loop.run_until_complete(main()) == 1
    loop.close()
    gone = weakref.ref(loop)
    del loop
    gc.collect()
    assert gone() is None
