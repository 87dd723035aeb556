"""A Sinagot 0.1 dataset over XNAT (the emulator), through the library and the daemon.

The mapping: record ``<id>``'s files for task T and modality M are in session ``<id>``,
scan of type T, resource M, which holds what the PATH_IN patterns name by their last
component (a file, or a folder such as ``x.eeg/``); outputs go up as derivative
resources holding the last component of each PATH_OUT, provenance in PROVENANCE.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
import xnat

from daemon_support import daemon_table
from daemon_xnat_support import XnatDaemon, _toml, provenances
from daemon_xnat_support import derivatives as server_derivatives
from sinagot import Dataset, StepStatus
from sinagot.testing import EmulatorServer
from sinagot.testing.pytest_plugin import XNAT_PASSWORD, XNAT_USER
from v01_support import CONFIG, A, B, write_v01_dataset

PROJECT = "LAB"


def _xnat_config(tmp: Path, url: str, daemon: bool = False) -> Path:
    """The 0.1 dataset's config, its data on the emulator, its work tree in ``work``."""
    root = write_v01_dataset(tmp / "lab")
    shutil.rmtree(root / "data")
    store = {
        "type": "xnat",
        "server": url,
        "project": PROJECT,
        "user": XNAT_USER,
        "password": XNAT_PASSWORD,
        "cache_dir": tmp / "cache",
        "race_condition_delay": 1.0,
    }
    lines = ["[store]", *(f"{k} = {_toml(v)}" for k, v in store.items())]
    if daemon:
        table = daemon_table(tmp, job_timeout=60.0, max_attempts=1)
        lines += ["[daemon]", *(f"{k} = {_toml(v)}" for k, v in table.items())]
    config = CONFIG.replace("data = './data'", "data = './work'")
    (root / "dataset.toml").write_text(config + "\n" + "\n".join(lines) + "\n")
    return root


def _seed(server: EmulatorServer) -> None:
    server.create_project(PROJECT)
    for record, tasks in ((A, ("RS", "MMN")), (B, ("RS",))):
        server.create_session(PROJECT, record)
        for task in tasks:
            server.add_scan_file(
                PROJECT,
                record,
                scan_type=task,
                resource="EEG",
                name=f"{record}-{task}.eeg/signal.txt",
                data=f"signal of {record} {task}\n".encode(),
            )
    answers = {A: b"1 2 3\n", B: b"4 5\n"}
    for record, data in answers.items():
        server.add_scan_file(
            PROJECT, record, scan_type="Q", resource="survey", name="answers.txt", data=data
        )
    # A session that is no record.
    server.create_session(PROJECT, "phantom")


def _expected_derivatives(record: str) -> dict[str, list[str]]:
    tasks = ("RS", "MMN") if record == A else ("RS",)
    expected = {f"{t}_EEG_clean___at___sinagot": [f"{record}-{t}.txt"] for t in tasks}
    expected["RS_EEG_power___at___sinagot"] = ["RS-power.txt"]
    expected["Q_survey_score___at___sinagot"] = ["survey-score.txt"]
    expected["Q_survey_norm___at___sinagot"] = ["survey-norm.txt"]
    return expected


def test_the_library_runs_a_01_dataset_against_xnat(
    tmp_path: Path, xnat_server: EmulatorServer
) -> None:
    _seed(xnat_server)
    root = _xnat_config(tmp_path, xnat_server.url)
    ds = Dataset(root)
    assert ds.ids() == [A, B]
    report = ds.run()
    assert report.ok and report.ran == 9, report.errors
    work = root / "work"
    # Inputs placed where PATH_IN says, outputs where PATH_OUT says.
    assert (work / "RAW" / f"{A}-RS.eeg" / "signal.txt").read_text() == f"signal of {A} RS\n"
    assert (work / "CLEAN" / f"{A}-RS.txt").read_text() == f"SIGNAL OF {A} RS\n"
    assert (work / "OUT" / B / "survey-norm.txt").read_text() == "norm 9"
    for record in (A, B):
        stored = server_derivatives(xnat_server, record)
        assert {label: sorted(files) for label, files in stored.items()} == _expected_derivatives(
            record
        )
        marks = provenances(xnat_server, record)
        assert set(marks) == set(_expected_derivatives(record))
        assert marks["RS_EEG_power___at___sinagot"]["folder"] == f"OUT/{record}"
    assert Dataset(root).run().ran == 0

    # A fresh work tree: the upstream step's output comes back from the server to where
    # the downstream step reads it, and nothing runs again.
    shutil.rmtree(work)
    again = Dataset(root).get(A).run("power")
    assert again.ran == 0 and again.ok, again.errors
    assert (work / "CLEAN" / f"{A}-RS.txt").read_text() == f"SIGNAL OF {A} RS\n"


