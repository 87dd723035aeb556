"""The real daemon (``sinagot daemon CONFIG``) against the XNAT emulator: end to end."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import xnat

from daemon_support import listening, listening_tcp, wait_for
from daemon_xnat_support import (
    PIPELINE,
    PROJECT,
    SINAGOT,
    STEPS,
    XnatDaemon,
    add_session,
    assert_worker_script_uses_tls,
    complete,
    derivatives,
    file_puts,
    on_slurm,
    raw_signal,
    write_project,
)
from dask_attacker import assert_refused, attack
from fake_slurm import FakeSlurm
from sinagot import Dataset
from sinagot.testing import EmulatorServer
from sinagot.testing.pytest_plugin import XNAT_PASSWORD, XNAT_USER

StartDaemon = Callable[[Path], XnatDaemon]


@pytest.fixture
def start_daemon(tmp_path: Path) -> Iterator[StartDaemon]:
    started: list[XnatDaemon] = []

    def start(config: Path) -> XnatDaemon:
        daemon = XnatDaemon(tmp_path, config)
        started.append(daemon)
        return daemon.start()

    yield start
    for daemon in started:
        daemon.ensure_stopped()


def _labels(step: str) -> str:
    return f"{step}___at___{PIPELINE}"


def test_new_session_from_xnatpy_is_processed_and_readable(
    tmp_path: Path, lab: EmulatorServer, start_daemon: StartDaemon
) -> None:
    add_session(lab, "REC-200101-A")
    config, _ = write_project(tmp_path, lab.url)
    daemon = start_daemon(config)
    daemon.wait_settled({"REC-200101-A"})

    # A session uploaded with the real client while the daemon runs; and one it must ignore.
    source = tmp_path / "raw.csv"
    source.write_bytes(raw_signal("REC-200102-B"))
    with xnat.connect(lab.url, user=XNAT_USER, password=XNAT_PASSWORD, loglevel="ERROR") as xs:
        project = xs.projects[PROJECT]
        for label in ("REC-200102-B", "phantom-test"):
            subject = xs.classes.SubjectData(parent=project, label=f"S-{label}")
            experiment = xs.classes.MrSessionData(parent=subject, label=label)
            scan = xs.classes.MrScanData(parent=experiment, id="1", type="RS")
            scan.create_resource("EEG").upload(str(source), "raw.csv")
    # Uploaded piece by piece, the session may first be seen without its scan: wait
    # for the derivatives, not just for a finished job.
    wait_for(lambda: complete(lab, "REC-200102-B"), what="REC-200102-B processed")
    daemon.wait_settled({"REC-200101-A", "REC-200102-B"})
    wait_for(
        lambda: "'phantom-test'" in daemon.log_text(),
        what="the unmatched session ignored",
    )

    with xnat.connect(lab.url, user=XNAT_USER, password=XNAT_PASSWORD, loglevel="ERROR") as xs:
        experiment = xs.projects[PROJECT].experiments["REC-200102-B"]
        # FrameTree's layout: a column's files alone, the provenance in PROVENANCE.
        resource = experiment.resources[_labels("RS_EEG_filter")]
        assert sorted(resource.files.keys()) == ["filtered.csv"]
        filtered = tmp_path / "filtered.csv"
        resource.files["filtered.csv"].download(str(filtered), verbose=False)
        assert filtered.read_bytes() == raw_signal("REC-200102-B").upper()
        document = tmp_path / "provenance.json"
        marker = experiment.resources["PROVENANCE"].files[f"{_labels('RS_EEG_filter')}.json"]
        marker.download(str(document), verbose=False)
        provenance = json.loads(document.read_text())
        assert provenance["status"] == "success"
        assert provenance["script"]["name"] == "filter"
        assert provenance["outputs"] == {
            "RS/EEG/filtered.csv": hashlib.md5(filtered.read_bytes()).hexdigest()
        }
        assert provenance["inputs"] == {
            "REC-200102-B/RS/EEG/raw.csv": hashlib.md5(source.read_bytes()).hexdigest()
        }
        stats = experiment.resources[_labels("RS_EEG_stats")]
        assert sorted(stats.files.keys()) == ["stats.json"]

    status = json.loads(
        subprocess.run(
            [SINAGOT, "status", "--json", "--socket", str(daemon.socket)],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        ).stdout
    )
    (dataset,) = status["datasets"]
    assert dataset["name"] == "lab" and dataset["health"] == "ok"
    # A listing taken during our own uploads may still send a job round once more.
    assert sum(dataset["jobs"].values()) == 2 and dataset["jobs"]["failed"] == 0
    assert daemon.stop() == 0


def test_up_to_date_session_is_not_rerun_after_restart_and_cache_wipe(
    tmp_path: Path, lab: EmulatorServer, start_daemon: StartDaemon
) -> None:
    labels = {"REC-200101-A", "REC-200101-B"}
    for label in labels:
        add_session(lab, label)
    config, _ = write_project(tmp_path, lab.url)
    daemon = start_daemon(config)
    daemon.wait_settled(labels)
    assert daemon.stop() == 0
    uploads = file_puts(lab)
    assert uploads == len(labels) * len(STEPS) * 2  # one output + provenance per step
    before = {label: derivatives(lab, label) for label in labels}

    # A fresh machine: no journal, no cache, no work tree; the server already has it all.
    for name in ("state", "cache", "lab/work"):
        shutil.rmtree(tmp_path / name)
    daemon = start_daemon(config)
    daemon.wait_settled(labels)
    wait_for(lambda: "ran 0" in daemon.log_text(), what="the jobs' summaries")
    assert daemon.stop() == 0
    assert file_puts(lab) == uploads
    assert {label: derivatives(lab, label) for label in labels} == before
    assert "ran 0, skipped 2, failed 0, uploaded 0" in daemon.log_text()


# `sinagot daemon` in a process where dask-jobqueue cannot be imported, installed or not.
_WITHOUT_JOBQUEUE = (
    "import sys; sys.modules['dask_jobqueue'] = None; "
    "from sinagot.cli import main; sys.exit(main(sys.argv[1:]))"
)


def _start_failure(
    config: Path, command: tuple[str, ...] = (SINAGOT,)
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*command, "daemon", str(config)], capture_output=True, text=True, timeout=60, check=False
    )


def test_configs_the_daemon_cannot_follow_are_refused_at_start(
    tmp_path: Path, lab: EmulatorServer
) -> None:
    config, _ = write_project(tmp_path, lab.url)
    text = config.read_text()

    (config.parent / "work").mkdir()
    local = config.with_name("local.toml")
    local.write_text(text.replace('type = "xnat"', 'type = "local"'))
    result = _start_failure(local)
    assert result.returncode == 1
    assert "the daemon follows XNAT servers" in result.stderr
    assert "sinagot run CONFIG" in result.stderr

    slurm = config.with_name("slurm.toml")
    slurm.write_text(text)
    on_slurm(slurm)
    result = _start_failure(slurm, (sys.executable, "-c", _WITHOUT_JOBQUEUE))
    assert result.returncode == 2
    assert "pip install dask-jobqueue" in result.stderr
    assert result.stderr.count("\n") == 1


def test_scripts_run_on_a_jobqueue_cluster_whose_jobs_are_cancelled_at_stop(
    tmp_path: Path, lab: EmulatorServer
) -> None:
    pytest.importorskip("dask_jobqueue")
    slurm = FakeSlurm(tmp_path / "slurm")
    add_session(lab, "REC-200301-A")
    config, _ = write_project(tmp_path, lab.url)
    on_slurm(config)
    daemon = XnatDaemon(tmp_path, config)
    daemon.extra_env.update(slurm.env())
    try:
        daemon.start()
        # The cluster has no worker but the batch job's: the scripts can only run there.
        daemon.wait_settled({"REC-200301-A"}, timeout=120)
        assert complete(lab, "REC-200301-A")
        (job,) = slurm.submitted()
        assert_worker_script_uses_tls(slurm.job_script(job), tmp_path / "state")
        # Nobody else runs code through the daemon's scheduler or the batch job's worker.
        job_pid = int((slurm.spool / f"{job}.pid").read_text())
        ports = {port for _, port in listening(daemon.pid) | listening(job_pid)}
        marker = tmp_path / "planted"
        assert_refused(attack(ports, marker), marker)
        assert slurm.alive() == [job]
        assert daemon.stop() == 0
        assert slurm.cancelled() == [job]
        wait_for(lambda: not slurm.alive(), 30, "the batch job's end")
    finally:
        daemon.ensure_stopped()
        slurm.kill_all()


_KEEPS_SIGINT = """
import signal, sys
from sinagot.config import DaskSettings
from sinagot.engine.internals import check_available

