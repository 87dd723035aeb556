"""The Dask runner on a real LocalCluster: same results as the serial runner."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from distributed import LocalCluster

from foundation_support import TWO_RECORDS, config_for, write_project
from sinagot import Dataset, RunReport, StepStatus
from sinagot.config import DaskSettings
from sinagot.demo import DEMO_CONFIG, DEMO_SCRIPTS
from sinagot.engine.internals import local_cluster_options

A, B = TWO_RECORDS

# The scheduler's HTTP server falls back to a free port when 8787 is taken: harmless here.
pytestmark = pytest.mark.filterwarnings("ignore:Port 8787 is already in use")


@pytest.fixture(scope="module")
def cluster() -> Iterator[LocalCluster]:
    with LocalCluster(
        **local_cluster_options(DaskSettings(n_workers=2, threads_per_worker=1, processes=False))
    ) as local:
        yield local


def _dask_config(address: str) -> str:
    return DEMO_CONFIG.replace('mode = "main_process"', 'mode = "dask"').replace(
        "n_workers = 2\nthreads_per_worker = 1\nprocesses = false\n", f'address = "{address}"\n'
    )


def _statuses(report: RunReport) -> dict[str, str]:
    return {str(r.key): str(r.status) for r in report.results}


def _derivatives(root: Path) -> dict[str, bytes]:
    files: dict[str, bytes] = {}
    for path in sorted((root / "data").rglob("*")):
        relative = path.relative_to(root / "data")
        if path.is_file() and "derivatives" in relative.parts and ".logs" not in relative.parts:
            data = path.read_bytes()
            if ".provenance" in relative.parts:
                document = json.loads(data)
                data = json.dumps(
                    [document["inputs"], document["outputs"], document["parameters"]]
                ).encode()
            files[relative.as_posix()] = data
    return files


FLAKY = DEMO_SCRIPTS["clinical/score.py"].replace(
    "    def run(self):\n",
    "    def run(self):\n        if self.id == 'REC-200331-B' and self.task == 'RS':\n            raise ValueError('no answers')\n",
)


def test_dask_results_identical_to_serial(tmp_path: Path, cluster: LocalCluster) -> None:
    scripts = {**DEMO_SCRIPTS, "clinical/score.py": FLAKY}
    serial = Dataset(write_project(tmp_path / "serial", scripts=scripts))
    dask = Dataset(
        write_project(
            tmp_path / "dask", scripts=scripts, config=_dask_config(cluster.scheduler_address)
        )
    )
    serial_report, dask_report = serial.run(), dask.run()
    assert dask_report.mode == "dask"
    assert _statuses(dask_report) == _statuses(serial_report)
    assert dask_report.failed == 1 and dask_report.ran == 19
    assert "ValueError: no answers" in dask_report.errors[f"{B}/RS/clinical/score"]
    assert _derivatives(tmp_path / "dask") == _derivatives(tmp_path / "serial")
    assert [r.key for r in dask_report.results] == [r.key for r in serial_report.results]

    again = dask.run()
    assert (again.ran, again.skipped, again.failed) == (0, 19, 1)
    raw = tmp_path / "dask" / "data" / A / "HDC" / "EEG" / "raw.csv"
    raw.write_text(raw.read_text().replace("0.00000,", "0.00000,1", 1))
    ran = {str(r.key) for r in dask.run().results if r.status is StepStatus.RAN}
    assert ran == {f"{A}/HDC/EEG/preprocess", f"{A}/HDC/EEG/spectrum"}


def test_upstream_failure_on_dask(tmp_path: Path, cluster: LocalCluster) -> None:
    broken = DEMO_SCRIPTS["EEG/preprocess.py"].replace(
        "    def run(self):\n", "    def run(self):\n        raise OSError('disk')\n"
    )
    config = config_for(
        {"EEG": ["preprocess", "spectrum"]},
        {"RS": ["EEG"]},
        f'[run]\nmode = "dask"\n[dask]\naddress = "{cluster.scheduler_address}"\n',
    )
    ds = Dataset(
        write_project(
            tmp_path, config=config, scripts={**DEMO_SCRIPTS, "EEG/preprocess.py": broken}
        )
    )
    statuses = _statuses(ds.run())
    assert statuses == {
        f"{A}/RS/EEG/preprocess": "failed",
        f"{A}/RS/EEG/spectrum": "skipped: upstream failed",
        f"{B}/RS/EEG/preprocess": "failed",
        f"{B}/RS/EEG/spectrum": "skipped: upstream failed",
    }


def test_local_cluster_from_config_is_started_and_closed(tmp_path: Path) -> None:
    config = DEMO_CONFIG.replace('mode = "main_process"', 'mode = "dask"')
    ds = Dataset(write_project(tmp_path, config=config, records=(A,)))
    report = ds.get(A).RS.run()
    assert report.mode == "dask" and report.ran == 3


KILLER = """
import os
import signal
from pathlib import Path

from sinagot import ScriptTemplate

class Script(ScriptTemplate):
    PATH_IN = ("{id}", "{task}", "clinical", "answers.json")
    PATH_OUT = ("{id}", "derivatives", "{task}", "clinical", "copy.json")

    def run(self):
        marker = Path(os.environ["SINAGOT_TEST_KILL_MARKER"])
        if self.id == "REC-200331-A" and not marker.exists():
            marker.write_text("killed once")
            os.kill(os.getpid(), signal.SIGKILL)
        self.path.output.write_bytes(self.path.input.read_bytes())
"""


def test_worker_killed_mid_task_is_retried_and_reported(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    marker = tmp_path / "killed"
    monkeypatch.setenv("SINAGOT_TEST_KILL_MARKER", str(marker))
    options = local_cluster_options(DaskSettings(n_workers=2, threads_per_worker=1, processes=True))
    # The cluster's own throwaway certificate, as a lab would give its scheduler's.
    pem = tmp_path / "dask.pem"
    pem.write_text(options["security"].tls_ca_file + options["security"].tls_client_key)
    with LocalCluster(**options) as local:
        config = config_for(
            {"clinical": ["copy"]},
            {"RS": ["clinical"]},
            f'[run]\nmode = "dask"\n[dask]\naddress = "{local.scheduler_address}"\n'
            f'tls_ca_file = "{pem}"\ntls_cert = "{pem}"\n',
        )
        ds = Dataset(write_project(tmp_path, config=config, scripts={"clinical/copy.py": KILLER}))
        report = ds.run()
    assert marker.exists()
    assert _statuses(report) == {f"{A}/RS/clinical/copy": "ran", f"{B}/RS/clinical/copy": "ran"}
    assert report.retried == 1
    assert "1 retried after a worker died" in str(report)
    copy = tmp_path / "data" / A / "derivatives" / "RS" / "clinical" / "copy.json"
    assert (
        copy.read_bytes()
        == (tmp_path / "data" / A / "RS" / "clinical" / "answers.json").read_bytes()
    )
