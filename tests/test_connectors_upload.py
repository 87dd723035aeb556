"""Uploads through XnatStore: files streamed, many small files as archives the server
unpacks, each upload verified by the server's digests (by sizes without them).

Against the XNAT emulator over real loopback sockets, apart from the request bodies'
own tests, which read what a body writes.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import cast

import pytest
from aiohttp.abc import AbstractStreamWriter

from sinagot.connectors import DataRow, FileSet, RetryPolicy, XnatStore
from sinagot.connectors.internals import (
    ARCHIVE_MAX_MEMBERS,
    ARCHIVE_MEMBER_MAX,
    ArchiveBody,
    Credentials,
    FileBody,
    XnatClient,
    plan_uploads,
)
from sinagot.errors import ServerError, StoreError
from sinagot.testing import EmulatorServer, FaultRule

PROJECT = "P"
RECORD = "REC-200331-A"
PUT_FILE = "PUT /data/projects/{project}/experiments/{experiment}/resources/{resource}/files/{path}"
ARCHIVE_PUT = r"/files/upload-\d+\.tar$"
LONG_NAME = "a-name-longer-than-the-hundred-bytes-a-plain-tar-header-holds/" + "x" * 90 + ".bin"


@pytest.fixture
def server(xnat_server: EmulatorServer) -> EmulatorServer:
    xnat_server.create_project(PROJECT)
    xnat_server.create_session(PROJECT, RECORD)
    return xnat_server


@pytest.fixture
def store(server: EmulatorServer, tmp_path: Path) -> Iterator[XnatStore]:
    with XnatStore(
        server.url,
        tmp_path / "cache",
        user="alice",
        password="secret",
        project=PROJECT,
        local_root=tmp_path / "work",
        retry=RetryPolicy(attempts=3, initial_delay=0.01, max_delay=0.05),
    ) as opened:
        yield opened


def outputs(root: Path, version: bytes = b"1") -> FileSet:
    """A step's outputs: 40 small files (one empty, names tar needs PAX for) and a large one,
    with the MD5s the step computed, as the engine hands them over."""
    files = {f"RS/EEG/part{index:02d}.csv": version * (index * 100) for index in range(36)}
    files["RS/EEG/deep/er/nested.txt"] = version + b" nested"
    files["RS/EEG/séance-été.txt"] = version + b" non-ASCII"
    files[f"RS/EEG/{LONG_NAME}"] = version + b" long"
    files["RS/EEG/empty.txt"] = b""
    files["RS/EEG/large.bin"] = version * ARCHIVE_MEMBER_MAX
    for name, data in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
    checksums = {name: hashlib.md5(data).hexdigest() for name, data in files.items()}
    return FileSet(root, tuple(sorted(files)), checksums)


def stored(fileset: FileSet) -> dict[str, str]:
    """The digests the server should list: the outputs relative to their folder."""
    return {name.removeprefix("RS/EEG/"): md5 for name, md5 in fileset.checksums.items()}


def new_entry(store: XnatStore, path: str = "spectrum@sinagot") -> tuple[DataRow, str]:
    row = DataRow(RECORD)
    store.populate_row(row)
    store.create_fileset_entry(path, row)
    return row, path


def test_many_small_files_go_as_a_few_archives_verified_by_digest(
    server: EmulatorServer, store: XnatStore, tmp_path: Path
) -> None:
    row, path = new_entry(store)
    entry = row.entries[path]
    fileset = outputs(tmp_path / "out")
    server.reset_counters()
    result = store.put_fileset(fileset, entry)

    assert result.checksums == fileset.checksums
    assert store.get_checksums(entry.uri) == stored(fileset)
    # 41 files, 40 of them small: a few archives and the large file alone.
    assert server.request_counts()[PUT_FILE] <= 9
    # The engine's provenance names the outputs as the step wrote them.
    store.put_fileset_provenance({"outputs": dict(fileset.checksums)}, entry)
    again = DataRow(RECORD)
    store.populate_row(again)
    fetched = store.get_fileset(again.entries[path])
    assert fetched.names == fileset.names
    for name in fileset.names:
        assert (fetched.root / name).read_bytes() == (fileset.root / name).read_bytes()


def test_upload_files_sends_a_whole_folder_hashing_it_itself(
    store: XnatStore, tmp_path: Path
) -> None:
    row, path = new_entry(store)
    fileset = outputs(tmp_path / "out")
    root = tmp_path / "out" / "RS" / "EEG"
    store.upload_files(root, row.entries[path])
    assert store.get_checksums(row.entries[path].uri) == stored(fileset)


def test_without_digests_the_archives_are_checked_by_size(
    server: EmulatorServer, store: XnatStore, tmp_path: Path
) -> None:
    server.set_checksums(False, PROJECT)
    row, path = new_entry(store)
    fileset = outputs(tmp_path / "out")
    store.put_fileset(fileset, row.entries[path])
    listed = store.get_checksums(row.entries[path].uri)
    assert listed == dict.fromkeys(stored(fileset), "")


def test_a_file_changed_after_it_was_hashed_fails_the_check(
    store: XnatStore, tmp_path: Path
) -> None:
    row, path = new_entry(store)
    fileset = outputs(tmp_path / "out")
    changed = "RS/EEG/part07.csv"
    (fileset.root / changed).write_bytes(b"other bytes")
    with pytest.raises(ServerError, match=r"part07\.csv"):
        store.put_fileset(fileset, row.entries[path])
    assert store.get_fileset_provenance(row.entries[path]) is None


def test_a_failed_archive_upload_is_never_complete_and_a_rerun_completes_it(
    server: EmulatorServer, store: XnatStore, tmp_path: Path
) -> None:
    row, path = new_entry(store)
    entry = row.entries[path]
    store.put_fileset(outputs(tmp_path / "out"), entry)
    store.put_fileset_provenance({"run": 1}, entry)

    fileset = outputs(tmp_path / "out", version=b"2")
    server.set_faults([FaultRule("status", path=ARCHIVE_PUT, method="PUT", status=500)])
    with pytest.raises(ServerError):
        store.put_fileset(fileset, entry)
    assert store.get_fileset_provenance(entry) is None  # withdrawn before anything was sent

    server.set_faults([])
    store.put_fileset(fileset, entry)
    store.put_fileset_provenance({"run": 2}, entry)
    assert store.get_checksums(entry.uri) == stored(fileset)
    assert store.get_fileset_provenance(entry) == {"run": 2}


def test_an_archive_refused_once_is_sent_again_whole(
    server: EmulatorServer, store: XnatStore, tmp_path: Path
) -> None:
    row, path = new_entry(store)
    fileset = outputs(tmp_path / "out")
    server.set_faults(
        [FaultRule("status", path=ARCHIVE_PUT, method="PUT", status=503, retry_after=0, times=1)]
    )
    store.put_fileset(fileset, row.entries[path])
    assert server.fault_counts() == {"status_503": 1}
    assert store.get_checksums(row.entries[path].uri) == stored(fileset)


@pytest.mark.parametrize("kind", ["file", "archive"])
def test_a_file_shorter_than_planned_fails_at_once_naming_it(
    server: EmulatorServer, tmp_path: Path, kind: str
) -> None:
    (tmp_path / "a.bin").write_bytes(b"a" * (3 << 20))
    # As if it shrank between the listing of its size and its upload.
    body = (
        FileBody(tmp_path / "a.bin", 4 << 20)
        if kind == "file"
        else ArchiveBody(tmp_path, [("a.bin", 4 << 20)])
    )
    uri = f"/data/projects/{PROJECT}/experiments/{RECORD}/resources/OUT/files/a.bin"

    async def put() -> None:
        client = XnatClient(server.url, Credentials("alice", "secret"), project=PROJECT)
        try:
            await client.request("PUT", uri, "a.bin", body=body)
        finally:
            await client.aclose()

    server.reset_counters()
    with pytest.raises(StoreError, match=r"a\.bin ended 1048576 bytes short") as raised:
        asyncio.run(put())
    assert not isinstance(raised.value, ServerError)  # not retried as a network fault
    assert server.request_counts()[PUT_FILE] == 1


# -- the request bodies ------------------------------------------------------------------


class _NoSendfile(asyncio.Transport):
    """A transport sendfile(2) cannot use, as TLS connections are."""

    def is_closing(self) -> bool:
        return False


class _Collect:
    """A stream writer that keeps the chunks it is given."""

    def __init__(self) -> None:
        self.transport = _NoSendfile()
        self.chunks: list[bytes] = []

    def send_headers(self) -> None:
        """Nothing held back here."""

    async def drain(self) -> None:
        """Nothing to wait for."""

    async def write(self, chunk: bytes | bytearray | memoryview) -> None:
        self.chunks.append(bytes(chunk))


def body_bytes(body: FileBody | ArchiveBody) -> tuple[bytes, list[int]]:
    writer = _Collect()
    asyncio.run(body.send(cast(AbstractStreamWriter, writer)))
    return b"".join(writer.chunks), [len(chunk) for chunk in writer.chunks]


def test_a_file_is_sent_in_bounded_chunks_where_sendfile_cannot(tmp_path: Path) -> None:
    data = bytes(range(256)) * (5 * 4096 + 1)  # 5 MiB and 256 bytes
    (tmp_path / "f.bin").write_bytes(data)
    sent, sizes = body_bytes(FileBody(tmp_path / "f.bin", len(data)))
    assert sent == data
    assert max(sizes) <= 1 << 20


def test_an_archive_body_is_a_tar_of_the_files(tmp_path: Path) -> None:
    fileset = outputs(tmp_path)
    root = tmp_path / "RS" / "EEG"
    names = [name.removeprefix("RS/EEG/") for name in fileset.names]
    members = [(name, (root / name).stat().st_size) for name in names]
    body = ArchiveBody(root, members)
    sent, sizes = body_bytes(body)
    assert len(sent) == body.size
    assert max(sizes) <= 1 << 20
    with tarfile.open(fileobj=io.BytesIO(sent)) as archive:
        assert archive.getnames() == names
        for name in names:
            member = archive.extractfile(name)
            assert member is not None
            assert member.read() == (root / name).read_bytes()


@pytest.mark.parametrize("kind", ["file", "archive"])
def test_a_file_that_shrank_while_sent_is_an_error(tmp_path: Path, kind: str) -> None:
    (tmp_path / "a.bin").write_bytes(b"a" * 1000)
    body = (
        FileBody(tmp_path / "a.bin", 2000)
        if kind == "file"
        else ArchiveBody(tmp_path, [("a.bin", 2000)])
    )
    with pytest.raises(StoreError, match=r"a\.bin ended 1000 bytes short"):
        body_bytes(body)


def test_plan_sends_few_files_alone_and_many_small_ones_in_archives() -> None:
    few = {f"f{index}": 10 for index in range(8)}
    assert plan_uploads(list(few), few, slots=8) == (list(few), [])

    sizes = {f"s{index:04d}": 1000 + index for index in range(2500)}
    sizes |= {"empty": 0, "big": ARCHIVE_MEMBER_MAX}
    names = sorted(sizes)
    alone, batches = plan_uploads(names, sizes, slots=8)
    assert alone == ["big"]
    packed = [name for batch in batches for name in batch]
    assert packed == [name for name in names if name != "big"]  # each once, in order
    assert 3 <= len(batches) <= 8
    assert all(len(batch) <= ARCHIVE_MAX_MEMBERS for batch in batches)
    loads = [sum(sizes[name] for name in batch) for batch in batches]
    assert max(loads) < 1.5 * min(loads)


@pytest.mark.slow
def test_a_1_gib_upload_keeps_memory_bounded(store: XnatStore, tmp_path: Path) -> None:
    status = Path("/proc/self/status")
    if not status.exists():
        pytest.skip("reads the peak RSS from /proc")
    (tmp_path / "out").mkdir()
    with (tmp_path / "out" / "big.bin").open("wb") as handle:  # sparse: quick, 1 GiB sent
        handle.truncate(1 << 30)
    row, path = new_entry(store)
    before = _status_kib(status, "VmRSS")
    Path("/proc/self/clear_refs").write_text("5")  # VmHWM starts again from here
    store.put_fileset(FileSet(tmp_path / "out", ("big.bin",)), row.entries[path])
    # Server and client share this process: both together stay under the bound.
    assert (_status_kib(status, "VmHWM") - before) << 10 < 50 << 20
    zeros = hashlib.md5()
    for _ in range(1024):
        zeros.update(bytes(1 << 20))
    assert store.get_checksums(row.entries[path].uri) == {"big.bin": zeros.hexdigest()}


def _status_kib(status: Path, field: str) -> int:
    for line in status.read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    raise AssertionError(f"no {field} in {status}")
