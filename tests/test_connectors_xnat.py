"""XnatStore against the XNAT emulator over real loopback sockets."""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from sinagot.cache import Cache
from sinagot.connectors import (
    AsyncXnatStore,
    DataRow,
    DataTree,
    FileSet,
    LoopPortal,
    RetryPolicy,
    SessionListing,
    XnatStore,
)
from sinagot.connectors.internals import Credentials, XnatClient
from sinagot.demo import load_demo
from sinagot.errors import (
    AccessDeniedError,
    AuthenticationError,
    ConfigError,
    RemoteNotFoundError,
    StoreError,
    UnsafeNameError,
)
from sinagot.testing import EmulatorServer, FaultRule

PROJECT = "SONETAA"
RECORD = "REC-200331-A"
SCAN_FILE_GET = (
    "GET /data/projects/{project}/experiments/{experiment}/scans/{scan}/resources/{resource}"
    "/files/{path}"
)
DERIVED = "/data/projects/{project}/experiments/{experiment}/resources/{resource}/files/{path}"

FAST_RETRY = RetryPolicy(attempts=4, initial_delay=0.01, max_delay=0.05)


def open_store(server: EmulatorServer, tmp_path: Path, **kwargs: object) -> XnatStore:
    options: dict[str, object] = {
        "user": "alice",
        "password": "secret",
        "project": PROJECT,
        "local_root": tmp_path / "work",
        "retry": FAST_RETRY,
    }
    options.update(kwargs)
    return XnatStore(server.url, tmp_path / "cache", **options)  # type: ignore[arg-type]


@pytest.fixture
def demo(xnat_server: EmulatorServer) -> EmulatorServer:
    load_demo(xnat_server, PROJECT)
    xnat_server.reset_counters()
    return xnat_server


@pytest.fixture
def store(demo: EmulatorServer, tmp_path: Path) -> Iterator[XnatStore]:
    with open_store(demo, tmp_path) as opened:
        yield opened


def populated(store: XnatStore, record: str = RECORD) -> DataRow:
    row = DataRow(record)
    store.populate_row(row)
    return row


def write_outputs(root: Path, files: dict[str, bytes]) -> FileSet:
    for name, data in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
    return FileSet(root=root, names=tuple(sorted(files)))


def test_a_thousand_sessions_are_listed_in_one_request(
    xnat_server: EmulatorServer, tmp_path: Path
) -> None:
    xnat_server.create_project(PROJECT)
    labels = [f"REC-{i:06d}-A" for i in range(1000)]
    for label in labels:
        xnat_server.create_session(PROJECT, label)
    xnat_server.reset_counters()
    with open_store(xnat_server, tmp_path) as store:
        tree = DataTree()
        store.populate_tree(tree)
    assert list(tree.rows) == labels
    assert all(row.last_modified for row in tree)
    counts = xnat_server.request_counts()
    assert counts["GET /data/projects/{project}/experiments"] == 1
    assert counts["GET /data/JSESSION"] == 1  # one login, not one per request


def test_populate_row_lists_scans_with_server_digests(store: XnatStore, tmp_path: Path) -> None:
    row = populated(store)
    assert sorted(row.entries) == [
        "HDC/EEG",
        "HDC/behavior",
        "HDC/clinical",
        "MMN/EEG",
        "MMN/clinical",
        "RS/EEG",
        "RS/clinical",
    ]
    fileset = store.get_fileset(row.entries["RS/EEG"])
    assert fileset.names == ("raw.csv",)
    data = (fileset.root / "raw.csv").read_bytes()
    assert hashlib.md5(data).hexdigest() == row.entries["RS/EEG"].checksums["raw.csv"]


