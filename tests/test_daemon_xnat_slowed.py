"""An attempt that fails while its server is slowed does not use up the job's attempts.

Found by the fault campaign (bench/chaos.py, seed 4, rate 1.8): under 500s and a server
restart the daemon's pace for the server went up, each request got fewer tries, and jobs
spent their ten attempts within minutes and ended failed, though the server came back.
Fewer tries per request answer a struggling server; they must not turn its trouble into
failed jobs. The job waits for the server instead, its attempt given back.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from daemon_support import wait_for
from daemon_xnat_support import PROJECT, XnatDaemon, add_session, complete, write_project
from sinagot.testing import EmulatorServer, FaultRule

LABEL = "REC-200101-A"


def test_attempts_failed_while_the_server_is_slowed_do_not_count(
    tmp_path: Path, xnat_server: EmulatorServer
) -> None:
    xnat_server.create_project(PROJECT)
    add_session(xnat_server, LABEL)
    # One attempt allowed: any attempt that counted would fail the job for good.
    config, _ = write_project(
        tmp_path,
        xnat_server.url,
        {"poll_interval": 0.5, "min_poll_interval": 0.5, "max_attempts": 1, "retry_backoff": 0.1},
    )
    # More 503s on the session's scans than one attempt's tries: the first attempts fail.
    xnat_server.set_faults(
        [FaultRule("status", path=r"/scans$", method="GET", status=503, retry_after=0, times=6)]
    )
    daemon = XnatDaemon(tmp_path, config).start()
    try:

        def finished() -> dict[str, Any] | None:
            jobs = [j for j in daemon.jobs() if j["state"] in ("done", "failed")]
            return jobs[0] if jobs else None

        job = wait_for(finished, 90, "the job to end")
        assert job["state"] == "done", job["last_error"]
        assert complete(xnat_server, LABEL)
        assert xnat_server.fault_counts()
        history = daemon.call("job", job["id"])
        notes = [entry["detail"] for entry in history["history"]]
        assert any("this attempt does not count" in note for note in notes), notes
        assert job["attempts"] == 1
    finally:
        assert daemon.stop() == 0
