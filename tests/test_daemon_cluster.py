"""The daemon's own Dask scheduler forgets finished work: a real LocalCluster of threads."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from dask.utils import key_split
from distributed import Client, LocalCluster

from daemon_support import wait_for
from sinagot.config import DaskSettings
from sinagot.daemon.internals import ClusterPool, forget_finished_spans, forget_span_metrics
from sinagot.daemon.internals import cluster as cluster_module
from sinagot.engine.internals import local_cluster_options


@pytest.fixture
def client() -> Iterator[Client]:
    with (
        LocalCluster(
            **local_cluster_options(
                DaskSettings(n_workers=1, threads_per_worker=2, processes=False)
            )
        ) as cluster,
        Client(cluster) as connected,
    ):
        yield connected


def _spans(client: Client) -> Any:
    return client.cluster.scheduler.extensions["spans"]  # type: ignore[union-attr]


# The threads of a LocalCluster(processes=False) share the test's module globals.
_RELEASE = threading.Event()


def _wait_for_release() -> bool:
    return _RELEASE.wait(30)


def _span_metrics(worker: Any) -> list[tuple[str, ...]]:
    return [
        name
        for totals in (worker.digests_total, worker.digests_max)
        for name in totals
        if isinstance(name, tuple) and name[0] == "execute"
    ]


def _square(value: int) -> int:
    return value * value


def _one_job(client: Client, number: int) -> None:
    """One computation on an idle cluster, as a daemon job is, finished and forgotten."""
    future = client.submit(_square, number, key=f"sinagot-job{number}-step", pure=False)
    assert future.result(timeout=30) == number * number
    del future
    wait_for(
        lambda: client.run_on_scheduler(_task_count) == 0,
        30,
        "the scheduler forgetting the job's tasks",
    )


def _task_count(dask_scheduler: Any) -> int:
    return len(dask_scheduler.tasks)


def test_finished_spans_are_forgotten_and_the_cluster_keeps_working(
    client: Client, caplog: pytest.LogCaptureFixture
) -> None:
    for number in range(4):
        _one_job(client, number)
    # Without tidying, each job leaves a span (and its task group) behind for good.
    assert len(_spans(client).spans) == 4

    # Once the worker's heartbeats (every 0.5 s here) reported on them.
    time.sleep(1.5)
    assert client.run_on_scheduler(forget_finished_spans, 1.0) == 4
    spans = _spans(client)
    assert spans.spans == {} and spans.root_spans == []
    assert not spans.spans_search_by_name and not spans.spans_search_by_tag

    # The worker's running totals name each span too.
    (worker,) = client.cluster.workers.values()  # type: ignore[union-attr]
    before = _span_metrics(worker)
    assert len({name[1] for name in before}) == 4
    assert list(client.run(forget_span_metrics).values()) == [len(before)]
    assert _span_metrics(worker) == []

    # New work gets a new span, and the worker's next heartbeats find theirs.
    _one_job(client, 7)
    time.sleep(1.5)
    assert len(_spans(client).spans) == 1
    assert len(client.cluster.scheduler.workers) == 1  # type: ignore[union-attr]
    assert not [record for record in caplog.records if record.levelno >= logging.ERROR]


def test_spans_still_running_or_recent_are_kept(client: Client) -> None:
    _one_job(client, 1)
    assert client.run_on_scheduler(forget_finished_spans, 3600.0) == 0
    running = client.submit(_wait_for_release, key="sinagot-slow-step", pure=False)
    wait_for(lambda: any(client.processing().values()), 30, "the task running")
    time.sleep(1.5)
    assert client.run_on_scheduler(forget_finished_spans, 1.0) == 1  # the finished one only
    _RELEASE.set()
    assert running.result(timeout=30) is True
    assert len(_spans(client).spans) == 1


def test_a_lease_tidies_the_daemons_own_cluster_only(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cluster_module, "TIDY_INTERVAL", 0.0)
    monkeypatch.setattr(cluster_module, "SPAN_RETENTION", 1.0)
    pool = ClusterPool()
    own = pool.lease(DaskSettings(n_workers=1, threads_per_worker=1, processes=False))
    try:
        with own.using() as client:
            pass
        for number in range(3):
            _one_job(client, number)
        time.sleep(1.5)
        assert key_split.cache_info().currsize > 0
        own.tidy()
        assert _spans(client).spans == {}
        assert key_split.cache_info().currsize == 0
        (worker,) = client.cluster.workers.values()
        assert _span_metrics(worker) == []

        # A scheduler the daemon only connects to is someone else's: left as it is.
        remote = pool.lease(DaskSettings(address=client.scheduler.address))
        try:
            with remote.using() as remote_client:
                _one_job(remote_client, 7)
            time.sleep(1.5)
            remote.tidy()
            assert len(_spans(client).spans) == 1
        finally:
            remote.release()
    finally:
        own.release()


def test_an_old_cluster_is_replaced_and_closed_once_its_jobs_end(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Its TLS certificate would expire one day: a daemon never keeps a cluster for good.
    pool = ClusterPool()
    lease = pool.lease(DaskSettings(n_workers=1, threads_per_worker=1, processes=False))
    try:
        with lease.using() as first:
            monkeypatch.setattr(cluster_module, "MAX_CLUSTER_AGE", 0.0)
            with lease.using() as second:
                assert second is not first
                # The job still running on the old cluster finishes there.
                assert first.submit(_square, 3, pure=False).result(timeout=30) == 9
                assert second.submit(_square, 4, pure=False).result(timeout=30) == 16
            assert first.status == "running"
        assert first.status == "closed"
        monkeypatch.setattr(cluster_module, "MAX_CLUSTER_AGE", 3600.0)
        with lease.using() as third:
            assert third is second
    finally:
        lease.release()
    assert second.status == "closed"
