"""An entry of many small files comes as one zip archive, each file still verified."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path

import pytest

from sinagot.cache import Cache
from sinagot.connectors import AsyncXnatStore, DataRow
from sinagot.testing import EmulatorServer, FaultRule
from sinagot.testing.pytest_plugin import XNAT_PASSWORD, XNAT_USER

PROJECT, SESSION = "ARCH", "REC-200101-A"
FILES = {
    f"sub/f{index:03d}.bin": hashlib.sha256(str(index).encode()).digest() * 40
    for index in range(60)
}
FILE_GET = (
    "GET /data/projects/{project}/experiments/{experiment}/scans/{scan}/resources/{resource}"
    "/files/{path}"
)
RESOURCE_FILES = (
    "GET /data/projects/{project}/experiments/{experiment}/scans/{scan}/resources/{resource}/files"
)


def _seed(server: EmulatorServer, *, checksums: bool = True) -> None:
    server.create_project(PROJECT, checksums=checksums)
    server.create_session(PROJECT, SESSION)
    for name, data in FILES.items():
        server.add_scan_file(PROJECT, SESSION, scan_type="RS", resource="EEG", name=name, data=data)
    server.reset_counters()


async def _fetch(server: EmulatorServer, tmp_path: Path) -> Path:
    store = AsyncXnatStore.connect(
        server.url,
        project=PROJECT,
        user=XNAT_USER,
        password=XNAT_PASSWORD,
        cache=Cache(tmp_path / "cache"),
        local_root=tmp_path / "work",
    )
    try:
        row = DataRow(SESSION)
        await store.populate_row(row)
        return await store.download_files(row.entries["RS/EEG"])
    finally:
        await store.aclose()


def _check(folder: Path) -> None:
    assert {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()} == set(
        FILES
    )
    for name, data in FILES.items():
        assert (folder / name).read_bytes() == data


@pytest.mark.parametrize("checksums", [True, False], ids=["digests", "checksums off"])
async def test_many_small_files_come_in_one_archive(
    xnat_server: EmulatorServer, tmp_path: Path, checksums: bool
) -> None:
    _seed(xnat_server, checksums=checksums)
    folder = await _fetch(xnat_server, tmp_path)
    _check(folder)
    counts = xnat_server.request_counts()
    assert FILE_GET not in counts  # no file fetched alone
    assert counts[RESOURCE_FILES] == 1  # the zip (the listing came with the session's)


async def test_a_corrupt_archive_member_is_fetched_alone(
    xnat_server_factory: Callable[..., EmulatorServer], tmp_path: Path
) -> None:
    server = xnat_server_factory()
    _seed(server)
    # One byte of the zip flipped, in the data of some member: its digest fails.
    server.set_faults([FaultRule("corrupt", path=r"/resources/EEG/files$", at=10_000, times=1)])
    folder = await _fetch(server, tmp_path)
    _check(folder)
    assert server.request_counts()[FILE_GET] == 1  # that member alone, again
