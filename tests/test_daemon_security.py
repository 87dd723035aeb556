"""The real daemon as a local attacker meets it: Dask ports, and the XNAT password.

The daemon runs the sample config's cluster (worker processes); an attacker
process without its credentials tries every TCP port the daemon and its
children listen on. The password given in the environment must not reach the
Dask workers or the lab scripts; a systemd credential is read where systemd
puts it.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import psutil
import pytest

from daemon_support import listening, wait_for
from daemon_xnat_support import (
    SINAGOT,
    XnatDaemon,
    add_session,
    complete,
    write_project,
)
from dask_attacker import assert_refused, attack
from sinagot.testing import EmulatorServer
from sinagot.testing.pytest_plugin import XNAT_PASSWORD

THREADS = "[dask]\nn_workers = 1\nthreads_per_worker = 2\nprocesses = false\n"
PROCESSES = "[dask]\nn_workers = 1\nthreads_per_worker = 1\nprocesses = true\n"
PASSWORD_LINE = f'password = "{XNAT_PASSWORD}"\n'

# A filter script that reports what a lab script can see of the daemon's secrets.
SPY = """
import json
import os

from sinagot import ScriptTemplate


class Script(ScriptTemplate):
    PATH_IN = ("{id}", "{task}", "EEG", "raw.csv")
    PATH_OUT = ("{id}", "derivatives", "{task}", "EEG", "filtered.csv")

    def run(self):
        seen = {
            "pid": os.getpid(),
            "password": os.environ.get("SINAGOT_XNAT_PASSWORD"),
            "credentials": os.environ.get("CREDENTIALS_DIRECTORY"),
        }
        self.path.output.write_text(json.dumps(seen))
"""


def _config(tmp_path: Path, server: EmulatorServer, cluster: str, password: str = "") -> Path:
    config, _ = write_project(tmp_path, server.url)
    text = config.read_text()
    assert THREADS in text and PASSWORD_LINE in text
    config.write_text(text.replace(THREADS, cluster).replace(PASSWORD_LINE, password))
    return config


def _seen_by_script(tmp_path: Path, label: str) -> dict[str, object]:
    output = tmp_path / "lab" / "work" / label / "derivatives" / "RS" / "EEG" / "filtered.csv"
    seen: dict[str, object] = json.loads(output.read_text())
    return seen


def test_no_port_of_the_daemon_or_its_workers_runs_a_strangers_code(
    tmp_path: Path, lab: EmulatorServer, daemons: list[XnatDaemon]
) -> None:
    add_session(lab, "REC-200101-A")
    daemon = XnatDaemon(tmp_path, _config(tmp_path, lab, PROCESSES, PASSWORD_LINE))
    daemons.append(daemon.start())
    daemon.wait_settled({"REC-200101-A"}, timeout=120)
    # The scheduler and the HTTP servers in the daemon, a nanny and a worker process.
    workers = psutil.Process(daemon.pid).children(recursive=True)
    assert workers
    opened = listening(daemon.pid)
    assert {host for host, _ in opened} == {"127.0.0.1"}
    assert len(opened) >= 4

    marker = tmp_path / "planted"
    assert_refused(attack({port for _, port in opened}, marker), marker)

    # Nothing of it disturbed the daemon: the next session is processed as usual.
    add_session(lab, "REC-200101-B")
    daemon.wait_settled({"REC-200101-A", "REC-200101-B"}, timeout=120)
    assert complete(lab, "REC-200101-B")
    assert daemon.stop() == 0
    assert "Traceback" not in daemon.log_text()


def _environ(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/environ").read_bytes()
    except (FileNotFoundError, ProcessLookupError):
        return b""


@pytest.mark.parametrize("cluster", [PROCESSES, THREADS], ids=["processes", "threads"])
def test_the_environment_password_reaches_no_worker_and_no_script(
    tmp_path: Path, lab: EmulatorServer, daemons: list[XnatDaemon], cluster: str
) -> None:
    add_session(lab, "REC-200101-A")
    config = _config(tmp_path, lab, cluster)
    config.parent.joinpath("scripts", "EEG", "filter.py").write_text(SPY)
    daemon = XnatDaemon(tmp_path, config)
    daemon.extra_env["SINAGOT_XNAT_PASSWORD"] = XNAT_PASSWORD
    daemons.append(daemon.start())
    # Processed at all: the daemon logged in with the password it took.
    daemon.wait_settled({"REC-200101-A"}, timeout=120)
    assert complete(lab, "REC-200101-A")

    seen = _seen_by_script(tmp_path, "REC-200101-A")
    assert seen["password"] is None
    assert (seen["pid"] != daemon.pid) is (cluster == PROCESSES)
    children = psutil.Process(daemon.pid).children(recursive=True)
    assert bool(children) is (cluster == PROCESSES)
    for child in children:
        assert b"SINAGOT_XNAT_PASSWORD" not in _environ(child.pid), child.cmdline()
        assert XNAT_PASSWORD.encode() not in _environ(child.pid)
    assert daemon.stop() == 0


def test_the_password_from_a_systemd_credential(
    tmp_path: Path, lab: EmulatorServer, daemons: list[XnatDaemon]
) -> None:
    add_session(lab, "REC-200101-A")
    config = _config(tmp_path, lab, THREADS, 'password_credential = "xnat-password"\n')
    credentials = tmp_path / "credentials"
    credentials.mkdir(mode=0o700)

    # Not there: one line naming the file and the unit setting that provides it.
    env = {**os.environ, "CREDENTIALS_DIRECTORY": str(credentials)}
    env.pop("SINAGOT_XNAT_PASSWORD", None)
    result = subprocess.run(
        [SINAGOT, "daemon", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env=env,
    )
    assert result.returncode == 2, result.stderr
    assert result.stderr.count("\n") == 1, result.stderr
    assert f"no credential file {credentials / 'xnat-password'}" in result.stderr
    assert "LoadCredential=xnat-password:" in result.stderr

    # As systemd writes it (with the newline an editor leaves): the daemon logs in.
    (credentials / "xnat-password").write_text(XNAT_PASSWORD + "\n")
    (credentials / "xnat-password").chmod(0o400)
    daemon = XnatDaemon(tmp_path, config)
    daemon.extra_env["CREDENTIALS_DIRECTORY"] = str(credentials)
    daemons.append(daemon.start())
    daemon.wait_settled({"REC-200101-A"}, timeout=120)
    wait_for(lambda: complete(lab, "REC-200101-A"), 30, "REC-200101-A uploaded")
    assert daemon.stop() == 0
    assert XNAT_PASSWORD not in daemon.log_text()
