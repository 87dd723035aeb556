"""Readable tables for the CLI clients."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

from ._states import JobState, shown_status

__all__ = ["format_job", "format_jobs", "format_status"]


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(str(cell)) for cell in column) for column in zip(header, *rows, strict=False)]
    lines = [
        "  ".join(str(c).ljust(w) for c, w in zip(line, widths, strict=True)).rstrip()
        for line in (header, *rows)
    ]
    return "\n".join(lines)


def _duration(seconds: float) -> str:
    seconds = int(max(seconds, 0))
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d {hours}h"
    if hours:
        return f"{hours}h {minutes:02d}m"
    if minutes:
        return f"{minutes}m {secs:02d}s"
    return f"{secs}s"


def _relative(stamp: float | None, now: float) -> str:
    if stamp is None:
        return "-"
    delta = stamp - now
    return f"in {_duration(delta)}" if delta > 0 else f"{_duration(-delta)} ago"


def _clock(stamp: float | None) -> str:
    return "-" if not stamp else time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(stamp))


def format_status(status: Mapping[str, Any], now: float | None = None) -> str:
    now = time.time() if now is None else now
    state = shown_status(status["paused"], status["stopping"])
    workers = status["workers"]
    head = (
        f"sinagot {status['version']}, pid {status['pid']}, up {_duration(status['uptime'])}, "
        f"{state} ({workers['busy']}/{workers['max']} workers busy, {status['queued']} queued)"
    )
    rows = []
    notes = []
    for dataset in status["datasets"]:
        rows.append(
            [
                dataset["name"],
                dataset["health"],
                _relative(dataset["last_poll"], now),
                _relative(dataset["next_poll"], now),
                str(dataset["sessions"]),
                *(str(dataset["jobs"].get(s, 0)) for s in JobState),
            ]
        )
        if dataset["last_error"]:
            notes.append(f"{dataset['name']}: {dataset['last_error']}")
    header = [
        "DATASET",
        "HEALTH",
        "LAST POLL",
        "NEXT POLL",
        "SESSIONS",
        *(s.upper() for s in JobState),
    ]
    parts = [head, "", _table(header, rows) if rows else "no datasets"]
    if notes:
        parts += ["", *notes]
    return "\n".join(parts)


def format_jobs(jobs: Sequence[Mapping[str, Any]]) -> str:
    if not jobs:
        return "no jobs"
    rows = [
        [
            str(job["id"]),
            job["dataset"],
            job["session"],
            job["state"],
            str(job["attempts"]),
            _clock(job["updated"]),
            (job["last_error"] or "")[:80],
        ]
        for job in jobs
    ]
    return _table(["ID", "DATASET", "SESSION", "STATE", "ATTEMPTS", "UPDATED", "LAST ERROR"], rows)


def format_job(job: Mapping[str, Any]) -> str:
    lines = [
        f"job {job['id']}: {job['dataset']}/{job['session']}",
        f"state:          {job['state']}",
        f"attempts:       {job['attempts']}",
        f"last modified:  {job['last_modified']}",
        f"created:        {_clock(job['created'])}",
        f"updated:        {_clock(job['updated'])}",
    ]
    if job["not_before"] and job["not_before"] > time.time():
        lines.append(f"next attempt:   {_clock(job['not_before'])}")
    if job["last_error"]:
        lines.append(f"last error:     {job['last_error']}")
    history = [[_clock(t["at"]), t["state"], t["detail"]] for t in job["history"]]
    lines += ["", _table(["AT", "STATE", "DETAIL"], history)]
    if job["log_tail"]:
        lines += ["", "log tail:", *(f"  {line}" for line in job["log_tail"])]
    return "\n".join(lines)
