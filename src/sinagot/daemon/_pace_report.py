"""What the metrics say of the pace: each server's (back-pressure), each dataset's polls."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from ..connectors import PaceView
from ._datasets import DatasetStatus

__all__ = ["pace_families"]


def pace_families(
    servers: Sequence[PaceView], datasets: Sequence[DatasetStatus]
) -> Iterator[Metric]:
    """The metric families of the servers' paces and of the datasets' poll intervals."""
    pace = GaugeMetricFamily(
        "sinagot_server_pace",
        "How much back-pressure slows the polls of each server (1: its normal pace).",
        labels=["server"],
    )
    reason = GaugeMetricFamily(
        "sinagot_server_pace_reason",
        "Why the server's pace is what it is: the kind of its last trouble (1 for the current one).",
        labels=["server", "reason"],
    )
    hold = GaugeMetricFamily(
        "sinagot_server_hold_seconds",
        "Seconds left of a hold the server asked for with Retry-After.",
        labels=["server"],
    )
    retries = GaugeMetricFamily(
        "sinagot_server_retry_attempts",
        "Tries of one request the server's pace allows now (the first and its retries).",
        labels=["server"],
    )
    transfers = GaugeMetricFamily(
        "sinagot_server_transfers_allowed",
        "Requests allowed in flight at once while the server is slowed (0: no pace limit).",
        labels=["server"],
    )
    troubles = CounterMetricFamily(
        "sinagot_server_troubles",
        "Signs of a struggling server since the daemon started, by kind.",
        labels=["server", "kind"],
    )
    for view in servers:
        pace.add_metric([view.server], view.poll_factor)
        reason.add_metric([view.server, view.cause], 1)
        hold.add_metric([view.server], view.hold)
        retries.add_metric([view.server], view.retry_attempts)
        transfers.add_metric([view.server], view.transfers or 0)
        for kind, count in sorted(view.troubles.items()):
            troubles.add_metric([view.server, kind], count)
    interval = GaugeMetricFamily(
        "sinagot_dataset_poll_interval_seconds",
        "Seconds from the last listing of the dataset to the next (adaptive polling).",
        labels=["dataset"],
    )
    for dataset in datasets:
        if dataset.poll_interval is not None:
            interval.add_metric([dataset.name], dataset.poll_interval)
    yield from (pace, reason, hold, retries, transfers, troubles, interval)
