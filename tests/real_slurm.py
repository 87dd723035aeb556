"""A real one-node SLURM cluster on loopback for the tests: munged, slurmctld and slurmd.

Everything lives in one folder: munge's key, socket and logs, ``slurm.conf``, the
controller's state, slurmd's spool, pid and log files. Both Slurm daemons bind
127.0.0.1 only (``CommunicationParameters=NoCtldInAddrAny,NoInAddrAny`` with the
node and controller named ``localhost``) on ports free at start. Process tracking
and task plugins that need neither cgroups nor systemd (``proctrack/linuxproc``,
``task/none``) let it run in a container. Clients (``sbatch``, ``squeue``, dask-jobqueue)
find it through ``SLURM_CONF``: :meth:`RealSlurm.env`.

The daemons must run as root (slurmd starts jobs as their users). When SLURM is not
installed or does not start, :func:`start_or_skip` skips the test with the reason,
or fails it when ``SINAGOT_REQUIRE_SLURM=1`` (CI sets it once SLURM is installed).
"""

from __future__ import annotations

import contextlib
import getpass
import os
import shutil
import signal
import socket
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

import pytest

from daemon_support import wait_for

REQUIRED_ENV = "SINAGOT_REQUIRE_SLURM"
_PROGRAMS = ("munged", "slurmctld", "slurmd", "sbatch", "squeue", "scancel", "scontrol", "sinfo")
_START_TIMEOUT = 30.0
_STOP_TIMEOUT = 10.0
# Each job gets one core and asks for this much memory (all it may use on the node).
_JOB_MEMORY_MIB = 1024


@dataclass(frozen=True, slots=True)
class SlurmJob:
    id: str
    name: str
    state: str
    user: str


class SlurmUnavailable(Exception):
    """SLURM is missing here or did not start (the message says which and why)."""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _node_resources() -> tuple[int, int]:
    """The node's CPUs and memory in MiB, as slurmd itself reports them."""
    try:
        result = subprocess.run(
            ["slurmd", "-C"], capture_output=True, text=True, timeout=30, check=True
        )
    except (OSError, subprocess.SubprocessError) as exc:
        raise SlurmUnavailable(f"`slurmd -C` failed: {exc}") from exc
    fields = dict(item.split("=", 1) for item in result.stdout.split() if "=" in item)
    return int(fields.get("CPUs", "1")), int(fields.get("RealMemory", "0"))


