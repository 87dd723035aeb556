"""One host's cache shared by Dask worker processes: several pipelines, one download.

Three pipelines (configs) of a lab follow the same XNAT project with one cache
folder. Each runs through the engine (``Dataset.run``) in its own worker process
of a LocalCluster (TLS, as Sinagot starts them), all at once: their scripts read
the same cached entry, and the server serves its file once.
"""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path

from distributed import Client, LocalCluster

from daemon_xnat_support import PROJECT, STEPS, add_session, raw_signal, write_project
from sinagot import Dataset
from sinagot.config import DaskSettings
from sinagot.engine.internals import local_cluster_options
from sinagot.testing import EmulatorServer, FaultRule

LABEL = "REC-200101-A"
PIPELINES = ("alpha", "beta", "gamma")
LINES = 20_000


def _run_when_all_ready(config: str, gate: str, parties: int) -> dict[str, object]:
    """In a worker process: wait for the other pipelines, then run this one's engine
    (its scripts run in this process); what its first script wrote, and who ran it."""
    Path(gate, str(os.getpid())).touch()
    deadline = time.monotonic() + 60
    while len(os.listdir(gate)) < parties and time.monotonic() < deadline:
        time.sleep(0.01)
    report = Dataset(config).run()
    output = Path(config).parent / "work" / LABEL / "derivatives" / "RS" / "EEG" / "filtered.csv"
    return {
        "pid": os.getpid(),
        "ok": report.ok,
        "ran": report.ran,
        "md5": hashlib.md5(output.read_bytes()).hexdigest(),
    }


def test_pipelines_in_worker_processes_share_one_download(
    tmp_path: Path, xnat_server: EmulatorServer
) -> None:
    xnat_server.create_project(PROJECT)
    add_session(xnat_server, LABEL, lines=LINES)
    expected = hashlib.md5(raw_signal(LABEL, LINES).upper()).hexdigest()
    # A slow body: the first process is still downloading when the others ask for the
    # entry. The fault's count is the number of times the server sent the file.
    xnat_server.set_faults(
        [FaultRule("trickle", path=r"/raw\.csv$", method="GET", chunk_size=32_768, delay=0.05)]
    )
    # One cache for the host, whichever pipeline fetches.
    shared = {"cache_dir": tmp_path / "cache"}
    configs = [
        write_project(tmp_path / name, xnat_server.url, store={**shared, "pipeline": name})[0]
        for name in PIPELINES
    ]
    gate = tmp_path / "gate"
    gate.mkdir()
    options = local_cluster_options(
        DaskSettings(n_workers=len(PIPELINES), threads_per_worker=1, processes=True)
    )
    with LocalCluster(**options) as cluster, Client(cluster) as client:
        workers = sorted(client.scheduler_info()["workers"])
        futures = [
            client.submit(
                _run_when_all_ready,
                str(config),
                str(gate),
                len(PIPELINES),
                workers=[worker],
                pure=False,
            )
            for config, worker in zip(configs, workers, strict=True)
        ]
        results = client.gather(futures)

    assert len({result["pid"] for result in results}) == len(PIPELINES)
    assert all(result["ok"] and result["ran"] == len(STEPS) for result in results), results
    assert {result["md5"] for result in results} == {expected}
    assert xnat_server.fault_counts() == {"trickle": 1}
