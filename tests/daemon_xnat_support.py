"""Helpers of the XNAT daemon tests: a project on the emulator, its config, the real daemon.

The daemon runs as ``sinagot daemon CONFIG`` (the installed command, the real
XNAT backend); the emulator runs in the test process. Scripts are steered by
files in a control folder: ``<control>/slow`` (seconds to sleep while running),
``<control>/fail`` (the script raises with that text), ``<control>/crash`` (the
script SIGKILLs its own process: with thread workers, the daemon).
"""

from __future__ import annotations

import json
import os
import signal
import stat
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from daemon_support import DaemonProcess, daemon_table, wait_for
from sinagot.daemon.internals import MAX_JOBS_LISTED
from sinagot.testing import EmulatorServer, Owner
from sinagot.testing.pytest_plugin import XNAT_PASSWORD, XNAT_USER

SINAGOT = str(Path(sys.executable).with_name("sinagot"))
PROJECT = "LAB"
PIPELINE = "sinagot"
# Both scripts of the test config, in the order the engine runs them.
STEPS = ("RS_EEG_filter", "RS_EEG_stats")

_FILTER = '''"""Upper-case the raw signal (slow or failing on request of the test)."""

import json
import os
import signal
import time
from pathlib import Path

from sinagot import ScriptTemplate

CONTROL = Path(@CONTROL@)


class Script(ScriptTemplate):
    PATH_IN = ("{id}", "{task}", "EEG", "raw.csv")
    PATH_OUT = ("{id}", "derivatives", "{task}", "EEG", "filtered.csv")

    def run(self):
        slow = CONTROL / "slow"
        if slow.exists():
            (CONTROL / "started").write_text(self.id)
            time.sleep(float(slow.read_text()))
        if (CONTROL / "crash").exists():
            os.kill(os.getpid(), signal.SIGKILL)
        fail = CONTROL / "fail"
        if fail.exists():
            raise RuntimeError(fail.read_text())
        self.path.output.write_text(self.path.input.read_text().upper())
'''

_STATS = '''"""Count the lines of the filtered signal."""

import json

from sinagot import ScriptTemplate


class Script(ScriptTemplate):
    PATH_IN = ("{id}", "derivatives", "{task}", "EEG", "filtered.csv")
    PATH_OUT = ("{id}", "derivatives", "{task}", "EEG", "stats.json")

    def run(self):
        lines = self.path.input.read_text().splitlines()
        self.path.output.write_text(json.dumps({"lines": len(lines)}))
'''


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'


def write_project(
    tmp: Path,
    server_url: str,
    daemon: Mapping[str, Any] | None = None,
    store: Mapping[str, Any] | None = None,
) -> tuple[Path, Path]:
    """The config (and the scripts' control folder) of a daemon following ``PROJECT``;
    ``store``: more (or other) [store] settings."""
    base = tmp / "lab"
    control = tmp / "control"
    control.mkdir(parents=True, exist_ok=True)
    scripts = base / "scripts" / "EEG"
    scripts.mkdir(parents=True, exist_ok=True)
    (scripts / "filter.py").write_text(_FILTER.replace("@CONTROL@", repr(str(control))))
    (scripts / "stats.py").write_text(_STATS)
    table = daemon_table(tmp, **{"job_timeout": 60.0, "max_attempts": 1, **(daemon or {})})
    store_table = {
        "type": "xnat",
        "server": server_url,
        "project": PROJECT,
        "user": XNAT_USER,
        "password": XNAT_PASSWORD,
        "cache_dir": tmp / "cache",
        "race_condition_delay": 1.0,
        **(store or {}),
    }
    lines = [
        "[path]",
        'dataset = "work"',
        'scripts = "scripts"',
        "[records]",
        'id_pattern = "REC-\\\\d{6}-[A-Z]"',
        "[tasks.RS]",
        'modalities = ["EEG"]',
        "[modalities.EEG]",
        'scripts = ["filter", "stats"]',
        "[store]",
        *(f"{key} = {_toml(value)}" for key, value in store_table.items()),
        "[dask]",
        "n_workers = 1",
        "threads_per_worker = 2",
        "processes = false",
        "[daemon]",
        *(f"{key} = {_toml(value)}" for key, value in table.items()),
    ]
    config = base / "lab.toml"
    config.write_text("\n".join(lines) + "\n")
    return config, control


def assert_worker_script_uses_tls(script: str, state_dir: Path) -> None:
    """A batch job's script starts a Dask worker over TLS, with the daemon's certificate
    from 0600 files in the 0700 folder ``dask`` of its state dir."""
    assert "distributed.cli.dask_worker" in script
    assert " tls://127.0.0.1:" in script
    secrets = state_dir / "dask"
    assert stat.S_IMODE(secrets.stat().st_mode) == 0o700
    certificates = list(secrets.iterdir())
    assert certificates and all(str(path) in script for path in certificates)
    assert all(stat.S_IMODE(path.stat().st_mode) == 0o600 for path in certificates)


