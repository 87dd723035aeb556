"""The real daemon against a misbehaving server, and a failing script retried from the CLI."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

from daemon_support import wait_for
from daemon_xnat_support import (
    PIPELINE,
    PROJECT,
    SINAGOT,
    XnatDaemon,
    add_session,
    complete,
    derivatives,
    write_project,
)
from sinagot.testing import EmulatorServer, FaultRule

LABELS = {"REC-200101-A", "REC-200101-B"}


def _dataset_status(daemon: XnatDaemon) -> dict[str, Any]:
    status: dict[str, Any] = daemon.call("status")
    dataset: dict[str, Any] = status["datasets"][0]
    return dataset


def test_server_faults_are_survived_and_shown(
    tmp_path: Path,
    xnat_server_factory: Callable[..., EmulatorServer],
    daemons: list[XnatDaemon],
) -> None:
    # Sessions expire after 0.5 s idle and the daemon polls every second: every poll
    # meets a 401 and logs in again.
    server = xnat_server_factory(session_expiry=0.5)
    server.create_project(PROJECT)
    for label in LABELS:
        add_session(server, label)
    listing = r"/projects/LAB/experiments$"
    server.set_faults(
        [
            FaultRule("status", path=listing, method="GET", status=503, retry_after=0),
            FaultRule("reset", path=r"/files/raw\.csv$", method="GET", times=1, at=10),
            FaultRule("corrupt", path=r"/files/raw\.csv$", method="GET", times=1, at=5),
            FaultRule("status", path=r"/files/", method="PUT", status=503, times=2, retry_after=0),
        ]
    )
    config, _ = write_project(
        tmp_path, server.url, {"poll_interval": 1.0, "max_attempts": 3, "retry_backoff": 0.2}
    )
    daemon = XnatDaemon(tmp_path, config)
    daemons.append(daemon)
    daemon.start()

    # The server is down for listings: the status says so, with the reason.
    down = wait_for(
        lambda: (d := _dataset_status(daemon))["health"] == "down" and d["failures"] >= 1 and d,
        what="the dataset reported down",
    )
    assert "503" in str(down["last_error"])
    table = subprocess.run(
        [SINAGOT, "status", "--socket", str(daemon.socket)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    assert "down" in table and "503" in table

    # Back up (other faults still armed): everything completes.
    server.set_faults(server.injector.rules()[1:])
    daemon.wait_settled(LABELS, timeout=90)
    wait_for(lambda: _dataset_status(daemon)["health"] == "ok", what="the dataset ok again")
    for label in LABELS:
        assert complete(server, label)
    faults = server.fault_counts()
    assert faults.get("reset") == 1 and faults.get("corrupt") == 1
    # The first listing's 4 tries (the server's pace took one off after the first 503),
    # and the 2 PUTs.
    assert faults.get("status_503", 0) >= 4 + 2
    log = daemon.log_text()
    assert log.count("logged in to") >= 2  # the expired session was renewed
    assert daemon.stop() == 0


def test_failing_script_is_retried_from_the_cli_after_a_fix(
    tmp_path: Path, xnat_server: EmulatorServer, daemons: list[XnatDaemon]
) -> None:
    xnat_server.create_project(PROJECT)
    add_session(xnat_server, "REC-200101-A")
    config, control = write_project(tmp_path, xnat_server.url, {"max_attempts": 2})
    (control / "fail").write_text("broken on purpose")
    daemon = XnatDaemon(tmp_path, config)
    daemons.append(daemon)
    daemon.start()

    (job,) = daemon.wait_settled({"REC-200101-A"}, state="failed")
    assert job["attempts"] == 2
    assert "RuntimeError: broken on purpose" in job["last_error"]
    assert derivatives(xnat_server, "REC-200101-A") == {}
    listed = subprocess.run(
        [SINAGOT, "jobs", "--state", "failed", "--socket", str(daemon.socket)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    assert "REC-200101-A" in listed and "broken on purpose" in listed

    (control / "fail").unlink()
    retried = subprocess.run(
        [SINAGOT, "retry", str(job["id"]), "--socket", str(daemon.socket)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert retried.returncode == 0, retried.stderr
    assert "will run again" in retried.stdout
    daemon.wait_settled({"REC-200101-A"})
    assert complete(xnat_server, "REC-200101-A")
    assert f"RS_EEG_filter___at___{PIPELINE}" in derivatives(xnat_server, "REC-200101-A")
    assert daemon.stop() == 0


def test_a_script_over_its_timeout_fails_the_job_and_the_daemon_goes_on(
    tmp_path: Path, xnat_server: EmulatorServer, daemons: list[XnatDaemon]
) -> None:
    xnat_server.create_project(PROJECT)
    add_session(xnat_server, "REC-200101-A")
    config, control = write_project(
        tmp_path, xnat_server.url, {"script_timeout": 1.0, "shutdown_timeout": 1.0}
    )
    (control / "slow").write_text("30")
    daemon = XnatDaemon(tmp_path, config)
    daemons.append(daemon)
    daemon.start()

    (job,) = daemon.wait_settled({"REC-200101-A"}, state="failed")
    assert "filter: timed out after 1 s" in job["last_error"]
    assert derivatives(xnat_server, "REC-200101-A") == {}

    # The daemon still works: a fixed script runs on the cluster's other thread.
    (control / "slow").unlink()
    daemon.call("retry", job["id"])
    daemon.wait_settled({"REC-200101-A"})
    assert complete(xnat_server, "REC-200101-A")
    assert daemon.stop() == 0  # without waiting for the abandoned script