def test_a_session_row_costs_three_requests(demo: EmulatorServer, store: XnatStore) -> None:
    store.connect()
    demo.reset_counters()
    row = populated(store)
    session = "GET /data/projects/{project}/experiments/{experiment}"
    assert demo.request_counts() == {
        f"{session}/scans": 1,
        f"{session}/resources": 1,
        f"{session}/scans/ALL/files": 1,
    }
    # The one listing gives what the per-resource listings give.
    for entry in row.entries.values():
        assert entry.checksums == store.get_checksums(entry.uri)
        assert entry.checksums


def test_a_cached_scan_is_never_downloaded_again(demo: EmulatorServer, tmp_path: Path) -> None:
    with open_store(demo, tmp_path) as first:
        row = populated(first)
        for entry in row.entries.values():
            first.get_fileset(entry)
    assert demo.request_counts()[SCAN_FILE_GET] == 7
    demo.reset_counters()
    with open_store(demo, tmp_path) as second:  # a new process would do the same
        row = populated(second)
        paths = [second.get_fileset(entry).root for entry in row.entries.values()]
    assert all(p.is_dir() for p in paths)
    assert SCAN_FILE_GET not in demo.request_counts()


def test_only_the_changed_file_is_downloaded_again(demo: EmulatorServer, tmp_path: Path) -> None:
    demo.add_scan_file(PROJECT, RECORD, scan_type="RS", resource="EEG", name="b.csv", data=b"b")
    with open_store(demo, tmp_path) as store:
        store.get_fileset(populated(store).entries["RS/EEG"])
        demo.add_scan_file(PROJECT, RECORD, scan_type="RS", resource="EEG", name="b.csv", data=b"B")
        demo.reset_counters()
        fileset = store.get_fileset(populated(store).entries["RS/EEG"])
    assert (fileset.root / "b.csv").read_bytes() == b"B"
    assert demo.request_counts()[SCAN_FILE_GET] == 1


def test_a_fileset_outlives_a_newer_generation(demo: EmulatorServer, tmp_path: Path) -> None:
    with open_store(demo, tmp_path, local_root=tmp_path / "first") as first:
        old = first.get_fileset(populated(first).entries["RS/EEG"])
    old_bytes = (old.root / "raw.csv").read_bytes()
    demo.add_scan_file(PROJECT, RECORD, scan_type="RS", resource="EEG", name="raw.csv", data=b"2")
    # Another user of the same cache commits the new version; nobody uses the old one.
    with open_store(demo, tmp_path, local_root=tmp_path / "second") as second:
        entry = populated(second).entries["RS/EEG"]
        new = second.get_fileset(entry)
        key = second.aio.entry_key(entry)
        manifest = second.cache.manifest(key)
        generations = [p.name for p in second.cache.entry_dir(key).glob("g-*")]
    assert manifest is not None and generations == [manifest.generation]  # the old one is pruned
    assert old.root == tmp_path / "first" / RECORD / "RS" / "EEG"
    assert (old.root / "raw.csv").read_bytes() == old_bytes != b"2"
    assert (new.root / "raw.csv").read_bytes() == b"2"


