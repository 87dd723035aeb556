"""The daemon's state in the Prometheus text exposition format (0.0.4), for ``/v1/metrics``."""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import TYPE_CHECKING

from .._version import __version__
from ._states import DatasetHealth

if TYPE_CHECKING:
    from ._service import Daemon

__all__ = ["render_metrics"]


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def _family(name: str, kind: str, doc: str, samples: Iterable[tuple[dict[str, str], float]]) -> str:
    lines = [f"# HELP {name} {doc}", f"# TYPE {name} {kind}"]
    for labels, value in samples:
        rendered = ",".join(f'{k}="{_label(v)}"' for k, v in labels.items())
        number = _number(value)
        lines.append(f"{name}{{{rendered}}} {number}" if rendered else f"{name} {number}")
    return "\n".join(lines)


async def render_metrics(daemon: Daemon) -> str:
    """The daemon's state in the Prometheus text exposition format (0.0.4)."""
    datasets = await daemon.dataset_statuses()
    polls = daemon.datasets_polls()
    families = [
        _family(
            "sinagot_info",
            "gauge",
            "Version of the running daemon.",
            [({"version": __version__}, 1)],
        ),
        _family(
            "sinagot_uptime_seconds",
            "gauge",
            "Seconds since the daemon started.",
            [({}, time.time() - daemon.started)],
        ),
        _family(
            "sinagot_paused", "gauge", "1 while new jobs are paused.", [({}, float(daemon.paused))]
        ),
        _family(
            "sinagot_jobs_running", "gauge", "Jobs being processed now.", [({}, daemon.busy_jobs)]
        ),
        _family(
            "sinagot_jobs_queued",
            "gauge",
            "Jobs claimed and waiting for a worker.",
            [({}, daemon.queued_jobs)],
        ),
        _family(
            "sinagot_jobs",
            "gauge",
            "Jobs in the journal by dataset and state.",
            [
                ({"dataset": d.name, "state": s}, n)
                for d in datasets
                for s, n in sorted(d.jobs.items())
            ],
        ),
        _family(
            "sinagot_dataset_up",
            "gauge",
            "1 when the last listing of the dataset succeeded.",
            [({"dataset": d.name}, float(d.health is DatasetHealth.OK)) for d in datasets],
        ),
        _family(
            "sinagot_dataset_consecutive_failures",
            "gauge",
            "Listing failures in a row.",
            [({"dataset": d.name}, d.failures) for d in datasets],
        ),
        _family(
            "sinagot_dataset_last_poll_timestamp_seconds",
            "gauge",
            "When the last listing succeeded.",
            [({"dataset": d.name}, d.last_poll) for d in datasets if d.last_poll is not None],
        ),
        _family(
            "sinagot_polls_total",
            "counter",
            "Listings by outcome since the daemon started.",
            [
                ({"dataset": name, "outcome": o}, n)
                for name, counts in polls.items()
                for o, n in sorted(counts.items())
            ],
        ),
        _family(
            "sinagot_job_attempts_total",
            "counter",
            "Finished job attempts by outcome.",
            [
                ({"dataset": ds, "outcome": str(o)}, n)
                for (ds, o), n in sorted(daemon.completed.items())
            ],
        ),
    ]
    return "\n".join(families) + "\n"
