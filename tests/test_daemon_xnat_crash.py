"""SIGKILL the real daemon in each phase of a job; after a restart everything completes once.

Each phase is reached deterministically (a stalled download, a slow script, a stalled
upload), observed through the control socket, and the daemon is killed there.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from daemon_support import wait_for
from daemon_xnat_support import (
    PIPELINE,
    PROJECT,
    STEPS,
    XnatDaemon,
    add_session,
    derivatives,
    file_puts,
    provenances,
    write_project,
)
from sinagot.testing import EmulatorServer, FaultRule

LABEL = "REC-200101-A"
# One output and one provenance per step.
COMPLETE_UPLOADS = len(STEPS) * 2


@pytest.fixture
def lab(xnat_server: EmulatorServer) -> EmulatorServer:
    xnat_server.create_project(PROJECT)
    add_session(xnat_server, LABEL)
    return xnat_server


def _start(tmp_path: Path, config: Path, daemons: list[XnatDaemon]) -> XnatDaemon:
    daemon = XnatDaemon(tmp_path, config)
    daemons.append(daemon)
    return daemon.start()


def _in_state(daemon: XnatDaemon, state: str) -> dict[str, object] | None:
    return next(iter(daemon.jobs(state=state)), None)


def _assert_complete(server: EmulatorServer, tmp_path: Path) -> None:
    """Every derivative has its outputs and, last, a provenance that matches them."""
    found = derivatives(server, LABEL)
    assert sorted(found) == sorted(f"{step}___at___{PIPELINE}" for step in STEPS)
    markers = provenances(server, LABEL)
    for label, files in found.items():
        assert label in markers, label
        resource = next(
            r
            for r in server.store.resources(_owner(server))
            if r.label == label  # the index, not a client: what the server really holds
        )
        outputs = markers[label]["outputs"]
        # The resource holds the outputs relative to their folder (RS/EEG).
        assert {f"RS/EEG/{name}": md5 for name, md5 in files.items()} == outputs
        for name, md5 in files.items():
            stored = server.store.find_file(resource.id, name)
            assert stored is not None
            assert hashlib.md5(stored.disk_path.read_bytes()).hexdigest() == md5
    del tmp_path


def _owner(server: EmulatorServer) -> object:
    from sinagot.testing import Owner

    experiment = server.store.find_experiment(PROJECT, LABEL)
    assert experiment is not None
    return Owner("experiment", experiment.id)


def _runs(daemon: XnatDaemon, step: str) -> int:
    return daemon.log_text().count(f"Begin step run {LABEL}/{step}")


def _finish_after_restart(
    tmp_path: Path, config: Path, daemons: list[XnatDaemon], lab: EmulatorServer
) -> XnatDaemon:
    daemon = _start(tmp_path, config, daemons)
    (job,) = daemon.wait_settled({LABEL})
    details = [t["detail"] for t in daemon.call("job", job["id"])["history"]]
    assert "resumed after a daemon restart" in details
    assert "resumed as attempt 2 started" in details  # the killed attempt counted
    assert daemon.stop() == 0
    _assert_complete(lab, tmp_path)
    return daemon


def test_kill_while_fetching(
    tmp_path: Path, lab: EmulatorServer, daemons: list[XnatDaemon]
) -> None:
    lab.set_faults([FaultRule("latency", path=r"/files/raw\.csv$", method="GET", delay=60)])
    config, _ = write_project(tmp_path, lab.url, {"max_attempts": 3})
    daemon = _start(tmp_path, config, daemons)
    wait_for(lambda: _in_state(daemon, "fetching"), what="the job fetching")
    wait_for(lambda: lab.fault_counts().get("latency"), what="the download under way")
    daemon.kill()
    assert derivatives(lab, LABEL) == {}

    lab.set_faults([])
    daemon = _finish_after_restart(tmp_path, config, daemons, lab)
    assert file_puts(lab) == COMPLETE_UPLOADS
    assert _runs(daemon, "RS/EEG/filter") == 1


def test_kill_while_a_script_runs(
    tmp_path: Path, lab: EmulatorServer, daemons: list[XnatDaemon]
) -> None:
    config, control = write_project(tmp_path, lab.url, {"max_attempts": 3})
    (control / "slow").write_text("60")
    daemon = _start(tmp_path, config, daemons)
    wait_for(lambda: (control / "started").exists(), what="the script running")
    assert _in_state(daemon, "running") is not None
    daemon.kill()
    assert derivatives(lab, LABEL) == {}

    (control / "slow").unlink()
    daemon = _finish_after_restart(tmp_path, config, daemons, lab)
    assert file_puts(lab) == COMPLETE_UPLOADS
    # Killed once mid-way, then run to the end once; its dependent ran once.
    assert _runs(daemon, "RS/EEG/filter") == 2
    assert _runs(daemon, "RS/EEG/stats") == 1
    # The killed run left nothing behind in the work tree's staging area.
    staging = tmp_path / "lab" / "work" / LABEL / "derivatives" / ".staging"
    assert not staging.exists() or not any(p for p in staging.iterdir() if p.is_dir())


def test_kill_while_uploading(
    tmp_path: Path, lab: EmulatorServer, daemons: list[XnatDaemon]
) -> None:
    stalled = f"RS_EEG_stats___at___{PIPELINE}"
    lab.set_faults(
        [FaultRule("latency", path=rf"/resources/{stalled}/files/", method="PUT", delay=60)]
    )
    config, _ = write_project(tmp_path, lab.url, {"max_attempts": 3})
    daemon = _start(tmp_path, config, daemons)
    wait_for(lambda: _in_state(daemon, "uploading"), what="the job uploading")
    wait_for(lambda: lab.fault_counts().get("latency"), what="the stalled upload")
    daemon.kill()
    # The first derivative is complete; the stalled one is not visible as complete.
    markers = provenances(lab, LABEL)
    assert f"RS_EEG_filter___at___{PIPELINE}" in markers
    assert stalled not in markers

    lab.set_faults([])
    daemon = _finish_after_restart(tmp_path, config, daemons, lab)
    # The stalled output is sent again (its first request never completed); nothing else is.
    assert file_puts(lab) == COMPLETE_UPLOADS + 1
    # The scripts did not run again: their pending results were published.
    assert _runs(daemon, "RS/EEG/filter") == 1
    assert _runs(daemon, "RS/EEG/stats") == 1


def test_sigterm_while_a_script_runs_stops_in_time_and_resumes(
    tmp_path: Path, lab: EmulatorServer, daemons: list[XnatDaemon]
) -> None:
    config, control = write_project(tmp_path, lab.url, {"max_attempts": 1, "shutdown_timeout": 1.0})
    (control / "slow").write_text("30")
    daemon = _start(tmp_path, config, daemons)
    wait_for(lambda: (control / "started").exists(), what="the script running")
    assert daemon.stop() == 0  # well before the script would end
    assert "did not finish within 1 s: cancelled" in daemon.log_text()
    assert derivatives(lab, LABEL) == {}

    # The interrupted attempt was given back: with max_attempts = 1 the job still runs.
    (control / "slow").unlink()
    daemon = _start(tmp_path, config, daemons)
    daemon.wait_settled({LABEL})
    assert daemon.stop() == 0
    _assert_complete(lab, tmp_path)


def test_a_job_that_kills_the_daemon_fails_after_max_attempts(
    tmp_path: Path, lab: EmulatorServer, daemons: list[XnatDaemon]
) -> None:
    config, control = write_project(tmp_path, lab.url, {"max_attempts": 2})
    (control / "crash").write_text("")
    for attempt in (1, 2):
        # Like systemd's Restart=on-failure: each start resumes the job, which kills it.
        daemon = XnatDaemon(tmp_path, config)
        daemons.append(daemon)
        daemon.start(wait=False)
        assert daemon.proc is not None
        assert daemon.proc.wait(60) == -9, f"attempt {attempt}:\n{daemon.log_text()}"

    daemon = _start(tmp_path, config, daemons)
    (job,) = daemon.wait_settled({LABEL}, state="failed")
    assert job["attempts"] == 2
    assert "the daemon stopped during each of 2 attempt(s), last while running" in job["last_error"]
    assert f"sinagot retry {job['id']}" in job["last_error"]
    assert daemon.proc is not None and daemon.proc.poll() is None  # still serving

    (control / "crash").unlink()
    daemon.call("retry", job["id"])
    daemon.wait_settled({LABEL})
    assert daemon.stop() == 0
    _assert_complete(lab, tmp_path)
