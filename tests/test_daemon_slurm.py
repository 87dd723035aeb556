"""The real daemon with ``[dask] jobqueue = "slurm"`` on a real one-node SLURM (see real_slurm).

Run with ``pytest -m slurm``; without SLURM installed (or startable) these tests skip
with the reason, and fail instead under ``SINAGOT_REQUIRE_SLURM=1``, as in CI.
"""

from __future__ import annotations

import getpass
from collections.abc import Iterator
from pathlib import Path

import pytest

from daemon_support import listening, wait_for
from daemon_xnat_support import (
    XnatDaemon,
    add_session,
    assert_worker_script_uses_tls,
    complete,
    on_slurm,
    write_project,
)
from dask_attacker import assert_refused, attack
from real_slurm import RealSlurm, SlurmJob, start_or_skip
from sinagot.testing import EmulatorServer

pytestmark = [pytest.mark.slurm, pytest.mark.timeout(900)]

LABEL = "REC-200301-A"
# A batch job may wait for the node, then start Python and connect: give it time.
JOB_START = 180.0
DAEMON = {"job_timeout": 600.0}


@pytest.fixture(scope="module")
def slurm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RealSlurm]:
    with start_or_skip(tmp_path_factory.mktemp("slurm")) as cluster:
        yield cluster


@pytest.fixture
def lab(xnat_server: EmulatorServer) -> EmulatorServer:
    xnat_server.create_project("LAB")
    add_session(xnat_server, LABEL)
    return xnat_server


@pytest.fixture
def daemon(tmp_path: Path, lab: EmulatorServer, slurm: RealSlurm) -> Iterator[XnatDaemon]:
    """The daemon following the lab, its scripts on SLURM (not started)."""
    config, _ = write_project(tmp_path, lab.url, DAEMON)
    on_slurm(config)
    process = XnatDaemon(tmp_path, config)
    process.extra_env.update(slurm.env())
    yield process
    process.ensure_stopped()
    slurm.cancel_all()


def _one_running(slurm: RealSlurm, other_than: str | None = None) -> SlurmJob | None:
    jobs = [job for job in slurm.running() if job.id != other_than]
    return jobs[0] if len(jobs) == 1 else None


def test_workers_are_slurm_jobs_behind_tls_and_stop_with_the_daemon(
    tmp_path: Path, lab: EmulatorServer, slurm: RealSlurm, daemon: XnatDaemon
) -> None:
    daemon.start()
    # The cluster has no worker but the batch job's: the scripts can only run there.
    daemon.wait_settled({LABEL}, timeout=JOB_START + 60)
    assert complete(lab, LABEL)
    job = wait_for(lambda: _one_running(slurm), 30, "the daemon's job in squeue")
    assert job.user == getpass.getuser()

    assert_worker_script_uses_tls(slurm.batch_script(job.id), tmp_path / "state")

    # Across the job boundary too: nobody runs code through the daemon's scheduler or
    # the worker (and nanny) SLURM started.
    job_ports = {port for pid in slurm.job_processes(job.id) for _, port in listening(pid)}
    assert job_ports, "the SLURM job's worker listens on no port"
    ports = job_ports | {port for _, port in listening(daemon.pid)}
    marker = tmp_path / "planted"
    assert_refused(attack(ports, marker), marker)

    assert daemon.stop() == 0
    wait_for(lambda: not slurm.jobs(), 60, "the daemon's job leaving the queue")
    assert slurm.state(job.id) == "CANCELLED"
    wait_for(lambda: not slurm.job_processes(job.id), 60, "the job's processes to end")


def test_a_job_cancelled_mid_script_is_replaced_and_the_task_retried(
    tmp_path: Path, lab: EmulatorServer, slurm: RealSlurm, daemon: XnatDaemon
) -> None:
    control = tmp_path / "control"
    (control / "slow").write_text("600")
    daemon.start()
    wait_for((control / "started").exists, JOB_START, "the script running in the SLURM job")
    first = wait_for(lambda: _one_running(slurm), 30, "the daemon's job in squeue")
    (job,) = daemon.jobs()
    assert job["state"] == "running"

    slurm.cancel(first.id)
    # The script runs again from its start on the new worker: quickly this time.
    (control / "slow").unlink()
    second = wait_for(
        lambda: _one_running(slurm, other_than=first.id), JOB_START, "a job replacing it"
    )
    assert second.id != first.id
    daemon.wait_settled({LABEL}, timeout=JOB_START + 60)
    assert complete(lab, LABEL)
    assert slurm.state(first.id) == "CANCELLED"
    # Dask ran the lost task again: the daemon's job itself never failed.
    (job,) = daemon.jobs()
    assert job["attempts"] == 1 and job["last_error"] is None
    assert "batch job(s) of the Dask cluster ended: submitting again" in daemon.log_text()