def test_derivatives_round_trip_and_xnatpy_reads_them(
    demo: EmulatorServer, store: XnatStore, tmp_path: Path
) -> None:
    xnat = pytest.importorskip("xnat")
    row = populated(store)
    outputs = {"RS/EEG/filtered.csv": b"t,Fz\n0,1\n", "RS/EEG/sub/more.bin": bytes(range(256))}
    fileset = write_outputs(tmp_path / "out", outputs)
    entry = store.create_fileset_entry("RS_EEG_preprocess@sinagot", row)
    store.put_fileset(fileset, entry)
    assert store.get_fileset_provenance(entry) is None  # not committed yet
    provenance = {
        "status": "success",
        "outputs": {name: hashlib.md5(data).hexdigest() for name, data in outputs.items()},
    }
    store.put_fileset_provenance(provenance, entry)

    again = populated(store)
    assert "RS_EEG_preprocess@sinagot" in again.entries
    # Back in the work tree where the step wrote them.
    fetched = store.get_fileset(again.entries["RS_EEG_preprocess@sinagot"])
    assert fetched.names == tuple(sorted(outputs))
    assert all((fetched.root / name).read_bytes() == data for name, data in outputs.items())
    assert store.get_fileset_provenance(again.entries["RS_EEG_preprocess@sinagot"]) == provenance

    with xnat.connect(demo.url, user="alice", password="secret") as session:
        experiment = session.projects[PROJECT].experiments[RECORD]
        # As FrameTree reads a column: the outputs alone, relative to their folder...
        resource = experiment.resources["RS_EEG_preprocess___at___sinagot"]
        relative = {name.removeprefix("RS/EEG/"): data for name, data in outputs.items()}
        assert {f.path for f in resource.files.values()} == set(relative)
        target = tmp_path / "via-xnatpy"
        target.mkdir()
        for name, data in relative.items():
            resource.files[name].download(str(target / "f"), verbose=False)
            assert (target / "f").read_bytes() == data
        # ... and the provenance where FrameTree's get_provenance looks for it.
        marker = experiment.resources["PROVENANCE"].files["RS_EEG_preprocess___at___sinagot.json"]
        marker.download(str(target / "p.json"), verbose=False)
        assert json.loads((target / "p.json").read_text()) == provenance


def test_reupload_is_idempotent_and_uncommits_first(
    demo: EmulatorServer, store: XnatStore, tmp_path: Path
) -> None:
    row = populated(store)
    entry = store.create_fileset_entry("clean@sinagot", row)
    fileset = write_outputs(tmp_path / "out", {"a.txt": b"a", "old.txt": b"old"})
    store.put_fileset(fileset, entry)
    store.put_fileset_provenance({"run": 1}, entry)

    demo.reset_counters()
    store.put_fileset(fileset, entry)  # nothing changed: nothing is sent again
    counts = demo.request_counts()
    assert counts.get(f"PUT {DERIVED}", 0) == 0
    # Re-putting files un-commits the entry until its provenance is written again.
    assert store.get_fileset_provenance(entry) is None

    (fileset.root / "a.txt").write_bytes(b"A")
    store.put_fileset(FileSet(fileset.root, ("a.txt",)), entry)
    assert store.get_checksums(entry.uri) == {"a.txt": hashlib.md5(b"A").hexdigest()}
    assert demo.request_counts()[f"PUT {DERIVED}"] == 1
    # The provenance at the first put only (the store knows it removed it), then old.txt.
    assert demo.request_counts()[f"DELETE {DERIVED}"] == 2
    store.put_fileset_provenance({"run": 2}, entry)
    assert store.get_fileset_provenance(entry) == {"run": 2}


RESOURCE = "/data/projects/{project}/experiments/{experiment}/resources/{resource}"


def test_a_new_derivative_is_uploaded_without_asking_about_it(
    demo: EmulatorServer, store: XnatStore, tmp_path: Path
) -> None:
    row = populated(store)
    entry = store.create_fileset_entry("clean@sinagot", row)
    fileset = write_outputs(tmp_path / "out", {"a.txt": b"a"})
    demo.reset_counters()
    store.put_fileset(fileset, entry)
    store.put_fileset_provenance({"run": 1}, entry)
    # The session's listing showed neither its resource nor its provenance: no 404 is
    # asked for, and the file's one PUT creates the resource.
    assert demo.request_counts() == {f"PUT {DERIVED}": 2, f"GET {RESOURCE}/files": 1}
    assert store.get_checksums(entry.uri) == {"a.txt": hashlib.md5(b"a").hexdigest()}
    assert store.get_fileset_provenance(entry) == {"run": 1}