# The [dask] table of write_project, and one asking for a SLURM batch job instead.
LOCAL_CLUSTER = "[dask]\nn_workers = 1\nthreads_per_worker = 2\nprocesses = false\n"
SLURM_CLUSTER = '[dask]\njobqueue = "slurm"\nn_workers = 1\n'


def on_slurm(config: Path) -> None:
    """Make ``config`` (from write_project) run its scripts in a SLURM job (dask-jobqueue)."""
    text = config.read_text()
    assert LOCAL_CLUSTER in text
    config.write_text(text.replace(LOCAL_CLUSTER, SLURM_CLUSTER))


def raw_signal(label: str, lines: int = 50) -> bytes:
    return "".join(f"{n},{label},{n * 0.5}\n" for n in range(lines)).encode()


def add_session(server: EmulatorServer, label: str, lines: int = 50) -> None:
    """A session with one RS scan holding the EEG resource ``raw.csv`` (seeded directly)."""
    server.create_session(PROJECT, label)
    server.add_scan_file(
        PROJECT,
        label,
        scan_type="RS",
        resource="EEG",
        name="raw.csv",
        data=raw_signal(label, lines),
    )


def file_puts(server: EmulatorServer) -> int:
    """File uploads so far (outputs and provenance documents of every resource)."""
    return sum(
        count
        for route, count in server.request_counts().items()
        if route.startswith("PUT ") and route.endswith("/files/{path}")
    )


def derivatives(server: EmulatorServer, label: str) -> dict[str, dict[str, str]]:
    """Session resources ``name___at___pipeline`` -> file name -> MD5, straight from the index."""
    store = server.store
    experiment = store.find_experiment(PROJECT, label)
    assert experiment is not None
    result: dict[str, dict[str, str]] = {}
    for resource in store.resources(Owner("experiment", experiment.id)):
        if "___at___" in resource.label:
            result[resource.label] = {f.path: f.digest for f in store.files(resource.id)}
    return result


def provenances(server: EmulatorServer, label: str) -> dict[str, dict[str, Any]]:
    """Derivative resource label -> its provenance, from the session resource PROVENANCE
    (where FrameTree keeps it, and Sinagot's commit marker), straight from the index."""
    store = server.store
    experiment = store.find_experiment(PROJECT, label)
    assert experiment is not None
    result: dict[str, dict[str, Any]] = {}
    for resource in store.resources(Owner("experiment", experiment.id)):
        if resource.label == "PROVENANCE":
            for file in store.files(resource.id):
                entry = store.find_file(resource.id, file.path)
                assert entry is not None
                result[file.path.removesuffix(".json")] = json.loads(entry.disk_path.read_bytes())
    return result


def committed(server: EmulatorServer, label: str) -> dict[str, dict[str, str]]:
    """The derivatives of ``label`` whose provenance is written, with their files' MD5s."""
    markers = provenances(server, label)
    return {name: files for name, files in derivatives(server, label).items() if name in markers}


def complete(server: EmulatorServer, label: str) -> bool:
    """Whether every step of ``label`` has its derivative with provenance on the server."""
    return len(committed(server, label)) == len(STEPS)


class XnatDaemon(DaemonProcess):
    """``sinagot daemon CONFIG`` (the installed command, the real backend) as a child process."""

    ready_timeout = 60.0
    stop_timeout = 60.0

    def __init__(self, tmp: Path, config: Path) -> None:
        super().__init__(tmp, [config])
        self.config = config

    def _command(self) -> list[str]:
        return [SINAGOT, "--log-level", "DEBUG", "daemon", str(self.config)]

    def _env(self) -> dict[str, str]:
        return dict(os.environ)

    def settled(self, labels: set[str], state: str = "done") -> list[dict[str, Any]] | None:
        """Every job of ``labels`` in ``state`` with none runnable, else None."""
        jobs = [job for job in self.jobs(limit=MAX_JOBS_LISTED) if job["session"] in labels]
        if len(jobs) == len(labels) and all(job["state"] == state for job in jobs):
            return jobs
        return None

    def wait_settled(
        self, labels: set[str], state: str = "done", timeout: float = 60.0
    ) -> list[dict[str, Any]]:
        return wait_for(
            lambda: self.settled(labels, state), timeout, f"jobs of {sorted(labels)} {state}"
        )

    def kill(self) -> None:
        self.signal(signal.SIGKILL)
        self.wait_exit(30)
