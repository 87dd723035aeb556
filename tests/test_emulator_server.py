"""The emulator's own guarantees: persistence, concurrency, streaming, the async API."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
import zipfile
from io import BytesIO
from pathlib import Path

import aiohttp
import pytest
import requests

from sinagot.demo import load_demo
from sinagot.errors import EmulatorError
from sinagot.testing import EmulatorServer, Owner

AUTH = {"Authorization": "Basic " + base64.b64encode(b"alice:secret").decode()}
USERS = {"alice": "secret"}


def _files_url(server: EmulatorServer, resource: str = "EEG") -> str:
    return f"{server.url}/data/projects/P/experiments/S1/scans/1/resources/{resource}/files"


def _seed(server: EmulatorServer) -> None:
    server.create_project("P")
    server.create_session("P", "S1", subject="SUBJ")
    server.add_scan_file("P", "S1", scan_type="RS", resource="EEG", name="a.bin", data=b"a" * 10)


async def test_async_context_manager_serves_and_stops(tmp_path: Path) -> None:
    server = EmulatorServer(tmp_path, users=USERS)
    async with server:
        _seed(server)
        async with (
            aiohttp.ClientSession(headers=AUTH) as http,
            http.get(f"{_files_url(server)}/a.bin") as response,
        ):
            assert response.status == 200
            assert await response.read() == b"a" * 10
        url = server.url
    server.close()
    with pytest.raises(RuntimeError, match="not running"):
        _ = server.url
    with pytest.raises(aiohttp.ClientConnectionError):
        async with aiohttp.ClientSession() as http, http.get(url):
            pass


def test_restart_finds_everything(tmp_path: Path) -> None:
    first = EmulatorServer(tmp_path / "data", users=USERS)
    with first.running_in_thread():
        _seed(first)
        put = requests.put(
            f"{_files_url(first, 'out')}/deep/x.txt",
            data=b"persisted",
            params={"overwrite": "true"},
            auth=("alice", "secret"),
            timeout=10,
        )
        assert put.status_code == 200
        first.set_fields("P", "S1", {"score": "3"})
        before = requests.get(
            f"{first.url}/data/projects/P/experiments", auth=("alice", "secret"), timeout=10
        ).json()
    first.close()

    second = EmulatorServer(tmp_path / "data", users=USERS)
    with second.running_in_thread():
        after = requests.get(
            f"{second.url}/data/projects/P/experiments", auth=("alice", "secret"), timeout=10
        ).json()
        assert after == before
        listing = requests.get(
            _files_url(second, "out"), auth=("alice", "secret"), timeout=10
        ).json()["ResultSet"]["Result"]
        assert [(r["Name"], r["digest"]) for r in listing] == [
            ("x.txt", hashlib.md5(b"persisted").hexdigest())
        ]
        body = requests.get(
            second.url + listing[0]["URI"], auth=("alice", "secret"), timeout=10
        ).content
        assert body == b"persisted"
        experiment_id = after["ResultSet"]["Result"][0]["ID"]
        assert second.store.fields(Owner("experiment", experiment_id)) == {"score": "3"}
        assert second.create_session("P", "S2") == "XNAT_E00002"  # ids continue
    second.close()


async def test_concurrent_uploads_to_one_resource(tmp_path: Path) -> None:
    server = EmulatorServer(tmp_path, users=USERS)
    async with server:
        _seed(server)
        bodies = {f"f{i}.bin": os.urandom(50_000 + i) for i in range(20)}
        same = [os.urandom(80_000) for _ in range(10)]
        async with aiohttp.ClientSession(headers=AUTH) as http:

            async def put(name: str, data: bytes) -> int:
                async with http.put(
                    f"{_files_url(server, 'shared')}/{name}",
                    data=data,
                    params={"overwrite": "true"},
                ) as response:
                    return response.status

            async with asyncio.TaskGroup() as group:
                tasks = [group.create_task(put(n, d)) for n, d in bodies.items()]
                tasks += [group.create_task(put("same.bin", d)) for d in same]
            assert [t.result() for t in tasks] == [200] * 30
            async with http.get(_files_url(server, "shared"), params={"format": "json"}) as r:
                rows = (await r.json())["ResultSet"]["Result"]
            assert len(rows) == 21
            for row in rows:
                async with http.get(server.url + row["URI"]) as response:
                    data = await response.read()
                assert hashlib.md5(data).hexdigest() == row["digest"]
                if row["Name"] == "same.bin":
                    assert data in same
                else:
                    assert data == bodies[row["Name"]]
    assert list((tmp_path / "tmp").iterdir()) == []
    server.close()


async def test_hundred_concurrent_one_mib_downloads(tmp_path: Path) -> None:
    server = EmulatorServer(tmp_path, users=USERS)
    server.create_project("P")
    server.create_session("P", "S1")
    digests = {}
    for index in range(100):
        data = os.urandom(1024 * 1024)
        digests[f"f{index:03d}.bin"] = server.add_scan_file(
            "P", "S1", scan_type="RS", resource="EEG", name=f"f{index:03d}.bin", data=data
        )
    async with server:
        connector = aiohttp.TCPConnector(limit=100)
        async with aiohttp.ClientSession(headers=AUTH, connector=connector) as http:

            async def fetch(name: str) -> str:
                hasher = hashlib.md5()
                async with http.get(f"{_files_url(server)}/{name}") as response:
                    response.raise_for_status()
                    async for chunk in response.content.iter_chunked(65536):
                        hasher.update(chunk)
                return hasher.hexdigest()

            async with asyncio.timeout(120), asyncio.TaskGroup() as group:
                tasks = {name: group.create_task(fetch(name)) for name in digests}
        assert {name: task.result() for name, task in tasks.items()} == digests
    assert server.request_counts() == {
        "GET /data/projects/{project}/experiments/{experiment}/scans/{scan}"
        "/resources/{resource}/files/{path}": 100
    }
    server.close()


def test_uploads_multipart_zip_extract_and_unsafe_names(xnat_server: EmulatorServer) -> None:
    _seed(xnat_server)
    auth = ("alice", "secret")
    url = _files_url(xnat_server, "multi")
    multipart = requests.post(url, files={"file": ("m.txt", b"multipart body")}, auth=auth)
    assert multipart.status_code == 200
    archive = BytesIO()
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("dir/one.txt", b"one")
        zf.writestr("two.txt", b"two")
    extracted = requests.put(
        f"{url}/bundle.zip", data=archive.getvalue(), params={"extract": "true"}, auth=auth
    )
    assert extracted.status_code == 200
    rows = requests.get(url, auth=auth, timeout=10).json()["ResultSet"]["Result"]
    assert sorted(r["URI"].split("/files/", 1)[1] for r in rows) == [
        "dir/one.txt",
        "m.txt",
        "two.txt",
    ]
    unsafe = requests.put(f"{url}/a%2F..%2F..%2Fescape.txt", data=b"x", auth=auth, timeout=10)
    assert unsafe.status_code == 400
    assert requests.get(f"{url}/missing.txt", auth=auth, timeout=10).status_code == 404
    head = requests.head(f"{url}/m.txt", auth=auth, timeout=10)
    assert head.headers["Content-Length"] == str(len(b"multipart body"))


def test_seeding_twice_keeps_modification_times(tmp_path: Path) -> None:
    server = EmulatorServer(tmp_path)
    load_demo(server)
    before = [(e.id, e.modified_ms) for e in server.store.experiments("SONETAA")]
    load_demo(server)
    assert [(e.id, e.modified_ms) for e in server.store.experiments("SONETAA")] == before
    server.close()


def test_seeding_errors_name_the_fix(tmp_path: Path) -> None:
    server = EmulatorServer(tmp_path)
    with pytest.raises(EmulatorError, match="create it first"):
        server.create_session("NOPE", "S1")
    server.create_project("P")
    with pytest.raises(EmulatorError, match="call create_session first"):
        server.add_scan_file("P", "S9", scan_type="RS", resource="EEG", name="x", data=b"x")
    server.close()


def test_all_scan_files_of_a_session_in_one_json_listing(xnat_server: EmulatorServer) -> None:
    _seed(xnat_server)
    xnat_server.add_scan_file("P", "S1", scan_type="MMN", resource="EEG", name="d/b.bin", data=b"b")
    xnat_server.add_scan_file("P", "S1", scan_type="MMN", resource="clinical", name="c", data=b"c")
    auth = ("alice", "secret")
    scans = f"{xnat_server.url}/data/projects/P/experiments/S1/scans"

    def resource_id(scan: str, label: str) -> str:
        listing = requests.get(f"{scans}/{scan}/resources", auth=auth, timeout=10).json()
        return next(
            r["xnat_abstractresource_id"]
            for r in listing["ResultSet"]["Result"]
            if r["label"] == label
        )

    answer = requests.get(f"{scans}/ALL/files", params={"format": "json"}, auth=auth, timeout=10)
    rows = answer.json()["ResultSet"]["Result"]
    # Real XNAT's shape: the resource id in the URI and cat_ID, its label in collection.
    expected = [
        ("1", "EEG", "a.bin", b"a" * 10),
        ("2", "EEG", "d/b.bin", b"b"),
        ("2", "clinical", "c", b"c"),
    ]
    assert [(r["URI"], r["collection"], r["cat_ID"], r["Name"], r["digest"]) for r in rows] == [
        (
            f"/data/experiments/XNAT_E00001/scans/{scan}/resources/"
            f"{resource_id(scan, label)}/files/{name}",
            label,
            resource_id(scan, label),
            name.rsplit("/", 1)[-1],
            hashlib.md5(data).hexdigest(),
        )
        for scan, label, name, data in expected
    ]
    for row in rows:  # the URIs lead to the files
        got = requests.get(f"{xnat_server.url}{row['URI']}", auth=auth, timeout=10)
        assert hashlib.md5(got.content).hexdigest() == row["digest"]
    unknown = requests.get(f"{scans}/ALL/files", params={"format": "html"}, auth=auth, timeout=10)
    assert unknown.status_code == 400


def test_client_abort_mid_zip_and_head(xnat_server: EmulatorServer) -> None:
    _seed(xnat_server)
    for index in range(8):
        xnat_server.add_scan_file(
            "P", "S1", scan_type="RS", resource="EEG", name=f"z{index}.bin", data=bytes(2_000_000)
        )
    auth = ("alice", "secret")
    url = f"{xnat_server.url}/data/projects/P/experiments/S1/scans/ALL/files"
    head = requests.head(url, params={"format": "zip"}, auth=auth, timeout=10)
    assert head.status_code == 200 and head.content == b""
    with requests.get(url, params={"format": "zip"}, auth=auth, stream=True, timeout=10) as r:
        assert len(next(r.iter_content(1000))) > 0  # then drop the connection mid-archive
    whole = requests.get(url, params={"format": "zip"}, auth=auth, timeout=30)
    with zipfile.ZipFile(BytesIO(whole.content)) as archive:
        assert len(archive.namelist()) == 9


@pytest.mark.parametrize(
    "owner",
    [
        "/data/projects/P",
        "/data/projects/P/subjects/SUBJ",
        "/data/experiments/XNAT_E00001",
        "/REST/projects/P/subjects/SUBJ/experiments/S1/scans/1",
    ],
)
def test_resources_at_every_level(xnat_server: EmulatorServer, owner: str) -> None:
    _seed(xnat_server)
    auth = ("alice", "secret")
    base = f"{xnat_server.url}{owner}/resources"
    assert requests.put(f"{base}/notes", params={"format": "TXT"}, auth=auth).status_code == 200
    assert requests.put(f"{base}/notes/files/n.txt", data=b"note", auth=auth).status_code == 200
    rows = requests.get(base, auth=auth, timeout=10).json()["ResultSet"]["Result"]
    notes = next(r for r in rows if r["label"] == "notes")
    assert (notes["format"], notes["file_count"], notes["file_size"]) == ("TXT", "1", "4")
    by_id = requests.get(
        f"{base}/{notes['xnat_abstractresource_id']}/files", auth=auth, timeout=10
    ).json()["ResultSet"]["Result"]
    assert requests.get(xnat_server.url + by_id[0]["URI"], auth=auth).content == b"note"
    assert requests.delete(f"{base}/notes", auth=auth, timeout=10).status_code == 200
    assert requests.get(f"{base}/notes/files", auth=auth, timeout=10).status_code == 404


@pytest.mark.parametrize("size", [1000, 600_000])  # read inline, and streamed from disk
def test_range_requests(xnat_server: EmulatorServer, size: int) -> None:
    _seed(xnat_server)
    data = os.urandom(size)
    xnat_server.add_scan_file("P", "S1", scan_type="RS", resource="EEG", name="r.bin", data=data)
    url = f"{_files_url(xnat_server)}/r.bin"
    auth = ("alice", "secret")
    for header, expected in [
        ("bytes=10-19", data[10:20]),
        ("bytes=-7", data[-7:]),
        (f"bytes={size - 5}-", data[-5:]),
    ]:
        response = requests.get(url, headers={"Range": header}, auth=auth, timeout=10)
        assert response.status_code == 206
        assert response.content == expected
        assert response.headers["Content-Length"] == str(len(expected))
    whole = requests.get(url, auth=auth, timeout=10)
    assert whole.status_code == 200 and whole.content == data
    beyond = requests.get(url, headers={"Range": f"bytes={size}-"}, auth=auth, timeout=10)
    assert beyond.status_code == 416


def test_small_files_served_again_follow_writes_and_access(tmp_path: Path) -> None:
    users = {"alice": "secret", "bob": "pw"}
    server = EmulatorServer(tmp_path, users=users, project_access={"bob": ["OTHER"]})
    with server.running_in_thread():
        _seed(server)
        url = f"{_files_url(server)}/a.bin"
        alice, bob = ("alice", "secret"), ("bob", "pw")
        for _ in range(2):  # the second answer comes from memory
            assert requests.get(url, auth=alice, timeout=10).content == b"a" * 10
            assert requests.get(url, auth=bob, timeout=10).status_code == 403
        server.add_scan_file("P", "S1", scan_type="RS", resource="EEG", name="a.bin", data=b"new")
        assert requests.get(url, auth=alice, timeout=10).content == b"new"
        put = requests.put(url, data=b"put", params={"overwrite": "true"}, auth=alice, timeout=10)
        assert put.status_code == 200
        assert requests.get(url, auth=alice, timeout=10).content == b"put"
        assert requests.delete(url, auth=alice, timeout=10).status_code == 200
        assert requests.get(url, auth=alice, timeout=10).status_code == 404
    server.close()
