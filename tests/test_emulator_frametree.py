"""FrameTree's own XNAT store (frametree-xnat) against the emulator, as against a real XNAT.

It reads sessions through xnatpy's schema-built classes (date, time, visit_id, age,
modality), downloads resources as zips, uploads derivatives with ``upload_dir``
(a tar.gz unpacked by the server) and keeps provenance in a ``PROVENANCE`` resource.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from pathlib import Path

import pytest
import requests
from fileformats.text import TextFile
from frametree.xnat import Xnat

from sinagot.testing import EmulatorServer
from sinagot.testing.pytest_plugin import XNAT_PASSWORD, XNAT_USER

AUTH = (XNAT_USER, XNAT_PASSWORD)
PROVENANCE = {"script": "summary.py", "inputs": {"RS/EEG": "0" * 32}, "version": "1"}
# Listed here in the order FrameTree must give them: by subject, then date and time.
SESSIONS = [
    ("SUBJ1", "S1-late", "2024-03-01", "09:00:00", "V2"),
    ("SUBJ1", "S1-early", "2024-01-15", "16:30:00", "V1"),
    ("SUBJ2", "S2-pm", "2024-02-01", "14:00:00", "V1"),
    ("SUBJ2", "S2-am", "2024-02-01", "08:00:00", "V0"),
]


def _seed(server: EmulatorServer, sessions: list[tuple[str, str, str, str, str]]) -> None:
    server.create_project("P")
    for subject, label, date, time, visit in sessions:
        server.create_session(
            "P", label, subject=subject, date=date, time=time, visit_id=visit, age=41.5
        )
        server.add_scan_file(
            "P", label, scan_type="RS", resource="EEG", name="eeg.txt", data=f"eeg {label}".encode()
        )


def _store(server: EmulatorServer, cache: Path) -> Xnat:
    cache.mkdir(parents=True, exist_ok=True)
    return Xnat(server=server.url, user=XNAT_USER, password=XNAT_PASSWORD, cache_dir=cache)


@pytest.fixture(autouse=True)
def _quiet_clients(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="xnat")


def test_rows_follow_the_sessions_dates_and_visits(
    xnat_server: EmulatorServer, tmp_path: Path
) -> None:
    _seed(xnat_server, SESSIONS)
    frameset = _store(xnat_server, tmp_path / "cache").define_frameset(
        "P", id_patterns={"visit": "session:visit_id"}
    )
    assert list(frameset.row_ids()) == ["S1-early", "S1-late", "S2-am", "S2-pm"]
    assert sorted(frameset.row_ids("visit")) == ["V0", "V1", "V2"]
    assert sorted(frameset.row_ids("subject")) == ["SUBJ1", "SUBJ2"]


@pytest.mark.parametrize("profile", ["fast", "production"])
def test_scan_resource_read_as_a_column(
    xnat_server_factory: Callable[..., EmulatorServer], tmp_path: Path, profile: str
) -> None:
    server = xnat_server_factory(profile=profile)
    _seed(server, SESSIONS[:1] if profile == "production" else SESSIONS)
    frameset = _store(server, tmp_path / "cache").define_frameset("P")
    frameset.add_source("eeg", path="RS/EEG", datatype=TextFile)
    contents = {row.id: row["eeg"].contents for row in frameset.rows("session")}
    assert contents == {label: f"eeg {label}" for _, label, *_ in SESSIONS[: len(contents)]}
    assert len(contents) == (1 if profile == "production" else len(SESSIONS))


@pytest.mark.parametrize("profile", ["fast", pytest.param("production", marks=pytest.mark.slow)])
def test_derivative_written_by_frametree_reads_back_with_its_provenance(
    xnat_server_factory: Callable[..., EmulatorServer], tmp_path: Path, profile: str
) -> None:
    server = xnat_server_factory(profile=profile)
    _seed(server, SESSIONS[:2])
    store = _store(server, tmp_path / "cache")
    frameset = store.define_frameset("P")
    frameset.add_sink("summary", datatype=TextFile)
    written = tmp_path / "summary.txt"
    written.write_text("derived from S1-late")
    row = frameset.row("session", "S1-late")
    row["summary"] = TextFile(written)
    with store.connection:
        store.put_provenance(PROVENANCE, row.cell("summary").entry)

    # The server unpacked FrameTree's tar.gz into the file itself, with its digest.
    resources = f"{server.url}/data/projects/P/experiments/S1-late/resources"
    listed = {
        label: {r["Name"]: r["digest"] for r in _rows(f"{resources}/{label}/files")}
        for label in ("summary", "PROVENANCE")
    }
    assert listed["summary"] == {"summary.txt": hashlib.md5(b"derived from S1-late").hexdigest()}
    assert list(listed["PROVENANCE"]) == ["summary.json"]

    # A fresh cache reads both back from the server.
    fresh = _store(server, tmp_path / "fresh")
    again = fresh.define_frameset("P")
    again.add_sink("summary", datatype=TextFile)
    read_back = again.row("session", "S1-late")
    assert read_back["summary"].contents == "derived from S1-late"
    with fresh.connection:
        assert fresh.get_provenance(read_back.cell("summary").entry) == PROVENANCE


def test_derivatives_of_a_project_without_checksums(
    xnat_server: EmulatorServer, tmp_path: Path
) -> None:
    _seed(xnat_server, SESSIONS[:1])
    xnat_server.set_checksums(False, "P")
    store = _store(xnat_server, tmp_path / "cache")
    frameset = store.define_frameset("P")
    frameset.add_sink("summary", datatype=TextFile)
    written = tmp_path / "summary.txt"
    written.write_text("no digest")
    frameset.row("session", "S1-late")["summary"] = TextFile(written)
    listing = f"{xnat_server.url}/data/projects/P/experiments/S1-late/resources/summary/files"
    assert [(r["Name"], r["digest"]) for r in _rows(listing)] == [("summary.txt", "")]
    again = _store(xnat_server, tmp_path / "fresh").define_frameset("P")
    again.add_sink("summary", datatype=TextFile)
    assert again.row("session", "S1-late")["summary"].contents == "no digest"


def _rows(url: str) -> list[dict[str, str]]:
    answer = requests.get(url, auth=AUTH, timeout=30)
    answer.raise_for_status()
    rows: list[dict[str, str]] = answer.json()["ResultSet"]["Result"]
    return rows