def test_a_server_refusing_uploads_into_a_missing_resource_gets_it_created(
    demo: EmulatorServer, store: XnatStore, tmp_path: Path
) -> None:
    row = populated(store)
    entry = store.create_fileset_entry("clean@sinagot", row)
    fileset = write_outputs(tmp_path / "out", {"a.txt": b"a"})
    demo.set_faults(
        [FaultRule("status", path="clean___at___sinagot/files/", method="PUT", status=404, times=1)]
    )
    demo.reset_counters()
    store.put_fileset(fileset, entry)
    counts = demo.request_counts()
    assert (counts[f"PUT {DERIVED}"], counts[f"PUT {RESOURCE}"]) == (2, 1), counts
    assert store.get_checksums(entry.uri) == {"a.txt": hashlib.md5(b"a").hexdigest()}


def test_primary_data_is_never_written(store: XnatStore, tmp_path: Path) -> None:
    row = populated(store)
    fileset = write_outputs(tmp_path / "out", {"raw.csv": b"x"})
    with pytest.raises(StoreError, match="acquired data"):
        store.put_fileset(fileset, row.entries["RS/EEG"])
    with pytest.raises(StoreError, match="name@pipeline"):
        store.create_fileset_entry("RS/EEG", row)


def test_fields_and_frameset_definitions(store: XnatStore) -> None:
    row = populated(store)
    field = store.create_field_entry("score@sinagot", row)
    with pytest.raises(RemoteNotFoundError, match="no value yet"):
        store.get_field(field)
    store.put_field([1.5, 2.5], field)
    store.put_field_provenance({"status": "success"}, field)
    assert store.get_field(field) == [1.5, 2.5]
    assert store.get_field_provenance(field) == {"status": "success"}
    store.put_field("text", field)
    assert store.get_field(field) == "text"

    assert store.load_frameset_definition(PROJECT, "main") is None
    store.save_frameset_definition(PROJECT, {"axes": "Clinical"}, "main")
    assert store.load_frameset_definition(PROJECT, "main") == {"axes": "Clinical"}


@pytest.mark.parametrize(
    "long_name",
    ["x" * 296 + ".csv", "\u00e9" * 130 + ".csv"],
    ids=["300 characters", "264 bytes in 134 characters"],
)
def test_a_file_name_too_long_for_the_file_system_is_one_clear_error(
    xnat_server: EmulatorServer, tmp_path: Path, long_name: str
) -> None:
    xnat_server.create_project(PROJECT)
    for label in ("REC-1", "REC-2"):
        xnat_server.create_session(PROJECT, label)
        xnat_server.add_scan_file(
            PROJECT, label, scan_type="RS", resource="EEG", name="ok.csv", data=b"ok"
        )
    xnat_server.add_scan_file(
        PROJECT, "REC-1", scan_type="RS", resource="EEG", name=long_name, data=b"long"
    )
    with open_store(xnat_server, tmp_path) as store:
        with pytest.raises(UnsafeNameError, match="over the 255-byte limit") as info:
            populated(store, "REC-1")
        message = str(info.value)
        assert "\n" not in message and long_name not in message
        assert long_name[:20] in message and message.count(".csv") == 1
        cache = tmp_path / "cache"
        assert not cache.exists() or not any(cache.rglob("*"))
        fileset = store.get_fileset(populated(store, "REC-2").entries["RS/EEG"])
        assert (fileset.root / "ok.csv").read_bytes() == b"ok"


def test_create_data_tree_makes_sessions(xnat_server: EmulatorServer, tmp_path: Path) -> None:
    from sinagot.axes import Axes

    class Sessions(Axes):
        session = 0b1
        constant = 0b0

    xnat_server.create_project("NEW")
    with open_store(xnat_server, tmp_path, project="NEW") as store:
        store.create_data_tree("NEW", [("S1", "S1_V1"), ("S1", "S1_V2")], ["subject"], Sessions)
        assert [s.label for s in store.list_sessions()] == ["S1_V1", "S1_V2"]


