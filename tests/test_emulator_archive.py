"""The emulator's archive tree: XNAT's ``arc001`` layout on disk, in step with every write."""

from __future__ import annotations

import logging
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
import requests
import xnat
from fileformats.text import Plain
from frametree.axes.medimage import MedImage
from frametree.xnat import XnatViaCS

from sinagot.testing import EmulatorServer, Owner

AUTH = ("alice", "secret")


def _files(folder: Path) -> dict[str, bytes]:
    return {
        p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()
    }


def test_every_write_shows_in_the_archive(xnat_server: EmulatorServer, tmp_path: Path) -> None:
    server = xnat_server
    server.create_project("P")
    server.create_session("P", "S1", subject="SUB")
    server.add_scan_file(
        "P", "S1", scan_type="RS", scan_id="4", resource="EEG", name="a/raw.csv", data=b"1"
    )
    archive = server.data_dir / "archive"
    session = archive / "P" / "arc001" / "S1"
    assert _files(archive) == {"P/arc001/S1/SCANS/4/EEG/a/raw.csv": b"1"}

    base = server.url + "/data/projects/P"
    for path, body in (
        ("/experiments/S1/resources/out/files/x.txt", b"x"),
        ("/subjects/SUB/resources/notes/files/n.txt", b"n"),
        ("/resources/defs/files/d.json", b"{}"),
        ("/experiments/S1/scans/4/resources/EEG/files/a/raw.csv?overwrite=true", b"2"),
    ):
        assert requests.put(base + path, data=body, auth=AUTH, timeout=10).status_code < 300
    assert _files(archive) == {
        "P/arc001/S1/SCANS/4/EEG/a/raw.csv": b"2",
        "P/arc001/S1/RESOURCES/out/x.txt": b"x",
        "P/subjects/SUB/resources/notes/n.txt": b"n",
        "P/resources/defs/d.json": b"{}",
    }
    # xnatpy's upload_dir (a tar.gz unpacked by the server) lands there too.
    folder = tmp_path / "up"
    (folder / "d").mkdir(parents=True)
    (folder / "d" / "f.txt").write_bytes(b"f")
    with xnat.connect(server.url, user=AUTH[0], password=AUTH[1], loglevel="ERROR") as x:
        resource = x.classes.ResourceCatalog(parent=x.projects["P"].experiments["S1"], label="up")
        resource.upload_dir(folder)
    assert (session / "RESOURCES" / "up" / "d" / "f.txt").read_bytes() == b"f"

    # Deletes take files, resources and emptied folders away.
    assert requests.delete(
        base + "/experiments/S1/resources/out/files/x.txt", auth=AUTH, timeout=10
    ).ok
    assert not (session / "RESOURCES" / "out").exists()
    assert requests.delete(base + "/experiments/S1/scans/4", auth=AUTH, timeout=10).ok
    assert not (session / "SCANS").exists()
    assert requests.delete(base + "/subjects/SUB", auth=AUTH, timeout=10).ok
    assert not (archive / "P" / "arc001").exists() and not (archive / "P" / "subjects").exists()
    assert _files(archive) == {"P/resources/defs/d.json": b"{}"}


def test_names_cannot_climb_out_of_the_archive(xnat_server: EmulatorServer) -> None:
    server = xnat_server
    server.create_project("P")
    for label in ("..", "."):
        server.create_session("P", label, subject="SUB")
        server.add_scan_file("P", label, scan_type="RS", resource="..", name="f", data=b"f")
    archive = server.data_dir / "archive"
    found = [p for p in server.data_dir.rglob("f") if p.is_file()]
    assert all(p.is_relative_to(server.data_dir) for p in found)
    assert len([p for p in found if p.is_relative_to(archive)]) == 2
    assert not (archive / "P" / "f").exists() and not (server.data_dir / "f").exists()


def test_an_older_data_directory_gets_its_archive_at_start(
    tmp_path: Path, xnat_server_factory: Callable[..., EmulatorServer]
) -> None:
    data = tmp_path / "xnat"
    first = EmulatorServer(data)
    first.create_project("P")
    first.create_session("P", "S1")
    first.add_scan_file("P", "S1", scan_type="RS", resource="EEG", name="raw.csv", data=b"r")
    first.close()
    shutil.rmtree(data / "archive")  # as an emulator before the archive tree left it
    second = EmulatorServer(data)
    try:
        assert (data / "archive/P/arc001/S1/SCANS/1/EEG/raw.csv").read_bytes() == b"r"
        assert second.store.fields(Owner("project", "P")) == {}
    finally:
        second.close()


def test_frametree_reads_a_session_from_the_archive_directly(
    xnat_server: EmulatorServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    server = xnat_server
    server.create_project("P")
    server.create_session("P", "S1", subject="SUB")
    server.add_scan_file("P", "S1", scan_type="RS", resource="TEXT", name="f.txt", data=b"hello")
    (tmp_path / "cache").mkdir()
    store = XnatViaCS(
        server=server.url,
        user=AUTH[0],
        password=AUTH[1],
        cache_dir=tmp_path / "cache",
        row_frequency=MedImage.dataset,
        input_mount=server.data_dir / "archive" / "P",
        output_mount=tmp_path / "out",
    )
    frameset = store.define_frameset("P")
    frameset.add_source("text", path="RS/TEXT", datatype=Plain)
    with caplog.at_level(logging.INFO, logger="frametree"):
        [row] = frameset.rows("session")
        item = row["text"]
    assert "direct access to archive directory" in caplog.text
    assert item.contents == "hello"
    assert Path(item.fspath).is_relative_to(server.data_dir / "archive")
