"""Small files served lately, kept in memory until the next write to the store.

Serving a small file otherwise costs a thread hop and a few index queries,
more than sending it; benchmarks of clients fetching thousands of small files
would then measure the emulator. Entries are valid for one
:attr:`Store.generation` only, so a write is never hidden by the memo.
"""

from __future__ import annotations

from dataclasses import dataclass

from ._records import FileEntry

__all__ = ["FileMemo", "MemoKey", "Memoized"]

_MAX_FILES = 10_000
_MAX_BYTES = 256 << 20

MemoKey = tuple[str | None, ...]


@dataclass(frozen=True, slots=True)
class Memoized:
    """A file, its bytes, and the projects whose access the request needed."""

    projects: frozenset[str]
    entry: FileEntry
    data: bytes


class FileMemo:
    """Bounded map of request targets to :class:`Memoized` files; use from one event loop."""

    def __init__(self) -> None:
        self._items: dict[MemoKey, Memoized] = {}
        self._bytes = 0
        self._generation = -1

    def _reset(self, generation: int) -> None:
        self._items.clear()
        self._bytes = 0
        self._generation = generation

    def get(self, key: MemoKey, generation: int) -> Memoized | None:
        if generation != self._generation:
            self._reset(generation)
            return None
        return self._items.get(key)

    def put(self, key: MemoKey, item: Memoized, generation: int) -> None:
        if generation != self._generation:
            # Read before a write that the memo has already seen, or after one it has not.
            if generation < self._generation:
                return
            self._reset(generation)
        if len(self._items) >= _MAX_FILES or self._bytes + len(item.data) > _MAX_BYTES:
            self._reset(generation)
        self._items[key] = item
        self._bytes += len(item.data)