class RealSlurm:
    """munged, slurmctld and slurmd under ``root``; :meth:`start`, then :meth:`stop`."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.conf = root / "slurm.conf"
        self.logs = root / "log"
        self.jobs_dir = root / "jobs"
        self._munge_socket = root / "munge" / "munge.socket"
        self._procs: list[tuple[str, subprocess.Popen[bytes]]] = []

    # -- start and stop ---------------------------------------------------------------

    def start(self) -> None:
        missing = [name for name in _PROGRAMS if shutil.which(name) is None]
        if missing:
            raise SlurmUnavailable(
                f"SLURM is not installed: no {', '.join(missing)} (apt-get install slurm-wlm munge)"
            )
        if os.geteuid() != 0:
            raise SlurmUnavailable("SLURM needs root here: slurmd starts the jobs as their users")
        for folder in ("munge", "state", "spool", "log", "jobs"):
            (self.root / folder).mkdir(mode=0o700, parents=True, exist_ok=True)
        try:
            self._start_munge()
            self._write_conf()
            self._spawn("slurmctld", ["slurmctld", "-D", "-c", "-f", str(self.conf)])
            wait_for(self._controller_answers, _START_TIMEOUT, "slurmctld answering")
            self._spawn("slurmd", ["slurmd", "-D", "-f", str(self.conf), "-N", "localhost"])
            wait_for(self._node_idle, _START_TIMEOUT, "the node idle")
        except SlurmUnavailable:
            self.stop()
            raise
        except (AssertionError, OSError, subprocess.SubprocessError) as exc:
            tails = "; ".join(self._log_tails())
            self.stop()
            raise SlurmUnavailable(f"SLURM did not start ({exc}): {tails}") from exc

    def _start_munge(self) -> None:
        munge = self.root / "munge"
        key = munge / "munge.key"
        # munged refuses a key that anyone else may read.
        descriptor = os.open(key, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o400)
        with os.fdopen(descriptor, "wb") as out:
            out.write(os.urandom(1024))
        self._spawn(
            "munged",
            [
                "munged",
                "--foreground",
                # munged refuses root unless forced: the test cluster runs as root.
                "--force",
                f"--socket={self._munge_socket}",
                f"--key-file={key}",
                f"--pid-file={munge / 'munged.pid'}",
                f"--log-file={self.logs / 'munged.log'}",
                f"--seed-file={munge / 'munged.seed'}",
            ],
        )
        wait_for(self._munge_socket.exists, _START_TIMEOUT, "munged's socket")

    def _write_conf(self) -> None:
        cpus, memory = _node_resources()
        if memory < _JOB_MEMORY_MIB:
            raise SlurmUnavailable(
                f"the SLURM node has {memory} MiB, a job needs {_JOB_MEMORY_MIB}"
            )
        root, user = self.root, "root"
        lines = [
            "ClusterName=sinagottest",
            "SlurmctldHost=localhost(127.0.0.1)",
            f"SlurmctldPort={_free_port()}",
            f"SlurmdPort={_free_port()}",
            # Bind the address the names resolve to (loopback), not every interface.
            "CommunicationParameters=NoCtldInAddrAny,NoInAddrAny",
            f"SlurmUser={user}",
            f"SlurmdUser={user}",
            "AuthType=auth/munge",
            "CredType=cred/munge",
            f"AuthInfo=socket={self._munge_socket}",
            f"StateSaveLocation={root / 'state'}",
            f"SlurmdSpoolDir={root / 'spool'}",
            f"SlurmctldPidFile={root / 'slurmctld.pid'}",
            f"SlurmdPidFile={root / 'slurmd.pid'}",
            f"SlurmctldLogFile={self.logs / 'slurmctld.log'}",
            f"SlurmdLogFile={self.logs / 'slurmd.log'}",
            # Neither cgroups nor systemd: track job processes by parentage, bind nothing.
            "ProctrackType=proctrack/linuxproc",
            "TaskPlugin=task/none",
            "JobAcctGatherType=jobacct_gather/none",
            "AccountingStorageType=accounting_storage/none",
            "JobCompType=jobcomp/none",
            "SchedulerType=sched/builtin",
            "SelectType=select/cons_tres",
            "SelectTypeParameters=CR_CPU",
            "MpiDefault=none",
            "SwitchType=switch/none",
            "ReturnToService=2",
            "MailProg=/bin/true",
            # A cancelled job's processes get SIGTERM, then SIGKILL this many seconds later.
            "KillWait=5",
            f"NodeName=localhost NodeAddr=127.0.0.1 CPUs={cpus} RealMemory={memory} State=UNKNOWN",
            "PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP",
        ]
        self.conf.write_text("\n".join(lines) + "\n")

    def _spawn(self, name: str, command: list[str]) -> None:
        with (self.logs / f"{name}.out").open("ab") as out:
            proc = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=out,
                env={**os.environ, "SLURM_CONF": str(self.conf)},
                start_new_session=True,
            )
        self._procs.append((name, proc))

    def _controller_answers(self) -> bool:
        self._check_alive()
        return self._run("scontrol", "ping", check=False).returncode == 0

    def _node_idle(self) -> bool:
        self._check_alive()
        state = self._run("sinfo", "-h", "-n", "localhost", "-o", "%T", check=False).stdout
        return state.strip() == "idle"

    def _check_alive(self) -> None:
        for name, proc in self._procs:
            if proc.poll() is not None:
                raise AssertionError(f"{name} exited with {proc.returncode}")

    def _log_tails(self) -> list[str]:
        tails = []
        for log in sorted(self.logs.glob("*")):
            lines = log.read_text(errors="replace").strip().splitlines()
            if lines:
                tails.append(f"{log.name}: {' | '.join(lines[-3:])}")
        return tails

    def stop(self) -> None:
        """Cancel every job, wait for their processes to end, then stop the daemons."""
        if any(name == "slurmctld" and proc.poll() is None for name, proc in self._procs):
            with contextlib.suppress(AssertionError, subprocess.SubprocessError):
                self.cancel_all()
        for pid in self.job_processes():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        for _, proc in reversed(self._procs):
            if proc.poll() is None:
                proc.terminate()
            try:
                proc.wait(_STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(_STOP_TIMEOUT)
        self._procs.clear()

    # -- what the tests use -----------------------------------------------------------

    def env(self) -> dict[str, str]:
        """Environment for a process whose dask-jobqueue should submit here, on loopback."""
        return {
            "SLURM_CONF": str(self.conf),
            "DASK_JOBQUEUE__SLURM__CORES": "1",
            "DASK_JOBQUEUE__SLURM__MEMORY": f"{_JOB_MEMORY_MIB}MiB",
            # Scheduler, workers and both dashboards on loopback only.
            "DASK_JOBQUEUE__SLURM__INTERFACE": "lo",
            "DASK_JOBQUEUE__SLURM__SCHEDULER_OPTIONS": '{"dashboard_address": "127.0.0.1:0"}',
            "DASK_JOBQUEUE__SLURM__WORKER_EXTRA_ARGS": '["--dashboard-address", "127.0.0.1:0"]',
            "DASK_JOBQUEUE__SLURM__LOCAL_DIRECTORY": str(self.jobs_dir),
            "DASK_JOBQUEUE__SLURM__LOG_DIRECTORY": str(self.jobs_dir),
            "DASK_JOBQUEUE__SLURM__WALLTIME": "00:10:00",
            "DASK_JOBQUEUE__SLURM__DEATH_TIMEOUT": "20",
            # A worker whose job was cancelled is replaced this soon (the default is 15 s).
            "DASK_DISTRIBUTED__DEPLOY__LOST_WORKER_TIMEOUT": "2s",
        }

    def _run(self, *command: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            command,
            capture_output=True,
            text=True,
            timeout=30,
            check=check,
            env={**os.environ, "SLURM_CONF": str(self.conf)},
        )

    def jobs(self) -> list[SlurmJob]:
        """The jobs ``squeue`` lists (pending, running or completing)."""
        out = self._run("squeue", "-h", "-o", "%i|%j|%T|%u").stdout
        return [SlurmJob(*line.split("|")) for line in out.splitlines() if line.strip()]

    def running(self) -> list[SlurmJob]:
        return [job for job in self.jobs() if job.state == "RUNNING"]

    def batch_script(self, job_id: str) -> str:
        return self._run("scontrol", "write", "batch_script", job_id, "-").stdout

    def cancel(self, job_id: str) -> None:
        self._run("scancel", job_id)

    def cancel_all(self) -> None:
        """Cancel every job and wait until none is queued and none of their processes live."""
        self._run("scancel", "--full", "--user", getpass.getuser(), check=False)
        wait_for(lambda: not self.jobs(), 60, "the queue to empty")
        wait_for(lambda: not self.job_processes(), 60, "the jobs' processes to end")

    def state(self, job_id: str) -> str:
        """A job's state (``CANCELLED``, ``COMPLETED``...): ended jobs are kept a while."""
        fields = self._run("scontrol", "-o", "show", "job", job_id).stdout.split()
        return dict(field.split("=", 1) for field in fields if "=" in field)["JobState"]

    def job_processes(self, job_id: str | None = None) -> list[int]:
        """Live processes of this cluster's jobs (of ``job_id`` only, if given), from /proc."""
        ours = f"SLURM_CONF={self.conf}".encode()
        job = f"SLURM_JOB_ID={job_id or ''}".encode()
        pids = []
        for proc in Path("/proc").glob("[0-9]*"):
            try:
                environ = (proc / "environ").read_bytes().split(b"\0")
                state = (proc / "stat").read_text().rsplit(")", 1)[1].split()[0]
            except OSError:
                continue
            in_job = any(
                item.startswith(job) if job_id is None else item == job for item in environ
            )
            if ours in environ and in_job and state != "Z":
                pids.append(int(proc.name))
        return sorted(pids)


@contextlib.contextmanager
def start_or_skip(root: Path) -> Iterator[RealSlurm]:
    """A started cluster; skip (or fail, under ``SINAGOT_REQUIRE_SLURM=1``) without one."""
    slurm = RealSlurm(root)
    try:
        slurm.start()
    except SlurmUnavailable as exc:
        _unavailable(f"SLURM TESTS NOT RUN: {exc}")
    try:
        yield slurm
    finally:
        slurm.stop()


def _unavailable(reason: str) -> NoReturn:
    if os.environ.get(REQUIRED_ENV) == "1":
        pytest.fail(reason)
    pytest.skip(reason)
