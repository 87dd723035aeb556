"""Stress (slow): 1,000 sessions discovered at once, processed with bounded memory and fds."""

from __future__ import annotations

from pathlib import Path

import psutil
import pytest

from daemon_support import DaemonProcess, add_session, daemon_table, uploads, wait_for, write_config

SESSIONS = 1000


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_thousand_sessions_at_once(tmp_path: Path) -> None:
    config = write_config(tmp_path, "lab", daemon_table(tmp_path, max_concurrent_jobs=4))
    for n in range(SESSIONS):
        add_session(config, f"REC-{n}", content=f"session {n}\n" * 100)
    daemon = DaemonProcess(tmp_path, [config]).start()
    try:
        process = psutil.Process(daemon.pid)

        def done() -> int:
            counts = daemon.call("status")["datasets"][0]["jobs"]
            return int(counts["done"])

        wait_for(lambda: done() >= 50, 120, "the first 50 jobs")
        start_fds, start_rss = process.num_fds(), process.memory_info().rss
        wait_for(lambda: done() == SESSIONS, 480, f"{SESSIONS} jobs done")
        end_fds, end_rss = process.num_fds(), process.memory_info().rss
        status = daemon.call("status")
        assert status["datasets"][0]["jobs"]["failed"] == 0
        assert status["queued"] <= 4
        assert daemon.stop() == 0
    finally:
        daemon.ensure_stopped()
    done_uploads = uploads(config)
    assert len(done_uploads) == SESSIONS
    assert len(set(done_uploads)) == SESSIONS
    assert end_fds <= start_fds + 4, (start_fds, end_fds)
    assert end_rss < start_rss * 1.5, (start_rss, end_rss)
