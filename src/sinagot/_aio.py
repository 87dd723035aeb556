"""Asyncio helpers of the cache and the connectors.

Blocking work in threads, without losing track of it when the awaiting task is
cancelled; and the first real error of a task group, raised alone.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine, Sequence
from typing import Any, TypeVar

__all__ = ["first_error", "run_to_completion", "settle", "start_in_thread", "together"]

T = TypeVar("T")


def start_in_thread(fn: Callable[..., T], *args: Any) -> asyncio.Future[T]:
    """Start ``fn`` in a thread now; await the result with :func:`settle`."""
    return asyncio.ensure_future(asyncio.to_thread(fn, *args))


async def settle(task: asyncio.Future[T], *, discard: Callable[[T], None] | None = None) -> T:
    """The result of a thread started by :func:`start_in_thread`, waited for even on cancellation.

    The thread may be writing to a descriptor that the caller closes in a
    ``finally``; closing it under a running write could let the number be
    reused by another file and receive bytes that are not its own. A result
    nobody will receive (e.g. a lock taken just as the caller was cancelled)
    is handed to ``discard`` so it is not leaked.
    """
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        await asyncio.wait([task])
        if discard is not None and not task.cancelled() and task.exception() is None:
            discard(task.result())
        raise


async def run_to_completion(
    fn: Callable[..., T], *args: Any, discard: Callable[[T], None] | None = None
) -> T:
    """Run ``fn`` in a thread; if the caller is cancelled, still wait for the thread (see :func:`settle`)."""
    return await settle(start_in_thread(fn, *args), discard=discard)


def first_error(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """The first real error of a task group (errors beat the cancellations they caused)."""
    leaves: list[BaseException] = []

    def walk(exc: BaseException) -> None:
        if isinstance(exc, BaseExceptionGroup):
            for inner in exc.exceptions:
                walk(inner)
        else:
            leaves.append(exc)

    walk(group)
    for leaf in leaves:
        if not isinstance(leaf, asyncio.CancelledError):
            return leaf
    return leaves[0]


async def together(coros: Sequence[Coroutine[Any, Any, T]]) -> list[T]:
    """Run ``coros`` as tasks of one group; the first failure cancels the rest and is raised."""
    try:
        async with asyncio.TaskGroup() as group:
            tasks = [group.create_task(coro) for coro in coros]
    except BaseExceptionGroup as errors:
        raise first_error(errors) from None
    return [task.result() for task in tasks]
