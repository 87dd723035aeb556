"""A private event loop on a background thread, so one store serves sync and async callers.

The aiohttp session of a store belongs to this loop. Synchronous callers
(the Dataset engine) block on :meth:`LoopThread.run`; coroutines of another
loop (the daemon) await :meth:`LoopThread.run_async`, which never blocks
theirs. Cancelling the caller cancels the work on the store's loop.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

__all__ = ["LoopThread"]

T = TypeVar("T")

_CLOSE_TIMEOUT = 30.0


class LoopThread:
    """Owns one event loop running in one daemon thread, started on first use."""

    def __init__(self, name: str) -> None:
        self._name = name
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    def _ensure(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._loop is None:
                loop = asyncio.new_event_loop()
                thread = threading.Thread(target=loop.run_forever, name=self._name, daemon=True)
                thread.start()
                self._loop, self._thread = loop, thread
            return self._loop

    def submit(self, coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        loop = self._ensure()
        if threading.current_thread() is self._thread:
            coro.close()
            raise RuntimeError(
                f"{self._name}: a blocking store call was made from the store's own loop"
            )
        return asyncio.run_coroutine_threadsafe(coro, loop)

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run ``coro`` on the store's loop and wait for it (from any other thread)."""
        future = self.submit(coro)
        try:
            return future.result()
        except BaseException:
            # KeyboardInterrupt or the like in the waiting thread: stop the work too.
            future.cancel()
            raise

    async def run_async(self, coro: Coroutine[Any, Any, T]) -> T:
        """Await ``coro`` running on the store's loop, from a coroutine of another loop."""
        return await asyncio.wrap_future(self.submit(coro))

    def close(self, final: Coroutine[Any, Any, None] | None = None) -> None:
        """Run ``final`` (e.g. closing HTTP sessions), cancel leftovers, stop the thread."""
        with self._lock:
            loop, thread = self._loop, self._thread
            self._loop = self._thread = None
        if loop is None or thread is None:
            if final is not None:
                final.close()
            return
        if threading.current_thread() is thread:
            raise RuntimeError(f"{self._name}: the store cannot be closed from its own loop")
        if final is not None:
            with contextlib.suppress(TimeoutError, concurrent.futures.CancelledError):
                asyncio.run_coroutine_threadsafe(final, loop).result(_CLOSE_TIMEOUT)
        asyncio.run_coroutine_threadsafe(_cancel_leftovers(), loop).result(_CLOSE_TIMEOUT)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(_CLOSE_TIMEOUT)
        if not thread.is_alive():
            loop.close()


async def _cancel_leftovers() -> None:
    current = asyncio.current_task()
    tasks = [t for t in asyncio.all_tasks() if t is not current]
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
