"""``sinagot demo --daemon``: the README's first command, as a real process."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from daemon_xnat_support import SINAGOT
from sinagot.demo import DEMO_RECORDS
from sinagot.testing import EmulatorServer, Owner

# Steps of a demo record: EEG preprocess + spectrum for 3 tasks, clinical score for 3, HDC
# behavior accuracy.
DEMO_STEPS = 10


def _demo(directory: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [SINAGOT, "demo", "--daemon", "--dir", str(directory), *extra],
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
        cwd=directory.parent,
    )


def test_demo_daemon_processes_and_uploads_everything_then_stops(tmp_path: Path) -> None:
    directory = tmp_path / "demo"
    first = _demo(directory, "--json")
    assert first.returncode == 0, first.stderr
    body = json.loads(first.stdout)
    assert sorted(job["session"] for job in body["jobs"]) == sorted(DEMO_RECORDS)
    assert {job["state"] for job in body["jobs"]} == {"done"}
    assert all(len(labels) == DEMO_STEPS for labels in body["derivatives"].values())
    assert body["server"].startswith("http://127.0.0.1:")
    assert body["worked"] is True

    # Every derivative on the server is complete: its provenance is there (in PROVENANCE).
    server = EmulatorServer(directory / "daemon" / "xnat")
    try:
        for record in DEMO_RECORDS:
            experiment = server.store.find_experiment("SONETAA", record)
            assert experiment is not None
            resources = [
                r
                for r in server.store.resources(Owner("experiment", experiment.id))
                if "___at___" in r.label
            ]
            assert len(resources) == DEMO_STEPS
            (markers,) = [
                r
                for r in server.store.resources(Owner("experiment", experiment.id))
                if r.label == "PROVENANCE"
            ]
            marked = {f.path for f in server.store.files(markers.id)}
            for resource in resources:
                assert f"{resource.label}.json" in marked
                assert {f.path for f in server.store.files(resource.id)}
    finally:
        server.close()

    # Again: the readable summary, nothing left to do, the daemon stops cleanly.
    again = _demo(directory)
    assert again.returncode == 0, again.stderr
    assert again.stdout.startswith("Nothing new in the demo project SONETAA")
    assert "DATASET" in again.stdout and "sonetaa" in again.stdout
    assert "RS_EEG_spectrum___at___sinagot/files" in again.stdout
    assert f"sinagot daemon {directory / 'daemon' / 'sonetaa.toml'}" in again.stdout
