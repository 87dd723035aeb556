"""A session deleted on the server while its job runs: the job is dropped, not failed.

Found by the fault campaign (bench/chaos.py, seed 1, 30 minutes): a job whose session
was deleted mid-run retried its 404s for minutes and ended failed, a failure nobody
can fix. The session has left the server, so its job leaves the journal; if the label
comes back, the next listing makes a new job of it.
"""

from __future__ import annotations

import base64
import urllib.request
from pathlib import Path

from daemon_support import wait_for
from daemon_xnat_support import PROJECT, XnatDaemon, add_session, complete, write_project
from sinagot.testing import EmulatorServer
from sinagot.testing.pytest_plugin import XNAT_PASSWORD, XNAT_USER


def _delete_session(server: EmulatorServer, label: str) -> None:
    """Delete the session as a client would: ``DELETE`` on its URI."""
    request = urllib.request.Request(
        f"{server.url}/data/projects/{PROJECT}/experiments/{label}?removeFiles=true",
        method="DELETE",
    )
    token = base64.b64encode(f"{XNAT_USER}:{XNAT_PASSWORD}".encode()).decode()
    request.add_header("Authorization", f"Basic {token}")
    with urllib.request.urlopen(request, timeout=30) as answer:
        assert answer.status == 200


def test_a_session_deleted_while_its_job_runs_drops_the_job(
    tmp_path: Path, xnat_server: EmulatorServer
) -> None:
    # Several attempts allowed: without the fix the job retries its 404s, then fails.
    config, control = write_project(
        tmp_path, xnat_server.url, {"poll_interval": 0.5, "max_attempts": 3, "retry_backoff": 0.2}
    )
    xnat_server.create_project(PROJECT)
    add_session(xnat_server, "REC-200101-A")
    (control / "slow").write_text("2")
    daemon = XnatDaemon(tmp_path, config).start()
    try:
        wait_for(lambda: (control / "started").exists(), 60, "the job's script to start")
        _delete_session(xnat_server, "REC-200101-A")
        (control / "slow").unlink()
        # The daemon goes on with other sessions meanwhile.
        add_session(xnat_server, "REC-200101-B")
        daemon.wait_settled({"REC-200101-B"})
        assert complete(xnat_server, "REC-200101-B")

        def dropped() -> bool:
            return not [job for job in daemon.jobs() if job["session"] == "REC-200101-A"]

        wait_for(dropped, 60, "the deleted session's job to leave the journal")
        assert not [job for job in daemon.jobs() if job["state"] == "failed"]
        # The label comes back: a new job processes it.
        add_session(xnat_server, "REC-200101-A")
        daemon.wait_settled({"REC-200101-A"})
        assert complete(xnat_server, "REC-200101-A")
    finally:
        assert daemon.stop() == 0
