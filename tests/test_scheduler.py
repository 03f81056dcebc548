"""The scheduler: latest request per document wins, also while the older one is running."""

from __future__ import annotations

import asyncio
import threading

import pytest

from infill_ls.scheduler import Scheduler, Superseded


async def test_a_newer_request_sets_the_running_ones_cancel_flag():
    scheduler = Scheduler()
    started = threading.Event()

    def first_job(cancel: threading.Event) -> str:
        started.set()
        # A generation loop checks its flag every token; this one waits for it.
        assert cancel.wait(timeout=30), "the older job was never told to stop"
        return "first"

    first = asyncio.ensure_future(scheduler.run_latest("doc", 0, first_job))
    await asyncio.get_running_loop().run_in_executor(None, started.wait, 30)
    second = await scheduler.run_latest("doc", 0, lambda cancel: "second")
    assert second == "second"
    with pytest.raises(Superseded):
        await first
    scheduler.shutdown()


async def test_requests_for_other_documents_do_not_supersede_each_other():
    scheduler = Scheduler()
    results = await asyncio.gather(
        scheduler.run_latest("a", 50, lambda cancel: "a"),
        scheduler.run_latest("b", 50, lambda cancel: "b"),
    )
    assert results == ["a", "b"]
    scheduler.shutdown()


async def test_cancelling_the_request_sets_the_flag_of_its_job():
    scheduler = Scheduler()
    started, flags = threading.Event(), []

    def job(cancel: threading.Event) -> None:
        flags.append(cancel)
        started.set()
        cancel.wait(timeout=30)

    task = asyncio.ensure_future(scheduler.run_latest("doc", 0, job))
    await asyncio.get_running_loop().run_in_executor(None, started.wait, 30)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert flags[0].is_set()
    scheduler.shutdown()
