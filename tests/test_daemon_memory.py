"""Memory the daemon freed goes back to the system (glibc keeps it otherwise)."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from sinagot.daemon.internals import malloc_trim, trim_free_memory


def _rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS in /proc/self/status")


def test_memory_freed_in_a_thread_is_given_back() -> None:
    if malloc_trim() is None:
        pytest.skip("no malloc_trim in this C library (not glibc)")
    figures: dict[str, float] = {}

    def churn() -> None:
        # 1 KiB blocks (under malloc's mmap threshold) in this thread's arena; the last
        # one kept alive pins the arena's top, so freeing the rest returns nothing by itself.
        blocks = [bytearray(1024) for _ in range(120_000)]
        kept = blocks[-1]
        figures["allocated"] = _rss_mib()
        del blocks
        figures["freed"] = _rss_mib()
        figures["released"] = float(trim_free_memory())
        figures["trimmed"] = _rss_mib()
        assert len(kept) == 1024

    thread = threading.Thread(target=churn)
    thread.start()
    thread.join()
    assert figures["allocated"] - figures["freed"] < 40, figures  # glibc kept it
    assert figures["released"], figures
    assert figures["freed"] - figures["trimmed"] > 60, figures  # and trim gave it back