def handler(signum, frame):
    pass

signal.signal(signal.SIGINT, handler)
check_available(DaskSettings(jobqueue="slurm"))
assert "dask_jobqueue" in sys.modules
sys.exit(0 if signal.getsignal(signal.SIGINT) is handler else 3)
"""


def test_importing_dask_jobqueue_keeps_the_daemons_sigint_handler() -> None:
    # dask_jobqueue installs a SIGINT handler that exits the process when imported.
    pytest.importorskip("dask_jobqueue")
    result = subprocess.run(
        [sys.executable, "-c", _KEEPS_SIGINT], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr


def test_one_cluster_for_the_daemons_lifetime_across_a_reload(
    tmp_path: Path, lab: EmulatorServer, start_daemon: StartDaemon
) -> None:
    add_session(lab, "REC-200101-A")
    config, _ = write_project(tmp_path, lab.url)
    daemon = start_daemon(config)
    daemon.wait_settled({"REC-200101-A"})
    reloaded = subprocess.run(
        [SINAGOT, "reload", "--socket", str(daemon.socket)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert reloaded.returncode == 0, reloaded.stderr
    add_session(lab, "REC-200101-B")
    wait_for(lambda: complete(lab, "REC-200101-B"), what="REC-200101-B processed")
    daemon.wait_settled({"REC-200101-A", "REC-200101-B"})
    # The cluster runs any code sent to its scheduler: nothing of it faces the network.
    assert listening_tcp(daemon.pid)
    assert {host for host, _ in listening_tcp(daemon.pid)} == {"127.0.0.1"}
    assert daemon.stop() == 0
    log = daemon.log_text()
    assert log.count("Dask LocalCluster started") == 1
    assert log.count("Dask cluster closed") == 1
    assert log.index("Dask cluster closed") > log.index("stop requested")


def test_a_fresh_work_tree_downloads_none_of_the_daemons_derivatives(
    tmp_path: Path, lab: EmulatorServer, start_daemon: StartDaemon
) -> None:
    add_session(lab, "REC-200101-A")
    config, _ = write_project(tmp_path, lab.url)
    daemon = start_daemon(config)
    daemon.wait_settled({"REC-200101-A"})
    assert daemon.stop() == 0

    # The library on the daemon's cache, in a new work tree: its inputs were cached by
    # the daemon's downloads, its derivatives and their provenance by the daemon's uploads.
    fresh = config.with_name("fresh.toml")
    fresh.write_text(config.read_text().replace('dataset = "work"', 'dataset = "fresh"'))
    lab.reset_counters()
    report = Dataset(fresh).run()
    assert (report.ran, report.skipped, report.failed) == (0, len(STEPS), 0), str(report)
    gets = [route for route in lab.request_counts() if route.startswith("GET ")]
    assert not [route for route in gets if "/files/" in route], lab.request_counts()
    filtered = tmp_path / "lab" / "fresh" / "REC-200101-A" / "derivatives" / "RS" / "EEG"
    assert (filtered / "filtered.csv").read_bytes() == raw_signal("REC-200101-A").upper()
