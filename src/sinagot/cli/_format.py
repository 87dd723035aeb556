"""Readable tables for the CLI clients."""

from __future__ import annotations

import sys
import time
from collections.abc import Mapping, Sequence
from typing import Any

from ..daemon import JobState, shown_status

__all__ = ["format_job", "format_jobs", "format_plan", "format_status"]

ELLIPSIS = "\u2026"
# Widest a name column gets in a table (dataset names, session labels), and narrowest
# when the terminal is narrow.
NAME_WIDTH = 28
MIN_NAME_WIDTH = 12
# The narrowest LAST ERROR column kept when the terminal is narrow: a line wraps instead.
MIN_ERROR_WIDTH = 24


def _middle(text: str, width: int = NAME_WIDTH) -> str:
    """``text`` cut in its middle to ``width`` characters: labels differ at both ends
    (``SUBJ01_..._run-2``), so both stay visible."""
    if len(text) <= width:
        return text
    head = (width - 1) // 2 + (width - 1) % 2
    return f"{text[:head]}{ELLIPSIS}{text[len(text) - (width - 1 - head) :]}"


def _end(text: str, width: int) -> str:
    """``text`` on one line, cut at ``width`` characters (a message reads from its start)."""
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + ELLIPSIS


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
                _middle(dataset["name"]),
                dataset["health"],
                _relative(dataset["last_poll"], now),
                _relative(dataset["next_poll"], now),
                str(dataset["sessions"]),
                *(str(dataset["jobs"].get(s, 0)) for s in JobState),
            ]
        )
        if dataset["last_error"]:
            notes.append(f"{dataset['name']}: {dataset['last_error']}")
        notes += _pipeline_lines(dataset["name"], dataset.get("pipeline") or {}, "stale")
    notes += _pace_lines(status.get("servers", ()))
    header = [
        "DATASET",
        "HEALTH",
        "LAST POLL",
        "NEXT POLL",
        "SESSIONS",
        *(s.upper() for s in JobState),
    ]
    if status.get("metrics_url"):
        head += f"\nmetrics: {status['metrics_url']}"
    parts = [head, "", _table(header, rows) if rows else "no datasets"]
    if notes:
        parts += ["", *notes]
    return "\n".join(parts)


def _pace_lines(servers: Sequence[Mapping[str, Any]]) -> list[str]:
    """One line per server that back-pressure slows now."""
    lines = []
    for server in servers:
        if not server["level"]:
            continue
        hold = f", on hold {server['hold']:.0f} s more" if server["hold"] >= 0.5 else ""
        lines.append(
            f"{server['server']}: slowed {server['poll_factor']:g}x ({server['reason']}{hold}):"
            f" {server['transfers']} request(s) at once, {server['retry_attempts']} tries each"
        )
    return lines


def _steps(counts: Mapping[str, int]) -> str:
    return ", ".join(f"{unit} ({count})" for unit, count in counts.items())


def _pipeline_lines(name: str, report: Mapping[str, Any], what: str) -> list[str]:
    """The lines that tell how a dataset's pipeline stands (see ``PipelineReport``)."""
    lines = []
    if report.get("sessions"):
        lines.append(
            f"{name}: {report['sessions']} session(s) {what}, for the steps that changed:"
            f" {_steps(report['steps'])}"
        )
    if report.get("removed"):
        lines.append(
            f"{name}: no longer in the pipeline, their derivatives stay in place:"
            f" {_steps(report['removed'])}"
        )
    if report.get("broken"):
        lines.append(
            f"{name}: scripts that cannot be loaded now (see the log): {', '.join(report['broken'])}"
        )
    return lines


def format_plan(body: Mapping[str, Any]) -> str:
    """What ``sinagot plan`` found: per dataset, the sessions and steps to process again."""
    lines = []
    for name, report in body["datasets"].items():
        found = _pipeline_lines(name, report, "to process again")
        lines += found or [f"{name}: up to date with its pipeline, nothing to process again"]
    return "\n".join(lines) or "no datasets"


def format_jobs(jobs: Sequence[Mapping[str, Any]], width: int | None = None) -> str:
    """The jobs as a table, fitted to ``width`` columns when given (a terminal's): long
    names and errors cut with an ellipsis (``sinagot jobs ID`` and ``--json`` show them
    whole). Without a width nothing is cut, for grep and friends."""
    if not jobs:
        return "no jobs"
    header = ["ID", "DATASET", "SESSION", "STATE", "ATTEMPTS", "UPDATED", "LAST ERROR"]
    fixed = [
        [str(job["id"]), job["state"], str(job["attempts"]), _clock(job["updated"])] for job in jobs
    ]
    if width is None:
        width = names = sys.maxsize
    else:
        # Column widths plus two spaces after each: what the names may take, then the error.
        others = sum(
            max(len(h), *(len(row[i]) for row in fixed)) + 2
            for i, h in enumerate(("ID", "STATE", "ATTEMPTS", "UPDATED"))
        )
        names = max(MIN_NAME_WIDTH, min(NAME_WIDTH, (width - others - MIN_ERROR_WIDTH) // 2 - 2))
    rows = [
        [
            ids[0],
            _middle(job["dataset"], names),
            _middle(job["session"], names),
            *ids[1:],
            job["last_error"] or "",
        ]
        for job, ids in zip(jobs, fixed, strict=True)
    ]
    columns = list(zip(header, *rows, strict=True))[:-1]
    before_error = sum(max(len(cell) for cell in column) + 2 for column in columns)
    room = max(width - before_error, MIN_ERROR_WIDTH)
    for row in rows:
        row[-1] = _end(row[-1], room)
    return _table(header, rows)


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