def test_password_from_env_or_netrc_and_never_shown(
    demo: EmulatorServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="sinagot")
    monkeypatch.delenv("SINAGOT_XNAT_PASSWORD", raising=False)
    with pytest.raises(ConfigError, match="no password for XNAT user 'alice'"):
        open_store(demo, tmp_path, password=None, netrc_file=tmp_path / "none")

    netrc = tmp_path / "netrc"
    netrc.write_text("machine 127.0.0.1 login alice password secret\n")
    with open_store(demo, tmp_path, user=None, password=None, netrc_file=netrc) as store:
        assert store.list_sessions()[0].label == RECORD
        assert "secret" not in repr(store)

    monkeypatch.setenv("SINAGOT_XNAT_PASSWORD", "wrong-password")
    with (
        open_store(demo, tmp_path, password=None) as store,
        pytest.raises(AuthenticationError) as info,
    ):
        store.list_sessions()
    message = str(info.value)
    assert "check user/password" in message
    assert "wrong-password" not in message
    assert "secret" not in caplog.text and "wrong-password" not in caplog.text
    assert "come from netrc" in caplog.text  # the logs say where it came from, not what
    assert "\n" not in message


def test_clear_errors_are_not_retried(
    xnat_server_factory: Callable[..., EmulatorServer], tmp_path: Path
) -> None:
    server = xnat_server_factory(
        users={"alice": "secret", "bob": "pw"}, project_access={"bob": ["OTHER"]}
    )
    load_demo(server, PROJECT)
    server.reset_counters()
    with (
        open_store(server, tmp_path, user="bob", password="pw") as store,
        pytest.raises(AccessDeniedError, match=f"no access to project {PROJECT}"),
    ):
        store.list_sessions()
    assert server.request_counts()["GET /data/projects/{project}/experiments"] == 1

    with (
        open_store(server, tmp_path) as store,
        pytest.raises(RemoteNotFoundError, match="no such session/resource session REC-999999-Z"),
    ):
        store.populate_row(DataRow("REC-999999-Z"))
    with (
        open_store(server, tmp_path, password="nope") as store,
        pytest.raises(AuthenticationError, match="check user/password"),
    ):
        store.list_sessions()
    assert server.request_counts()["GET /data/JSESSION"] == 3


def test_logs_in_again_after_the_session_expires(
    xnat_server_factory: Callable[..., EmulatorServer], tmp_path: Path
) -> None:
    server = xnat_server_factory(session_expiry=0.2)
    load_demo(server, PROJECT)
    server.reset_counters()
    with open_store(server, tmp_path) as store:
        store.list_sessions()
        time.sleep(0.5)  # let the server forget the session
        assert len(store.list_sessions()) == 5
    assert server.request_counts()["GET /data/JSESSION"] == 2


async def test_async_and_blocking_callers_share_one_store(
    demo: EmulatorServer, tmp_path: Path
) -> None:
    # The daemon's way: the async store on the caller's loop, with injected client and
    # cache, and the engine's blocking view of it from a worker thread.
    client = XnatClient(demo.url, Credentials("alice", "secret"), project=PROJECT, retry=FAST_RETRY)
    aio = AsyncXnatStore(client, Cache(tmp_path / "cache"), local_root=tmp_path / "work")
    try:
        sessions = await aio.list_sessions()
        assert sessions[0] == SessionListing(RECORD, sessions[0].last_modified)
        rows = [DataRow(s.label) for s in sessions]
        await asyncio.gather(*(aio.populate_row(row) for row in rows))
        filesets = await asyncio.gather(*(aio.get_fileset(row.entries["RS/EEG"]) for row in rows))
        assert all(fs.names == ("raw.csv",) for fs in filesets)

        blocking = XnatStore.over(aio, LoopPortal(asyncio.get_running_loop()))
        out = write_outputs(tmp_path / "out", {"x.txt": b"x"})
        entry = blocking.create_fileset_entry("x@sinagot", rows[0])
        await asyncio.to_thread(blocking.put_fileset, out, entry)
        await asyncio.to_thread(blocking.put_fileset_provenance, {"ok": True}, entry)
        assert await aio.get_provenance(entry) == {"ok": True}
        assert blocking.get_fileset_provenance is not None
    finally:
        await aio.aclose()
    counts = demo.request_counts()
    assert counts["GET /data/JSESSION"] == 1  # one session for both kinds of caller
    assert counts["DELETE /data/JSESSION"] >= 1


