"""``sinagot`` with a probe: the daemon's bounded structures measured from inside its process.

Run as ``python bench/_probe.py OUT.json daemon CONFIG``: the ``sinagot`` command runs as
usual, and a probe thread answers each request (the file ``OUT.json.ask`` appearing)
by writing ``OUT.json`` (atomically) with the sizes of what a long-running daemon
keeps in memory, then removing the request:

- the XNAT store's session index (listings, stamps, markers, sessions listed);
- each served dataset's last listing and ignored labels;
- the Dask scheduler's and workers' bounded histories (logs, transitions, events,
  task groups and prefixes, spans, computations), Dask's memo of key names;
- SQLite's memory (the journal and the checksum cache; the whole process's);
- Python objects by type (the largest counts), and with ``SINAGOT_PROBE_TRACEMALLOC=1``
  the allocation sites that grew most since the first sample.

A bench tool, not part of the product: it reads private attributes by name and
skips what it does not find.
"""

from __future__ import annotations

import collections
import ctypes
import ctypes.util
import gc
import json
import os
import reprlib
import sys
import threading
import time
import tracemalloc
from pathlib import Path
from typing import Any

_TRACE = os.environ.get("SINAGOT_PROBE_TRACEMALLOC") == "1"


def _sqlite_memory() -> dict[str, int]:
    name = ctypes.util.find_library("sqlite3")
    try:
        lib = ctypes.CDLL(name or "libsqlite3.so.0")
    except OSError:
        return {}
    lib.sqlite3_memory_used.restype = ctypes.c_int64
    lib.sqlite3_memory_highwater.restype = ctypes.c_int64
    lib.sqlite3_memory_highwater.argtypes = [ctypes.c_int]
    return {
        "used_bytes": int(lib.sqlite3_memory_used()),
        "highwater_bytes": int(lib.sqlite3_memory_highwater(0)),
    }


class _Mallinfo2(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_size_t)
        for name in (
            "arena",
            "ordblks",
            "smblks",
            "hblks",
            "hblkhd",
            "usmblks",
            "fsmblks",
            "uordblks",
            "fordblks",
            "keepcost",
        )
    ]


def _malloc() -> dict[str, int]:
    """glibc's heap: bytes in use by malloc's callers, and free but kept (fragmentation)."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.mallinfo2.restype = _Mallinfo2
    except (OSError, AttributeError):
        return {}
    info = libc.mallinfo2()
    return {
        "in_use_bytes": int(info.uordblks + info.hblkhd),
        "free_kept_bytes": int(info.fordblks),
        "pymalloc_blocks": sys.getallocatedblocks(),
    }


def _largest(objects: list[Any], count: int = 8) -> list[tuple[str, int]]:
    """The largest dicts, lists, sets and deques, each named by its type and a sample item."""
    sized = []
    for obj in objects:
        if type(obj) in (dict, list, set, collections.deque, collections.OrderedDict):
            size = len(obj)
            if size >= 100:
                sized.append((size, obj))
    sized.sort(key=lambda item: -item[0])
    found = []
    for size, obj in sized[:count]:
        sample = next(iter(obj), None)
        found.append((f"{type(obj).__name__} of {reprlib.repr(sample)}", size))
    return found


def _length(value: Any) -> int | None:
    try:
        return len(value)
    except TypeError:
        return None


def _containers(obj: Any) -> dict[str, int]:
    """The length of each non-empty container attribute of ``obj`` (a Dask server's state)."""
    found: dict[str, int] = {}
    names = list(getattr(obj, "__dict__", {}))
    for kind in type(obj).__mro__:
        slots = getattr(kind, "__slots__", ())
        names.extend([slots] if isinstance(slots, str) else slots)
    for name in dict.fromkeys(names):
        value = getattr(obj, name, None)
        if isinstance(value, str | bytes) or not hasattr(value, "__len__"):
            continue
        size = _length(value)
        if size:
            found[name] = size
    return found


def _sizes(objects: list[Any]) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for obj in objects:
        kind = type(obj)
        name = f"{kind.__module__}.{kind.__qualname__}"
        if name == "sinagot.connectors._xnat_sessions.SessionIndex":
            found.setdefault("xnat_session_index", []).append(
                {
                    a: _length(getattr(obj, a, None))
                    for a in ("listings", "stamps", "sessions", "markers")
                }
            )
        elif name == "sinagot.daemon._datasets.ServedDataset":
            # Labels not matching id_pattern: on the dataset, or on its id filter.
            ignored = getattr(getattr(obj, "ids", obj), "ignored", None)
            found.setdefault("served_datasets", []).append(
                {"listed": _length(obj.compared), "ignored": _length(ignored)}
            )
        elif name == "distributed.scheduler.Scheduler":
            found.setdefault("dask_scheduler", []).append(_containers(obj))
            spans = obj.extensions.get("spans")
            if spans is not None:
                found.setdefault("dask_spans", []).append(_containers(spans))
        elif name == "distributed.worker.Worker":
            found.setdefault("dask_workers", []).append(
                _containers(obj) | {f"state.{k}": v for k, v in _containers(obj.state).items()}
            )
    dask_utils = sys.modules.get("dask.utils")
    if dask_utils is not None:
        found["dask_key_split_memo"] = dask_utils.key_split.cache_info().currsize
    return found


class Probe:
    def __init__(self, out: Path) -> None:
        self.out = out
        self.ask = Path(f"{out}.ask")
        self.first: tracemalloc.Snapshot | None = None
        self.samples = 0

    def sample(self) -> dict[str, Any]:
        start = time.perf_counter()
        gc.collect()
        objects = gc.get_objects()
        by_type = collections.Counter(type(o).__qualname__ for o in objects)
        document: dict[str, Any] = {
            "at": time.time(),
            "gc_objects": len(objects),
            "top_types": by_type.most_common(25),
            "sqlite": _sqlite_memory(),
            "malloc": _malloc(),
            "largest": _largest(objects),
            **_sizes(objects),
        }
        del objects
        if _TRACE:
            snapshot = tracemalloc.take_snapshot().filter_traces(
                [tracemalloc.Filter(False, tracemalloc.__file__)]
            )
            traced, _ = tracemalloc.get_traced_memory()
            document["traced_bytes"] = traced
            if self.first is None:
                self.first = snapshot
            else:
                stats = snapshot.compare_to(self.first, "lineno")
                document["grown"] = [
                    {
                        "size_diff": s.size_diff,
                        "count_diff": s.count_diff,
                        "where": [f"{f.filename}:{f.lineno}" for f in s.traceback[:6]],
                    }
                    for s in stats[:15]
                ]
        document["probe_seconds"] = time.perf_counter() - start
        self.samples += 1
        return document

    def loop(self) -> None:
        while True:
            if self.ask.exists():
                try:
                    document = self.sample()
                except Exception as exc:  # the probe never takes the daemon down
                    document = {"error": f"{type(exc).__name__}: {exc}"}
                temporary = Path(f"{self.out}.tmp")
                temporary.write_text(json.dumps(document))
                temporary.replace(self.out)
                self.ask.unlink(missing_ok=True)
            time.sleep(0.1)


def main() -> None:
    out = Path(sys.argv[1])
    if _TRACE:
        tracemalloc.start(1)
    threading.Thread(target=Probe(out).loop, name="sinagot-bench-probe", daemon=True).start()
    from sinagot.cli import main as sinagot_main

    sys.exit(sinagot_main(sys.argv[2:]))


if __name__ == "__main__":
    main()
