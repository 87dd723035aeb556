"""Nobody without the cluster's credentials runs code through a Dask cluster Sinagot starts.

Each test attacks every TCP port the cluster opened from another process
(``dask_attacker.py``), as a local user would; a control attack on a cluster
without security shows that the attack itself works.
"""

from __future__ import annotations

import os
import urllib.error
import urllib.request
from contextlib import ExitStack
from pathlib import Path

import pytest
from distributed import LocalCluster

from daemon_support import listening
from dask_attacker import assert_refused, attack
from sinagot.config import DaskSettings
from sinagot.engine.internals import open_client


def http_answers(port: int, path: str) -> int | None:
    """The HTTP status ``path`` gets on ``port``, or None if it does not speak HTTP."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=3) as response:
            status: int = response.status
            return status
    except urllib.error.HTTPError as exc:
        return exc.code
    except (urllib.error.URLError, OSError, ValueError):
        return None


def _double(value: int) -> int:
    return 2 * value


def test_the_attack_runs_code_on_a_cluster_without_security(tmp_path: Path) -> None:
    # The control: what every Dask cluster did before, plaintext TCP on loopback.
    marker = tmp_path / "planted"
    before = listening(os.getpid())
    with LocalCluster(
        n_workers=1,
        processes=False,
        protocol="tcp://",
        host="127.0.0.1",
        dashboard_address=None,
        worker_dashboard_address=None,
    ):
        outcome = attack({port for _, port in listening(os.getpid()) - before}, marker)
    assert marker.exists()
    assert "ran" in outcome.values()


@pytest.mark.parametrize("processes", [True, False], ids=["processes", "threads"])
def test_a_cluster_sinagot_starts_runs_no_strangers_code(tmp_path: Path, processes: bool) -> None:
    marker = tmp_path / "planted"
    before = listening(os.getpid())
    with ExitStack() as stack:
        client = open_client(DaskSettings(n_workers=1, processes=processes), stack)
        assert client.submit(_double, 21).result(timeout=60) == 42
        opened = listening(os.getpid()) - before
        assert {host for host, _ in opened} == {"127.0.0.1"}
        ports = {port for _, port in opened}
        outcome = attack(ports, marker)
        assert_refused(outcome, marker)
        # HTTP: a health check, nothing else (no logs, call stacks or task names).
        http = {port: http_answers(port, "/health") for port in ports}
        assert 200 in http.values()
        if not processes:
            # Threads talk in-process: nothing listens but HTTP servers.
            assert set(http.values()) == {200}
        for port in (port for port, status in http.items() if status == 200):
            assert http_answers(port, "/info/main/workers.html") == 404
            assert http_answers(port, "/json/identity.json") == 404
        # The cluster still works for its owner after the attack.
        assert client.submit(_double, 2, pure=False).result(timeout=60) == 4