def test_a_folder_output_is_held_by_its_name(tmp_path: Path, xnat_server: EmulatorServer) -> None:
    _seed(xnat_server)
    root = _xnat_config(tmp_path, xnat_server.url)
    (root / "scripts" / "EEG" / "power.py").write_text(
        "from sinagot import ScriptTemplate\n\n"
        "class Script(ScriptTemplate):\n"
        '    PATH_IN = ("CLEAN", "{id}-{task}.txt")\n'
        '    PATH_OUT = ("OUT", "{id}", "bands")\n\n'
        "    def run(self):\n"
        "        self.path.output.mkdir()\n"
        '        (self.path.output / "alpha.txt").write_text("a")\n'
        '        (self.path.output / "beta.txt").write_text("b")\n'
    )
    assert Dataset(root).get(B).RS.run().ok
    stored = server_derivatives(xnat_server, B)["RS_EEG_power___at___sinagot"]
    assert sorted(stored) == ["bands/alpha.txt", "bands/beta.txt"]
    # ... and comes back into its folder in a fresh work tree (for a step reading it).
    shutil.rmtree(root / "work")
    (root / "scripts" / "EEG" / "report.py").write_text(
        "from sinagot import ScriptTemplate\n\n"
        "class Script(ScriptTemplate):\n"
        '    PATH_IN = ("OUT", "{id}", "bands")\n'
        '    PATH_OUT = ("OUT", "{id}", "report.txt")\n\n'
        "    def run(self):\n"
        "        names = sorted(p.name for p in self.path.input.iterdir())\n"
        '        self.path.output.write_text(" ".join(names))\n'
    )
    config = root / "dataset.toml"
    config.write_text(config.read_text().replace("['power']", "['power', 'report']"))
    report = Dataset(root).get(B).RS.run("report")
    assert report.ran == 1 and report.ok, report.errors
    assert (root / "work" / "OUT" / B / "report.txt").read_text() == "alpha.txt beta.txt"


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[list[XnatDaemon]]:
    started: list[XnatDaemon] = []
    yield started
    for process in started:
        process.ensure_stopped()


def test_the_daemon_runs_a_01_dataset_against_xnat(
    tmp_path: Path, xnat_server: EmulatorServer, daemon: list[XnatDaemon]
) -> None:
    _seed(xnat_server)
    root = _xnat_config(tmp_path, xnat_server.url, daemon=True)
    process = XnatDaemon(tmp_path, root / "dataset.toml")
    daemon.append(process)
    process.start()
    jobs = process.wait_settled({A, B}, timeout=120.0)
    assert all(job["state"] == "done" for job in jobs)
    for record in (A, B):
        stored = server_derivatives(xnat_server, record)
        assert {label: sorted(files) for label, files in stored.items()} == _expected_derivatives(
            record
        )
        assert set(provenances(xnat_server, record)) == set(_expected_derivatives(record))
    process.stop()


def test_a_provenance_folder_from_the_server_never_leaves_the_work_tree(
    tmp_path: Path, xnat_server: EmulatorServer
) -> None:
    # The server (or whoever can write to it) names where a derivative's files go back:
    # a folder climbing out of the work tree is refused, and the step runs again instead.
    _seed(xnat_server)
    root = _xnat_config(tmp_path, xnat_server.url)
    assert Dataset(root).get(A).RS.run().ok
    label = "RS_EEG_clean___at___sinagot"
    document = provenances(xnat_server, A)[label]
    document["folder"] = "../../../../escape"
    tampered = tmp_path / "tampered.json"
    tampered.write_text(json.dumps(document))
    with xnat.connect(
        xnat_server.url, user=XNAT_USER, password=XNAT_PASSWORD, loglevel="ERROR"
    ) as session:
        resource = session.projects[PROJECT].experiments[A].resources["PROVENANCE"]
        resource.upload(str(tampered), f"{label}.json", overwrite=True)
    shutil.rmtree(root / "work")
    report = Dataset(root).get(A).RS.run()
    assert report.ok, report.errors
    assert {r.key.script: r.status for r in report.results}["clean"] == StepStatus.RAN
    assert not list(tmp_path.glob("**/escape*"))
    assert provenances(xnat_server, A)[label]["folder"] == "CLEAN"