def test_retry_after_is_honoured(
    demo: EmulatorServer, store: XnatStore, caplog: pytest.LogCaptureFixture
) -> None:

    demo.set_faults(
        [FaultRule("status", path=r"/experiments$", status=429, retry_after=1, times=1)]
    )
    with caplog.at_level(logging.WARNING, logger="sinagot.connectors"):
        assert len(store.list_sessions()) == 5
    # The store's own backoff is at most 0.06 s here: 1.0 s can only be the server's word.
    assert "HTTP 429; try 2 of 4 in 1.0 s" in caplog.text


def test_populate_row_requests_do_not_grow_with_files(
    demo: EmulatorServer, store: XnatStore
) -> None:
    populated(store, "REC-200331-B")  # learns once whether the server lists all files at once
    demo.reset_counters()
    populated(store)
    few = sum(demo.request_counts().values())
    for index in range(40):
        demo.add_scan_file(
            PROJECT, RECORD, scan_type="RS", resource="EEG", name=f"extra/{index}.csv", data=b"x"
        )
    demo.reset_counters()
    row = populated(store)
    assert sum(demo.request_counts().values()) == few
    assert len(row.entries["RS/EEG"].checksums) == 41


def test_local_checksums_are_md5s(store: XnatStore, tmp_path: Path) -> None:
    files = {f"f{i}.txt": str(i).encode() for i in range(5)}
    fileset = write_outputs(tmp_path / "out", files)
    assert store.calculate_checksums(fileset) == {
        name: hashlib.md5(data).hexdigest() for name, data in files.items()
    }


@pytest.mark.slow
def test_a_1_gib_download_keeps_memory_bounded(demo: EmulatorServer, tmp_path: Path) -> None:
    psutil = pytest.importorskip("psutil")
    big = tmp_path / "big.bin"
    with big.open("wb") as handle:  # sparse: quick to make, still 1 GiB on the wire
        handle.truncate(1 << 30)
    demo.add_scan_file(PROJECT, RECORD, scan_type="RS", resource="BIG", name="big.bin", data=big)
    big.unlink()
    process = psutil.Process()
    with open_store(demo, tmp_path) as store:
        entry = populated(store).entries["RS/BIG"]
        before = peak = process.memory_info().rss
        done = threading.Event()

        def sample() -> None:
            nonlocal peak
            while not done.wait(0.02):
                peak = max(peak, process.memory_info().rss)

        sampler = threading.Thread(target=sample)
        sampler.start()
        try:
            fileset = store.get_fileset(entry)
        finally:
            done.set()
            sampler.join()
    assert (fileset.root / "big.bin").stat().st_size == 1 << 30
    # Server and client share this process: both together stay under the bound.
    assert peak - before < 50 << 20


def test_remote_store_offers_the_guides_methods() -> None:
    from sinagot.connectors import RemoteStore

    guide = [
        "calculate_checksums",
        "connect",
        "disconnect",
        "create_data_tree",
        "create_field_entry",
        "create_fileset_entry",
        "download_files",
        "download_value",
        "get_checksums",
        "get_provenance",
        "put_provenance",
        "load_frameset_definition",
        "save_frameset_definition",
        "populate_row",
        "populate_tree",
        "put_checksums",
        "upload_files",
        "upload_value",
    ]
    assert [name for name in guide if not callable(getattr(RemoteStore, name, None))] == []
    assert {"download_files", "upload_files", "get_provenance", "put_provenance"} <= set(
        RemoteStore.__abstractmethods__
    )
    with pytest.raises(TypeError):
        RemoteStore("http://127.0.0.1:1", "cache")  # type: ignore[abstract]
