"""Portals: how blocking code runs the coroutines of an async store, on the store's loop.

An async store's HTTP connections belong to one event loop. Blocking callers
(the library's engine) reach it through a portal: :class:`LoopThread`, a
private loop on a background thread (the library's own), or :class:`LoopPortal`,
a loop that runs elsewhere (the daemon's, while the engine works in a thread).
A caller interrupted while waiting cancels the work it was waiting for.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import contextvars
import threading
from collections.abc import Coroutine
from typing import Any, Protocol, TypeVar

__all__ = ["LoopPortal", "LoopThread", "Portal"]

T = TypeVar("T")

_CLOSE_TIMEOUT = 30.0


class Portal(Protocol):
    """Runs a coroutine on the loop that owns the store, and waits for its result."""

    def run(self, coro: Coroutine[Any, Any, T]) -> T: ...


def _wait(future: concurrent.futures.Future[T]) -> T:
    try:
        return future.result()
    except BaseException:
        # KeyboardInterrupt or the like in the waiting thread: stop the work too.
        future.cancel()
        raise


class LoopPortal:
    """Blocking calls, from other threads, into ``loop`` (which someone else runs).

    Each call runs as a task of ``loop`` in the calling thread's context (its
    context variables, such as the job a log line belongs to, come along).
    :meth:`cancel` cancels the calls under way and refuses new ones: the owner of
    the loop gave up on the work these threads do (a job timed out).
    """

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._lock = threading.Lock()
        self._calls: set[concurrent.futures.Future[Any]] = set()
        self._cancelled = False

    def _submit(self, coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        future: concurrent.futures.Future[T] = concurrent.futures.Future()
        context = contextvars.copy_context()

        def start() -> None:
            # The future stays pending until the task ends, so the waiter can cancel it.
            if future.cancelled():
                coro.close()
                return
            task = self._loop.create_task(coro, context=context)
            task.add_done_callback(lambda done: _settle(done, future))
            future.add_done_callback(
                lambda waited: (
                    self._loop.call_soon_threadsafe(task.cancel) if waited.cancelled() else None
                )
            )

        self._loop.call_soon_threadsafe(start)
        return future

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        with self._lock:
            if self._cancelled:
                coro.close()
                raise concurrent.futures.CancelledError("the work was cancelled by its owner")
            future = self._submit(coro)
            self._calls.add(future)
        try:
            return _wait(future)
        finally:
            with self._lock:
                self._calls.discard(future)

    def cancel(self) -> None:
        with self._lock:
            self._cancelled = True
            calls = list(self._calls)
        for future in calls:
            future.cancel()


def _settle(task: asyncio.Task[T], future: concurrent.futures.Future[T]) -> None:
    """Hand the outcome of ``task`` to the thread waiting on ``future``."""
    if task.cancelled():
        future.cancel()
        return
    if not future.set_running_or_notify_cancel():
        return  # the waiter cancelled it meanwhile
    if (error := task.exception()) is not None:
        future.set_exception(error)
    else:
        future.set_result(task.result())


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
        return _wait(self.submit(coro))

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
