"""Who runs model work, and when: one worker thread, latest request per document wins.

The event loop never runs the model, so it keeps answering ``didChange`` and other
requests during inference.  Each job gets a cancel flag that the generation loop
checks every token; a newer request for the same document sets the older one's flag.
"""

from __future__ import annotations

import asyncio
import itertools
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, TypeVar

T = TypeVar("T")


class Superseded(Exception):
    """A newer request for the same document replaced this one."""


class Scheduler:
    def __init__(self) -> None:
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="infill-model")
        self._sequence = itertools.count(1)
        self._latest: dict[str, tuple[int, threading.Event]] = {}

    async def run_latest(self, key: str, debounce_ms: int, job: Callable[[threading.Event], T]) -> T:
        """Run ``job(cancel)`` on the worker unless a newer call with ``key`` supersedes it.

        Raises Superseded when replaced before or during the run, and re-raises
        CancelledError (after setting the flag) when the LSP request is cancelled.
        """
        number = next(self._sequence)
        cancel = threading.Event()
        previous = self._latest.get(key)
        if previous is not None:
            previous[1].set()
        self._latest[key] = (number, cancel)
        try:
            if debounce_ms > 0:
                await asyncio.sleep(debounce_ms / 1000)
            if cancel.is_set():
                raise Superseded()
            result = await asyncio.get_running_loop().run_in_executor(self._worker, job, cancel)
            if cancel.is_set():
                raise Superseded()
            return result
        except asyncio.CancelledError:
            cancel.set()
            raise
        finally:
            if self._latest.get(key, (None,))[0] == number:
                del self._latest[key]

    async def run(self, job: Callable[[], T]) -> T:
        """Run ``job`` on the model worker (loading, unloading) in order with generations."""
        return await asyncio.get_running_loop().run_in_executor(self._worker, job)

    def cancel_all(self) -> None:
        for _number, cancel in self._latest.values():
            cancel.set()

    def shutdown(self) -> None:
        self.cancel_all()
        self._worker.shutdown(wait=False, cancel_futures=True)
