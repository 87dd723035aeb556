"""Quiet, useful logs and output: ignored sessions summed up, one error per broken script,
grouped report errors, readable job tables, and journals of older versions."""

from __future__ import annotations

import json
import logging
import os
import re
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from daemon_support import DaemonProcess, add_session, daemon_table, wait_for, write_config
from foundation_support import config_for, write_project
from sinagot import Dataset
from sinagot.daemon.internals import SCHEMA_VERSION
from terminal_support import run_on_terminal

SINAGOT = str(Path(sys.executable).with_name("sinagot"))

StartDaemon = Callable[..., DaemonProcess]


def cli(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [SINAGOT, *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={**os.environ, **env},
    )


@pytest.fixture
def start_daemon(tmp_path: Path) -> Iterator[StartDaemon]:
    started: list[DaemonProcess] = []

    def start(configs: list[Path], *, wait: bool = True) -> DaemonProcess:
        daemon = DaemonProcess(tmp_path, configs)
        started.append(daemon)
        return daemon.start(wait=wait)

    yield start
    for daemon in started:
        daemon.ensure_stopped()


def _lines(text: str, needle: str) -> list[str]:
    return [line for line in text.splitlines() if needle in line]


def test_a_poll_sums_up_the_sessions_it_ignores_in_one_line(
    tmp_path: Path, start_daemon: StartDaemon
) -> None:
    config = write_config(tmp_path, "lab", daemon_table(tmp_path))
    for label in ("REC-1", "REC-2", *(f"phantom-{n}" for n in range(8))):
        add_session(config, label)
    daemon = start_daemon([config])
    daemon.wait_jobs("done", 2)
    wait_for(lambda: _lines(daemon.log_text(), "ignoring"), what="the summary line")
    (summary,) = _lines(daemon.log_text(), "ignoring")
    assert (
        "lab: ignoring 8 session(s) that do not match id_pattern 'REC-\\\\d+': 'phantom-0',"
        " 'phantom-1', 'phantom-2' and 5 more"
    ) in summary
    # The whole list at DEBUG (the test daemon logs at DEBUG).
    (full,) = _lines(daemon.log_text(), "ignored sessions:")
    assert full.endswith("phantom-0, phantom-1, phantom-2, phantom-3, phantom-4, phantom-5,"
                         " phantom-6, phantom-7")  # fmt: skip

    add_session(config, "phantom-new")
    wait_for(lambda: len(_lines(daemon.log_text(), "ignoring")) == 2, what="a second summary")
    time.sleep(1.0)  # several more polls: nothing new to say
    last = _lines(daemon.log_text(), "ignoring")
    assert len(last) == 2
    assert "ignoring 1 session(s)" in last[1] and "'phantom-new'; 9 ignored in all" in last[1]


def test_listing_a_dataset_sums_up_folders_that_are_no_records(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    config = write_project(tmp_path)
    for junk in ("notes", "tmp", "backup-2020", "old"):
        (tmp_path / "data" / junk).mkdir()
    result = cli("ids", str(config))
    assert result.returncode == 0
    (line,) = _lines(result.stderr, "ignoring")
    assert "ignoring 4 folder(s) that do not match id_pattern" in line
    assert "'backup-2020', 'notes', 'old' and 1 more" in line

    dataset = Dataset(config)
    with caplog.at_level(logging.DEBUG, logger="sinagot"):
        dataset.ids()
        dataset.ids()
    assert len([r for r in caplog.records if "ignoring" in r.getMessage()]) == 1
    assert any(
        "ignored folders: backup-2020, notes, old, tmp" in r.getMessage() for r in caplog.records
    )


BROKEN = "raise ImportError('no module named eegtools')\n"


def test_a_script_that_cannot_load_is_one_error_in_the_log_and_one_in_the_report(
    tmp_path: Path,
) -> None:
    records = tuple(f"REC-2001{n:02d}-A" for n in range(30))
    config = write_project(
        tmp_path,
        config=config_for({"clinical": ["bad"]}, {"RS": ["clinical"], "MMN": ["clinical"]}),
        scripts={"clinical/bad.py": BROKEN},
        records=records,
    )
    result = cli("run", str(config))
    assert result.returncode == 1
    assert len(_lines(result.stderr, "importing failed")) == 1
    errors = _lines(result.stdout, "error:")
    assert len(errors) == 1
    assert errors[0].startswith(
        "error: 60 steps (RS/clinical/bad, MMN/clinical/bad) of 30 record(s) [REC-200100-A,"
    )
    assert "REC-200109-A and 20 more]: " in errors[0]
    assert errors[0].endswith(
        "importing failed with ImportError: no module named eegtools: fix the script"
    )
    report = json.loads(cli("run", str(config), "--json").stdout)
    assert report["failed"] == 60 and len(report["steps"]) == 60


def test_distinct_errors_stay_one_line_per_step(tmp_path: Path) -> None:
    failing = (
        "from sinagot import ScriptTemplate\nclass Script(ScriptTemplate):\n"
        "    PATH_IN = ('{id}', '{task}', 'clinical')\n    PATH_OUT = ('{id}', 'derivatives', 'x')\n"
        "    def run(self):\n        raise ValueError(self.id)\n"
    )
    config = write_project(
        tmp_path,
        config=config_for({"clinical": ["bad"]}, {"RS": ["clinical"]}),
        scripts={"clinical/bad.py": failing},
    )
    result = cli("run", str(config))
    errors = _lines(result.stdout, "error:")
    assert [e.split(": ")[1] for e in errors] == [
        "REC-200331-A/RS/clinical/bad",
        "REC-200331-B/RS/clinical/bad",
    ]


def test_jobs_table_fits_the_terminal_with_long_labels(
    tmp_path: Path, start_daemon: StartDaemon
) -> None:
    name = "sonetaa-eeg-platform-with-a-long-name"
    config = write_config(tmp_path, name, daemon_table(tmp_path), id_pattern=r"REC-.*")
    long_label = "REC-200331-A_session_with_a_label_much_longer_than_usual_run-02"
    add_session(config, long_label, fail="x" * 300)
    add_session(config, "REC-1")
    daemon = start_daemon([config])
    wait_for(lambda: len(daemon.jobs(state="failed")) == 1, what="the failing job")
    code, screen = run_on_terminal("jobs", "--socket", str(daemon.socket), columns=100)
    assert code == 0, screen
    lines = screen.splitlines()
    assert max(len(line) for line in lines) <= 100, screen
    (failed,) = [line for line in lines if "failed" in line]
    # Names cut in the middle (both ends tell sessions apart), the error at the end.
    assert re.search(r" REC-\S*\u2026\S*-02 ", failed)
    assert re.search(r" sonet\S*\u2026\S*-name ", failed)
    assert failed.rstrip().endswith("xx\u2026")  # the error cut at the end
    # In a pipe, whole lines (for grep); --json has everything too.
    piped = cli("jobs", "--socket", str(daemon.socket)).stdout
    assert long_label in piped and name in piped and "x" * 300 in piped
    whole = json.loads(cli("jobs", "--socket", str(daemon.socket), "--json").stdout)
    assert long_label in {job["session"] for job in whole["jobs"]}


_OLD_SCHEMA = """
CREATE TABLE jobs (
    id INTEGER PRIMARY KEY AUTOINCREMENT, dataset TEXT NOT NULL, session TEXT NOT NULL,
    last_modified TEXT NOT NULL, state TEXT NOT NULL, attempts INTEGER NOT NULL DEFAULT 0,
    last_error TEXT, not_before REAL NOT NULL DEFAULT 0, created REAL NOT NULL,
    updated REAL NOT NULL, log_tail TEXT NOT NULL DEFAULT '', UNIQUE (dataset, session)
);
CREATE INDEX jobs_runnable ON jobs (state, not_before);
CREATE TABLE history (
    id INTEGER PRIMARY KEY AUTOINCREMENT, job_id INTEGER NOT NULL REFERENCES jobs (id),
    at REAL NOT NULL, state TEXT NOT NULL, detail TEXT NOT NULL DEFAULT ''
);
CREATE INDEX history_job ON history (job_id);
"""


def _stamp(config: Path, label: str) -> str:
    return str((config.parent / "data" / label / "stamp").stat().st_mtime_ns)


def _old_journal(path: Path, rows: list[tuple[str, str, str]]) -> None:
    """A journal as Sinagot 0.1 wrote it (no schema version): (session, stamp, state) rows."""
    path.parent.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(path)
    try:
        db.executescript(_OLD_SCHEMA)
        now = time.time() - 3600
        for session, stamp, state in rows:
            cursor = db.execute(
                "INSERT INTO jobs (dataset, session, last_modified, state, attempts, created,"
                " updated) VALUES ('lab', ?, ?, ?, 1, ?, ?)",
                (session, stamp, state, now, now),
            )
            db.execute(
                "INSERT INTO history (job_id, at, state) VALUES (?, ?, ?)",
                (cursor.lastrowid, now, state),
            )
        db.commit()
    finally:
        db.close()


def test_a_journal_of_an_older_version_is_upgraded_and_resumed(
    tmp_path: Path, start_daemon: StartDaemon
) -> None:
    config = write_config(tmp_path, "lab", daemon_table(tmp_path))
    add_session(config, "REC-1")
    add_session(config, "REC-2")
    journal = tmp_path / "state" / "journal.sqlite3"
    # REC-1 was done, REC-2 was being processed when the old daemon stopped.
    _old_journal(
        journal,
        [("REC-1", _stamp(config, "REC-1"), "done"), ("REC-2", _stamp(config, "REC-2"), "running")],
    )
    daemon = start_daemon([config])
    jobs = daemon.wait_jobs("done", 2)
    assert sorted(job["session"] for job in jobs) == ["REC-1", "REC-2"]
    assert (config.parent / "out" / "uploads.log").read_text().split() == ["REC-2"]
    assert "resuming 1 job(s) that were in flight" in daemon.log_text()
    detail = daemon.call("job", next(j["id"] for j in jobs if j["session"] == "REC-1"))
    assert [t["state"] for t in detail["history"]] == ["done"]
    assert daemon.stop() == 0
    db = sqlite3.connect(journal)
    try:
        assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    finally:
        db.close()


def test_a_journal_of_a_newer_version_is_refused_with_one_line(
    tmp_path: Path, start_daemon: StartDaemon
) -> None:
    config = write_config(tmp_path, "lab", daemon_table(tmp_path))
    journal = tmp_path / "state" / "journal.sqlite3"
    _old_journal(journal, [])
    db = sqlite3.connect(journal)
    db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    db.close()
    daemon = start_daemon([config], wait=False)
    assert daemon.wait_exit() == 1
    log = daemon.log_text()
    assert "Traceback" not in log
    (error,) = _lines(log, "sinagot: error: ")
    assert f"has schema version {SCHEMA_VERSION + 1}, newer than this Sinagot's" in error
    assert "move the journal aside" in error


def test_the_dask_cluster_chatter_stays_below_the_level_chosen(tmp_path: Path) -> None:
    # In a fresh interpreter: distributed resets its loggers' levels when first imported,
    # which is after the daemon (or `sinagot run`) chose WARNING for them.
    program = (
        "import logging, sys\n"
        "from contextlib import ExitStack\n"
        "logging.basicConfig(level=logging.INFO, stream=sys.stderr)\n"
        "logging.getLogger('distributed').setLevel(logging.WARNING)\n"
        "from sinagot.engine.internals import open_client\n"
        "from sinagot.config import DaskSettings\n"
        "assert 'distributed' not in sys.modules, 'the test needs distributed not yet imported'\n"
        "with ExitStack() as stack:\n"
        "    client = open_client(DaskSettings(n_workers=1, processes=False), stack)\n"
        "    print(client.submit(abs, -3).result())\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", program],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "3"
    assert "sinagot.engine._dask" in done.stderr  # INFO records of our own still show
    assert "distributed." not in done.stderr
