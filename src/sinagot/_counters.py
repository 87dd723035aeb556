"""Process-wide counts of what the connectors and the cache did, for the daemon's metrics.

The XNAT client and the cache only add to :data:`COUNTERS`; whoever exposes the
counts reads :meth:`Counters.snapshot`. Plain numbers behind a lock, so the layers
that count depend on no metrics library and pay a dictionary update per event
(per chunk of a download, not per byte).
"""

from __future__ import annotations

import threading
from collections import Counter
from dataclasses import dataclass

__all__ = ["COUNTERS", "Counters", "CountsSnapshot"]


@dataclass(frozen=True, slots=True)
class CountsSnapshot:
    """The counts at one moment, by server URL where they concern a server."""

    requests: dict[str, int]
    request_errors: dict[str, int]
    downloaded: dict[str, int]
    uploaded: dict[str, int]
    cache_hits: int
    cache_misses: int


class Counters:
    """Monotonic counts since the process started (see the module docstring)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._requests: Counter[str] = Counter()
        self._errors: Counter[str] = Counter()
        self._down: Counter[str] = Counter()
        self._up: Counter[str] = Counter()
        self._hits = 0
        self._misses = 0

    def request(self, server: str, *, failed: bool) -> None:
        """One HTTP request sent to ``server``; ``failed``: no answer, or an error status."""
        with self._lock:
            self._requests[server] += 1
            if failed:
                self._errors[server] += 1

    def downloaded(self, server: str, size: int) -> None:
        with self._lock:
            self._down[server] += size

    def uploaded(self, server: str, size: int) -> None:
        with self._lock:
            self._up[server] += size

    def cache_lookup(self, *, hit: bool) -> None:
        """An entry asked of the cache: already there (hit) or to download (miss)."""
        with self._lock:
            if hit:
                self._hits += 1
            else:
                self._misses += 1

    def snapshot(self) -> CountsSnapshot:
        with self._lock:
            return CountsSnapshot(
                requests=dict(self._requests),
                request_errors=dict(self._errors),
                downloaded=dict(self._down),
                uploaded=dict(self._up),
                cache_hits=self._hits,
                cache_misses=self._misses,
            )


COUNTERS = Counters()
