"""``sinagot cache ls | verify | gc CONFIG``."""

from __future__ import annotations

import argparse
import re
import sys
import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..cache import Cache

__all__ = ["human_bytes", "parse_size", "register"]

_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]?)(?:i?B)?\s*$", re.IGNORECASE)


def parse_size(text: str) -> int:
    """Bytes from ``500M``, ``2G``, ``1.5GiB`` or a plain byte count (binary units)."""
    match = _SIZE.match(text)
    if match is None:
        raise argparse.ArgumentTypeError(
            f"size {text!r} is not understood: use a number with an optional K, M, G or T, e.g. 500M"
        )
    return int(float(match.group(1)) * _UNITS[match.group(2).upper()])


def human_bytes(size: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024:
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} TiB"


def _age(seconds: float) -> str:
    for unit, length in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= length:
            return f"{seconds / length:.0f}{unit}"
    return f"{max(seconds, 0):.0f}s"


def _cache(args: argparse.Namespace) -> Cache:
    from ..cache import Cache
    from ..config import load_store_settings

    return Cache.from_settings(load_store_settings(args.config).cache)


def _ls(args: argparse.Namespace) -> int:
    cache = _cache(args)
    entries = cache.entries()
    now = time.time()
    out = [
        f"cache {cache.root}: {len(entries)} entries, {human_bytes(sum(e.size for e in entries))}"
    ]
    for e in entries:
        fetched = "incomplete" if e.fetched is None else f"fetched {_age(now - e.fetched)} ago"
        out.append(
            f"{e.name}  {e.files} files  {human_bytes(e.size)}  {fetched}, used {_age(now - e.last_used)} ago"
        )
    sys.stdout.write("\n".join(out) + "\n")
    return 0


def _verify(args: argparse.Namespace) -> int:
    report = _cache(args).verify()
    out = [
        f"verified {report.checked_files} files in {report.checked_entries} entries: "
        f"{len(report.problems)} corrupt or missing"
    ]
    for p in report.problems:
        where = f"moved to {p.quarantined}" if p.quarantined else "missing"
        actual = p.actual or "-"
        out.append(f"CORRUPT {p.entry} {p.file}: expected {p.expected}, found {actual} ({where})")
    out.extend(f"SKIPPED {name}: being downloaded" for name in report.busy)
    sys.stdout.write("\n".join(out) + "\n")
    return 1 if report.problems else 0


def _gc(args: argparse.Namespace) -> int:
    report = _cache(args).gc(args.max_size)
    out = [
        f"cache size {human_bytes(report.size_before)} -> {human_bytes(report.size_after)} "
        f"(limit {human_bytes(args.max_size)}); evicted {len(report.evicted)} entries, "
        f"removed {report.removed_temporary} temporary folders"
    ]
    out.extend(f"EVICTED {e.name} ({human_bytes(e.size)})" for e in report.evicted)
    out.extend(f"KEPT {e.name}: locked or in use" for e in report.busy)
    sys.stdout.write("\n".join(out) + "\n")
    return 0


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser("cache", help="inspect and clean the local download cache")
    commands = parser.add_subparsers(dest="cache_command", metavar="ACTION")
    commands.required = True
    ls = commands.add_parser("ls", help="list cached entries with sizes and ages")
    ls.set_defaults(handler=_ls)
    verify = commands.add_parser(
        "verify", help="re-hash every cached file; move corrupt ones to quarantine (exit 1 if any)"
    )
    verify.set_defaults(handler=_verify)
    gc = commands.add_parser(
        "gc", help="remove dead downloads, then evict least-recently-used entries above a size"
    )
    gc.add_argument(
        "--max-size", type=parse_size, required=True, metavar="SIZE", help="e.g. 500M, 2G"
    )
    gc.set_defaults(handler=_gc)
    for sub in (ls, verify, gc):
        sub.add_argument("config", metavar="CONFIG", help="path of the sinagot.toml")
