"""A server that stays silent before the first byte (as real XNAT does under load).

A holder waiting on an open request is alive: it must not be taken over, and
both processes asking for the entry finish with one download of each file.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from sinagot.testing import EmulatorServer, FaultRule
from sinagot.testing.pytest_plugin import XNAT_PASSWORD, XNAT_USER

PROJECT = "SLOW"
SESSION = "REC-200101-A"
SILENCE = 8.0  # seconds before each file's first byte: over the default race_condition_delay
FILES = {"raw.csv": 300_000, "events.tsv": 2_000}
FILE_GET = r"/scans/[^/]+/resources/[^/]+/files/.+"

# One process asking for the entry with the default race_condition_delay (5 s).
_FETCH = """
import json, sys
from pathlib import Path
from sinagot.connectors import DataRow, XnatStore

server, cache, work, user, password = sys.argv[1:6]
with XnatStore(server, Path(cache), user=user, password=password, project="SLOW",
               local_root=Path(work)) as store:
    row = DataRow("REC-200101-A")
    store.populate_row(row)
    fileset = store.get_fileset(row.entries["RS/EEG"])
    print(json.dumps(sorted(fileset.names)))
"""


def _fetcher(server: EmulatorServer, tmp_path: Path, name: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [
            sys.executable,
            "-c",
            _FETCH,
            server.url,
            str(tmp_path / "cache"),
            str(tmp_path / name),
            XNAT_USER,
            XNAT_PASSWORD,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )


def test_two_processes_one_download_from_a_server_silent_before_each_file(
    xnat_server: EmulatorServer, tmp_path: Path
) -> None:
    xnat_server.create_project(PROJECT)
    xnat_server.create_session(PROJECT, SESSION)
    for name, size in FILES.items():
        xnat_server.add_scan_file(
            PROJECT, SESSION, scan_type="RS", resource="EEG", name=name, data=os.urandom(size)
        )
    xnat_server.set_faults([FaultRule("latency", path=FILE_GET, method="GET", delay=SILENCE)])
    xnat_server.reset_counters()

    first = _fetcher(xnat_server, tmp_path, "work-a")
    try:
        time.sleep(1.0)  # the first one holds the entry, the second waits
        second = _fetcher(xnat_server, tmp_path, "work-b")
        try:
            outcomes = [process.communicate(timeout=120) for process in (first, second)]
        finally:
            second.kill()
    finally:
        first.kill()

    for process, (out, err) in zip((first, second), outcomes, strict=True):
        assert process.returncode == 0, err
        assert json.loads(out) == sorted(FILES)
        assert "taking over" not in err, err
    file_gets = sum(
        count
        for route, count in xnat_server.request_counts().items()
        if route.startswith("GET ") and route.endswith("/files/{path}")
    )
    assert file_gets == len(FILES)  # each file downloaded once, by the holder
