"""Stress (slow): 1,000 sessions on the XNAT emulator at once, through the real daemon."""

from __future__ import annotations

from pathlib import Path

import psutil
import pytest

from daemon_support import wait_for
from daemon_xnat_support import (
    PROJECT,
    STEPS,
    XnatDaemon,
    add_session,
    complete,
    file_puts,
    write_project,
)
from sinagot.testing import EmulatorServer

SESSIONS = 1000


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_thousand_sessions_at_once(tmp_path: Path, xnat_server: EmulatorServer) -> None:
    xnat_server.create_project(PROJECT)
    labels = {f"REC-{n:06d}-A" for n in range(SESSIONS)}
    for label in sorted(labels):
        add_session(xnat_server, label, lines=20)
    config, _ = write_project(tmp_path, xnat_server.url, {"max_concurrent_jobs": 4})
    daemon = XnatDaemon(tmp_path, config).start()
    try:
        assert daemon.proc is not None
        process = psutil.Process(daemon.proc.pid)

        def done() -> int:
            return int(daemon.call("status")["datasets"][0]["jobs"]["done"])

        wait_for(lambda: done() >= 100, 300, "the first 100 jobs")
        start_fds, start_rss = process.num_fds(), process.memory_info().rss
        daemon.wait_settled(labels, timeout=800)
        end_fds, end_rss = process.num_fds(), process.memory_info().rss
        status = daemon.call("status")
        assert status["datasets"][0]["jobs"]["failed"] == 0
        assert daemon.stop() == 0
    finally:
        daemon.ensure_stopped()
    # Each derivative once: an output and its provenance per step and session.
    assert file_puts(xnat_server) == SESSIONS * len(STEPS) * 2
    for label in sorted(labels)[:: SESSIONS // 20]:
        assert complete(xnat_server, label)
    assert end_fds <= start_fds + 8, (start_fds, end_fds)
    assert end_rss < start_rss * 1.5, (start_rss, end_rss)
