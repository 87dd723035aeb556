"""Every fault kind of the emulator, seen through XnatStore (real sockets, no mocks)."""

from __future__ import annotations

import asyncio
import hashlib
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiohttp import web

from sinagot.cache import EntryKey, RemoteFile
from sinagot.connectors import DataRow, DataTree, FileSet, RetryPolicy, XnatStore
from sinagot.errors import ChecksumMismatchError, ServerError, UnsafeNameError
from sinagot.testing import EmulatorServer, FaultRule

PROJECT = "P"
RECORD = "REC-200331-A"
FILE_GET = (
    "GET /data/projects/{project}/experiments/{experiment}/scans/{scan}/resources/{resource}"
    "/files/{path}"
)
LISTING = "GET /data/projects/{project}/experiments"
ATTEMPTS = 4
DATA = bytes(range(256)) * 4096  # 1 MiB


@pytest.fixture
def server(xnat_server: EmulatorServer) -> EmulatorServer:
    xnat_server.create_project(PROJECT)
    xnat_server.create_session(PROJECT, RECORD)
    xnat_server.add_scan_file(
        PROJECT, RECORD, scan_type="RS", resource="EEG", name="raw.bin", data=DATA
    )
    xnat_server.reset_counters()
    return xnat_server


@pytest.fixture
def store(server: EmulatorServer, tmp_path: Path) -> Iterator[XnatStore]:
    retry = RetryPolicy(attempts=ATTEMPTS, initial_delay=0.01, max_delay=0.05)
    with XnatStore(
        server.url,
        tmp_path / "cache",
        user="alice",
        password="secret",
        project=PROJECT,
        local_root=tmp_path / "work",
        retry=retry,
        timeout=1.0,
    ) as opened:
        yield opened


def fetch(store: XnatStore) -> FileSet:
    row = DataRow(RECORD)
    store.populate_row(row)
    return store.get_fileset(row.entries["RS/EEG"])


def cached_copy(store: XnatStore) -> Path | None:
    key = EntryKey(store.server, PROJECT, RECORD, "scans/1/resources/EEG")
    return store.cache.lookup(
        key, [RemoteFile("raw.bin", len(DATA), hashlib.md5(DATA).hexdigest())]
    )


@pytest.mark.parametrize(
    "rule",
    [
        FaultRule("status", path=r"/experiments$", status=503, retry_after=0, times=2),
        FaultRule("status", path=r"/experiments$", status=500, retry_after=None, times=2),
        FaultRule("status", path=r"/experiments$", status=429, retry_after=0, times=2),
        FaultRule("latency", path=r"/experiments$", delay=1.5, times=2),
    ],
    ids=["503", "500", "429", "latency"],
)
def test_transient_listing_faults_are_retried_to_success(
    server: EmulatorServer, store: XnatStore, rule: FaultRule
) -> None:
    server.set_faults([rule])
    tree = DataTree()
    store.populate_tree(tree)
    assert list(tree.rows) == [RECORD]
    assert server.request_counts()[LISTING] == 3  # two faults, one success: no storm
    assert sum(server.fault_counts().values()) == 2


@pytest.mark.parametrize("kind", ["reset", "truncate"])
def test_broken_bodies_resume_and_verify(
    server: EmulatorServer, store: XnatStore, kind: str
) -> None:
    server.set_faults([FaultRule(kind, path=r"raw\.bin$", times=2)])  # type: ignore[arg-type]
    fileset = fetch(store)
    assert (fileset.root / "raw.bin").read_bytes() == DATA
    assert server.fault_counts() == {kind: 2}
    assert server.request_counts()[FILE_GET] == 3


def test_a_slow_trickle_still_arrives(server: EmulatorServer, store: XnatStore) -> None:
    server.set_faults([FaultRule("trickle", path=r"raw\.bin$", chunk_size=256 * 1024, delay=0.01)])
    assert (fetch(store).root / "raw.bin").read_bytes() == DATA


def test_corrupt_bytes_never_reach_the_cache(server: EmulatorServer, store: XnatStore) -> None:
    server.set_faults([FaultRule("corrupt", path=r"raw\.bin$", times=1)])
    assert (fetch(store).root / "raw.bin").read_bytes() == DATA  # caught, fetched again

    server.set_faults([FaultRule("corrupt", path=r"raw\.bin$")])
    server.add_scan_file(
        PROJECT, RECORD, scan_type="RS", resource="EEG", name="raw.bin", data=DATA[::-1]
    )
    with pytest.raises(ChecksumMismatchError, match=r"raw\.bin"):
        fetch(store)
    # The verified old copy is still what the cache holds; the corrupt bytes are nowhere.
    assert cached_copy(store) is not None
    assert server.request_counts()[FILE_GET] == 2 + 2


