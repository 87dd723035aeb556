"""The real daemon on alias tokens: it keeps processing new sessions across several token
and session lifetimes, and across a server restart in which the user's password changed.

The emulator runs in the test process with short lifetimes (a token lives 3 s, an idle
session 0.5 s, the daemon polls every second): the daemon logs in again at nearly every
poll and renews its token several times. After the restart only the token it holds can
log it in: the password in its config is the old one.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import time
import urllib.request
from pathlib import Path

from daemon_support import wait_for
from daemon_xnat_support import (
    PROJECT,
    SINAGOT,
    XnatDaemon,
    add_session,
    complete,
    write_project,
)
from sinagot.testing import EmulatorServer
from sinagot.testing.pytest_plugin import PROFILE_ENV, XNAT_PASSWORD, XNAT_USER

TOKEN_LIFETIME = 3.0
SESSION_EXPIRY = 0.5


def _emulator(data: Path, password: str, port: int = 0) -> EmulatorServer:
    return EmulatorServer(
        data,
        users={XNAT_USER: password},
        port=port,
        session_expiry=SESSION_EXPIRY,
        alias_token_timeout=TOKEN_LIFETIME,
        profile=os.environ.get(PROFILE_ENV) or "fast",
    )


def _processed(daemon: XnatDaemon, server: EmulatorServer, label: str) -> None:
    add_session(server, label)
    daemon.wait_settled({label}, timeout=120)
    wait_for(lambda: complete(server, label), 30, f"{label} uploaded")


def test_sessions_keep_being_processed_across_token_lifetimes_and_a_restart(
    tmp_path: Path, daemons: list[XnatDaemon]
) -> None:
    data = tmp_path / "xnat"
    first = _emulator(data, XNAT_PASSWORD)
    first.create_project(PROJECT)
    with first.running_in_thread():
        port = int(first.url.rsplit(":", 1)[1])
        config, _ = write_project(
            tmp_path, first.url, {"poll_interval": 1.0, "metrics_address": "0"}
        )
        daemon = XnatDaemon(tmp_path, config)
        daemons.append(daemon.start())
        # New sessions keep coming for more than three token lifetimes (bounded in count).
        labels: list[str] = []
        started = time.monotonic()
        while time.monotonic() - started < 3.5 * TOKEN_LIFETIME and len(labels) < 12:
            labels.append(f"REC-2001{len(labels):02d}-A")
            _processed(daemon, first, labels[-1])
            time.sleep(0.5 * TOKEN_LIFETIME)
        logins = first.request_counts()["GET /data/JSESSION"]
    first.close()
    # The daemon logged in with its token again and again, and renewed it.
    assert logins >= 4
    renewed = _tokens(data)
    assert len(renewed) >= 4

    second = _emulator(data, "a-new-password", port)
    try:
        with second.running_in_thread():
            _processed(daemon, second, "REC-200201-A")
            for label in labels:
                assert complete(second, label), label
            assert second.request_counts()["GET /data/JSESSION"] >= 1
            status = _status(daemon)
            metrics = urllib.request.urlopen(status["metrics_url"], timeout=30).read().decode()
            assert daemon.stop() == 0
    finally:
        second.close()

    secrets = {t["secret"] for t in _tokens(data)} | {t["alias"] for t in _tokens(data)}
    log = daemon.log_text()
    assert "logging in with an alias token from now on (the password forgotten)" in log
    assert "alias token renewed" in log
    assert "Traceback" not in log
    for shown in (log, json.dumps(status), metrics):
        assert XNAT_PASSWORD not in shown
        assert not any(secret in shown for secret in secrets)


def _status(daemon: XnatDaemon) -> dict[str, object]:
    result = subprocess.run(
        [SINAGOT, "status", "--json", "--socket", str(daemon.socket)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    status: dict[str, object] = json.loads(result.stdout)
    return status


def _tokens(data: Path) -> list[dict[str, str]]:
    with sqlite3.connect(data / "tokens.sqlite3") as db:
        rows = db.execute("SELECT alias, secret FROM alias_tokens").fetchall()
    return [{"alias": alias, "secret": secret} for alias, secret in rows]
