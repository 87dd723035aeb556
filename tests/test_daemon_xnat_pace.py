"""Back-pressure end to end: the real daemon against an emulator that answers 503 and 429
(with Retry-After): it slows down for that server, says so in its status and metrics,
and comes back to its pace step by step once the server is healthy."""

from __future__ import annotations

import subprocess
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from daemon_support import wait_for
from daemon_xnat_support import PROJECT, SINAGOT, XnatDaemon, add_session, write_project
from sinagot.testing import EmulatorServer, FaultRule

LISTING = r"/projects/LAB/experiments$"
# Small intervals, so that each phase takes seconds.
DAEMON = {
    "poll_interval": 0.5,
    "min_poll_interval": 0.5,
    "server_recovery": 4.0,
    "max_attempts": 4,
    "retry_backoff": 0.05,
    "metrics_address": "0",
}


def _listings(server: EmulatorServer) -> int:
    return sum(n for route, n in server.request_counts().items() if route.endswith("experiments"))


def _rate(server: EmulatorServer, seconds: float) -> float:
    """Project listings per second the server gets over the next ``seconds``."""
    before = _listings(server)
    time.sleep(seconds)
    return (_listings(server) - before) / seconds


def _pace(daemon: XnatDaemon) -> dict[str, Any]:
    status: dict[str, Any] = daemon.call("status")
    (server,) = status["servers"]
    pace: dict[str, Any] = server
    return pace


def _start(
    tmp_path: Path, factory: Callable[..., EmulatorServer], daemons: list[XnatDaemon]
) -> tuple[EmulatorServer, XnatDaemon]:
    server = factory()
    server.create_project(PROJECT)
    add_session(server, "REC-200101-A")
    config, _ = write_project(tmp_path, server.url, DAEMON)
    daemon = XnatDaemon(tmp_path, config)
    daemons.append(daemon)
    daemon.start()
    daemon.wait_settled({"REC-200101-A"}, timeout=60)
    return server, daemon


def test_a_struggling_server_gets_fewer_requests_and_the_pace_comes_back_step_by_step(
    tmp_path: Path,
    xnat_server_factory: Callable[..., EmulatorServer],
    daemons: list[XnatDaemon],
) -> None:
    server, daemon = _start(tmp_path, xnat_server_factory, daemons)
    assert _pace(daemon)["level"] == 0
    healthy = _rate(server, 3.0)
    assert healthy > 0

    # Every listing answered 503: the retries of each request would multiply the
    # requests (4 tries each); the pace slows the whole daemon instead.
    server.set_faults([FaultRule("status", path=LISTING, method="GET", status=503, retry_after=0)])
    wait_for(lambda: _pace(daemon)["level"] >= 2, what="the server's pace slowed", timeout=20)
    degraded = _rate(server, 3.0)
    assert degraded <= healthy, (degraded, healthy)
    slowed = _pace(daemon)
    assert "HTTP 503" in slowed["reason"]
    assert slowed["poll_factor"] >= 4 and slowed["retry_attempts"] <= 2
    assert slowed["transfers"] is not None and slowed["transfers"] <= 2
    assert slowed["troubles"]["status_503"] >= 2
    table = subprocess.run(
        [SINAGOT, "status", "--socket", str(daemon.socket)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    assert f"{server.url}: slowed" in table and "HTTP 503" in table
    status = daemon.call("status")
    metrics = urllib.request.urlopen(status["metrics_url"], timeout=30).read().decode()
    assert f'sinagot_server_pace{{server="{server.url}"}}' in metrics
    assert f'sinagot_server_pace_reason{{reason="status_503",server="{server.url}"}} 1.0' in metrics
    assert "sinagot_server_troubles_total" in metrics

    # Healthy again: one level down per server_recovery / 4 seconds, to the normal pace.
    server.set_faults([])
    levels = [_pace(daemon)["level"]]
    deadline = time.monotonic() + 30.0
    while levels[-1] and time.monotonic() < deadline:
        time.sleep(0.2)
        levels.append(_pace(daemon)["level"])
    assert levels[-1] == 0, levels
    steps = [level for i, level in enumerate(levels) if i == 0 or level != levels[i - 1]]
    assert steps == sorted(steps, reverse=True) and len(steps) >= 3, steps
    wait_for(
        lambda: daemon.call("status")["datasets"][0]["health"] == "ok",
        what="the dataset listed again",
        timeout=30,
    )
    assert _pace(daemon)["reason"] == "normal"
    assert daemon.stop() == 0


def test_retry_after_holds_every_request_to_the_server(
    tmp_path: Path,
    xnat_server_factory: Callable[..., EmulatorServer],
    daemons: list[XnatDaemon],
) -> None:
    server, daemon = _start(tmp_path, xnat_server_factory, daemons)
    server.set_faults(
        [FaultRule("status", path=LISTING, method="GET", status=429, retry_after=3, times=1)]
    )
    held = wait_for(
        lambda: (pace := _pace(daemon))["hold"] > 0 and pace, what="the hold shown", timeout=20
    )
    assert held["reason"] == "HTTP 429, Retry-After 3 s"
    # Nothing is sent to the server while it holds us off.
    before = _listings(server)
    time.sleep(max(0.0, held["hold"] - 0.5))
    assert _listings(server) == before
    # Then the listing goes through.
    wait_for(lambda: _listings(server) > before, what="listings again", timeout=20)
    assert server.fault_counts() == {"status_429": 1}
    assert daemon.stop() == 0


def test_a_new_session_brings_the_next_listing_down_to_min_poll_interval(
    tmp_path: Path, xnat_server: EmulatorServer, daemons: list[XnatDaemon]
) -> None:
    xnat_server.create_project(PROJECT)
    config, _ = write_project(
        tmp_path, xnat_server.url, {"poll_interval": 4.0, "min_poll_interval": 0.5}
    )
    daemon = XnatDaemon(tmp_path, config)
    daemons.append(daemon)
    daemon.start()
    # Quiet: the dataset is listed on the fixed schedule's turns.
    quiet = wait_for(
        lambda: daemon.call("status")["datasets"][0]["poll_interval"], what="a first listing"
    )
    assert quiet >= 2.0
    add_session(xnat_server, "REC-200101-A")
    daemon.call("poll")
    # The listing that found it: the next one comes min_poll_interval later.
    wait_for(
        lambda: daemon.call("status")["datasets"][0]["poll_interval"] == 0.5,
        what="the interval at its minimum",
    )
    daemon.wait_settled({"REC-200101-A"}, timeout=60)
    assert daemon.stop() == 0