def test_persistent_errors_give_up_after_bounded_tries(
    server: EmulatorServer, store: XnatStore
) -> None:
    server.set_faults([FaultRule("status", path=r"/experiments$", status=503, retry_after=0)])
    with pytest.raises(ServerError, match=r"failed GET .* 4 times \(last: HTTP 503\)"):
        store.populate_tree(DataTree())
    assert server.request_counts()[LISTING] == ATTEMPTS

    server.set_faults([FaultRule("reset", path=r"raw\.bin$", at=1000)])
    with pytest.raises(ServerError, match="check that the server is up"):
        fetch(store)
    assert server.request_counts()[FILE_GET] == ATTEMPTS
    assert cached_copy(store) is None


def test_a_server_failing_logins_is_not_hammered(server: EmulatorServer, store: XnatStore) -> None:
    server.set_faults([FaultRule("status", path=r"/JSESSION$", status=502, retry_after=0)])
    with pytest.raises(ServerError, match=r"failed GET /data/JSESSION 4 times"):
        store.list_sessions()
    assert server.request_counts()["GET /data/JSESSION"] == ATTEMPTS
    assert LISTING not in server.request_counts()


def test_a_failed_upload_is_never_complete(
    server: EmulatorServer, store: XnatStore, tmp_path: Path
) -> None:
    row = DataRow(RECORD)
    store.populate_row(row)
    entry = store.create_fileset_entry("out@sinagot", row)
    root = tmp_path / "out"
    root.mkdir()
    (root / "a.txt").write_bytes(b"a")
    (root / "b.txt").write_bytes(b"b")
    fileset = FileSet(root, ("a.txt", "b.txt"))
    store.put_fileset(fileset, entry)
    store.put_fileset_provenance({"run": 1}, entry)

    (root / "b.txt").write_bytes(b"B")
    server.set_faults(
        [FaultRule("status", path=r"/files/b\.txt$", method="PUT", status=500, retry_after=0)]
    )
    with pytest.raises(ServerError):
        store.put_fileset(fileset, entry)
    assert store.get_fileset_provenance(entry) is None  # the old commit was withdrawn first

    server.set_faults([])
    store.put_fileset(fileset, entry)  # the re-run completes it
    store.put_fileset_provenance({"run": 2}, entry)
    assert store.get_fileset_provenance(entry) == {"run": 2}
    assert store.get_checksums(entry.uri) == {
        "a.txt": hashlib.md5(b"a").hexdigest(),
        "b.txt": hashlib.md5(b"B").hexdigest(),
    }


@pytest.fixture
def hostile_server() -> Iterator[str]:
    """A server answering like XNAT but naming files and sessions that climb out of folders."""

    async def jsession(request: web.Request) -> web.Response:
        return web.Response(text="token")

    async def experiments(request: web.Request) -> web.Response:
        rows = [{"ID": "E1", "label": "../evil", "last_modified": "x"}, {"ID": "E2", "label": "ok"}]
        return web.json_response({"ResultSet": {"Result": rows}})

    async def scans(request: web.Request) -> web.Response:
        return web.json_response({"ResultSet": {"Result": [{"ID": "1", "type": "RS"}]}})

    async def resources(request: web.Request) -> web.Response:
        return web.json_response({"ResultSet": {"Result": [{"label": "EEG"}]}})

    async def files(request: web.Request) -> web.Response:
        row = {
            "Name": "passwd",
            "Size": "3",
            "digest": hashlib.md5(b"bad").hexdigest(),
            "URI": "/data/experiments/E2/scans/1/resources/EEG/files/../../etc/passwd",
        }
        return web.json_response({"ResultSet": {"Result": [row]}})

    async def empty(request: web.Request) -> web.Response:
        return web.json_response({"ResultSet": {"Result": []}})

    async def not_found(request: web.Request) -> web.Response:
        return web.Response(status=404)

    app = web.Application()
    base = "/data/projects/P/experiments"
    app.router.add_get("/data/JSESSION", jsession)
    app.router.add_get(base, experiments)
    app.router.add_get(base + "/ok/scans", scans)
    app.router.add_get(base + "/ok/scans/ALL/files", not_found)
    app.router.add_get(base + "/ok/scans/1/resources", resources)
    app.router.add_get(base + "/ok/scans/1/resources/EEG/files", files)
    app.router.add_get(base + "/ok/resources", empty)
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    runner = web.AppRunner(app)
    asyncio.run_coroutine_threadsafe(runner.setup(), loop).result(10)
    site = web.TCPSite(runner, "127.0.0.1", 0)
    asyncio.run_coroutine_threadsafe(site.start(), loop).result(10)
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    finally:
        asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


def test_unsafe_names_from_the_server_touch_nothing(hostile_server: str, tmp_path: Path) -> None:
    with XnatStore(
        hostile_server,
        tmp_path / "cache",
        user="u",
        password="p",
        project=PROJECT,
        local_root=tmp_path / "work",
    ) as store:
        tree = DataTree()
        store.populate_tree(tree)
        assert list(tree.rows) == ["ok"]  # "../evil" is ignored with a warning
        with pytest.raises(UnsafeNameError, match="not a safe relative path"):
            store.populate_row(DataRow("ok"))
    assert not (tmp_path / "cache").exists()
    assert not (tmp_path / "etc").exists()
