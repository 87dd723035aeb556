"""What Sinagot uploads feeds the cache (issue 26, point 3).

A derivative and its provenance, once the server lists them with the digests of the
bytes sent, are entered in the cache as the entry a download would have made: a fresh
work tree, or another node on the same cache, downloads none of them. Requests are
counted by the emulator (its profile is ``$SINAGOT_TEST_XNAT_PROFILE``'s).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import xnat

from sinagot import Dataset
from sinagot.cache import Cache, LocalFileSource, RemoteFile
from sinagot.demo import load_demo
from sinagot.errors import ChecksumMismatchError
from sinagot.testing import EmulatorServer
from sinagot.testing.pytest_plugin import XNAT_PASSWORD, XNAT_USER
from test_cache_helpers import KEY, expected_digests, make_files, tree_digests
from test_connectors_roundtrip import PROJECT, SCAN_FILE_GET, STEPS, write_config

DERIVED_FILE_GET = (
    "GET /data/projects/{project}/experiments/{experiment}/resources/{resource}/files/{path}"
)


def _file_gets(counts: dict[str, int]) -> dict[str, int]:
    return {
        route: n for route, n in counts.items() if route.startswith("GET ") and "/files/" in route
    }


def _home_is_clean(cache: Cache) -> None:
    """No staging folder of a finished adoption is left behind."""
    assert not list(cache.entry_dir(KEY).glob("tmp-*"))


def test_a_fresh_tree_and_another_node_download_no_derivative_sinagot_put_up(
    xnat_server: EmulatorServer, tmp_path: Path
) -> None:
    load_demo(xnat_server, PROJECT)
    first = Dataset(write_config(tmp_path, xnat_server, "work")).run()
    assert (first.ran, first.failed) == (STEPS, 0), str(first)

    # A fresh work tree on the same cache: inputs were cached by the first run's
    # downloads, outputs and provenance by its uploads.
    xnat_server.reset_counters()
    fresh = Dataset(write_config(tmp_path, xnat_server, "fresh")).run()
    assert (fresh.ran, fresh.skipped) == (0, STEPS), str(fresh)
    assert _file_gets(xnat_server.request_counts()) == {}
    output = Path("REC-200331-A", "derivatives", "RS", "EEG", "filtered.csv")
    assert (tmp_path / "fresh" / output).read_bytes() == (tmp_path / "work" / output).read_bytes()

    # Another node sharing the cache: another process, another work tree.
    xnat_server.reset_counters()
    node = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; from sinagot import Dataset; r = Dataset(sys.argv[1]).run();"
            " print(r.ran, r.skipped, r.failed)",
            str(write_config(tmp_path, xnat_server, "node")),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
        cwd=tmp_path,
    )
    assert node.stdout.split() == ["0", str(STEPS), "0"], node.stderr
    counts = xnat_server.request_counts()
    assert SCAN_FILE_GET not in counts and DERIVED_FILE_GET not in counts, counts


def test_a_provenance_the_server_lists_with_another_digest_is_downloaded(
    xnat_server: EmulatorServer, tmp_path: Path
) -> None:
    load_demo(xnat_server, PROJECT)
    record = "REC-200331-A"
    first = Dataset(write_config(tmp_path, xnat_server, "work")).get(record).run()
    assert first.failed == 0 and first.ran > 0, str(first)
    # Someone else rewrites one provenance document after Sinagot's upload (a key added,
    # written as Sinagot writes it: the step stays up to date, and the work tree's copy
    # is read again): the cache's copy is no longer what the server lists.
    name = "RS_EEG_preprocess___at___sinagot.json"
    marker = (
        tmp_path
        / "work"
        / record
        / "derivatives"
        / ".provenance"
        / "RS_EEG_preprocess@sinagot.json"
    )
    document = json.loads(marker.read_bytes())
    document["note"] = "rewritten on the server"
    uri = f"/data/projects/{PROJECT}/experiments/{record}/resources/PROVENANCE/files/{name}"
    with xnat.connect(xnat_server.url, user=XNAT_USER, password=XNAT_PASSWORD) as session:
        session.put(
            uri,
            query={"overwrite": "true", "inbody": "true"},
            data=json.dumps(document, indent=2, sort_keys=True) + "\n",
        )

    xnat_server.reset_counters()
    fresh = Dataset(write_config(tmp_path, xnat_server, "fresh")).get(record).run()
    assert (fresh.ran, fresh.failed) == (0, 0), str(fresh)
    # That one document is fetched; every other one, and every output, comes from the cache.
    assert _file_gets(xnat_server.request_counts()) == {DERIVED_FILE_GET: 1}
    copy = tmp_path / "fresh" / marker.relative_to(tmp_path / "work")
    assert json.loads(copy.read_bytes())["note"] == "rewritten on the server"


def test_only_bytes_of_the_listed_digest_are_adopted(tmp_path: Path) -> None:
    files = make_files(tmp_path / "src", {"a.txt": 700, "b/c.bin": 3000})
    sources = {f.name: tmp_path / "src" / f.name for f in files}
    cache = Cache(tmp_path / "cache")
    # The server lists other bytes than ours for b/c.bin: nothing is entered.
    other = hashlib.md5(b"what the server holds").hexdigest()
    listed = [files[0], RemoteFile(files[1].name, files[1].size, other)]
    with pytest.raises(ChecksumMismatchError):
        asyncio.run(cache.adopt(KEY, listed, sources))
    assert cache.manifest(KEY) is None and cache.lookup(KEY, listed) is None
    _home_is_clean(cache)
    # Without digests, nothing could vouch for the bytes.
    with pytest.raises(ValueError, match="digest"):
        asyncio.run(cache.adopt(KEY, [RemoteFile("a.txt", 700, "")], sources))

    # As listed: entered, then served by fetch without a single read of the source.
    folder = asyncio.run(cache.adopt(KEY, files, sources))
    assert tree_digests(folder) == expected_digests(files)
    _home_is_clean(cache)
    nowhere = LocalFileSource(tmp_path / "empty")
    assert asyncio.run(cache.fetch(KEY, files, nowhere)) == folder
    # The cache holds a copy: changing the uploaded file later leaves the entry as it was.
    sources["a.txt"].write_bytes(b"changed")
    assert tree_digests(folder) == expected_digests(files)


def _adopter(cache_root: Path, name: str, size: int, md5: str, source: Path) -> list[str]:
    code = (
        "import asyncio, sys; from pathlib import Path;"
        " from sinagot.cache import Cache, RemoteFile;"
        " from test_cache_helpers import KEY;"
        " root, name, size, md5, source = sys.argv[1:];"
        " asyncio.run(Cache(Path(root)).adopt(KEY, [RemoteFile(name, int(size), md5)],"
        " {name: Path(source)}))"
    )
    return [sys.executable, "-c", code, str(cache_root), name, str(size), md5, str(source)]


def test_sigkill_mid_adoption_leaves_no_entry_and_the_next_one_completes(
    tmp_path: Path,
) -> None:
    [file] = make_files(tmp_path / "src", {"out.bin": 2 << 20})
    data = (tmp_path / "src" / file.name).read_bytes()
    # A pipe as the source: the adopter blocks mid-copy, with half the bytes staged.
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    cache = Cache(tmp_path / "cache", race_condition_delay=0.5)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parent)}
    child = subprocess.Popen(
        _adopter(cache.root, file.name, file.size, file.digest, fifo),
        env=env,
        stderr=subprocess.DEVNULL,
    )
    try:
        with fifo.open("wb") as writer:
            writer.write(data[: 1 << 20])
            writer.flush()
            deadline = time.monotonic() + 60
            staged = cache.entry_dir(KEY).glob
            while not any(p.stat().st_size for p in staged("tmp-*/files/out.bin")):
                assert time.monotonic() < deadline, "the adopter never staged a byte"
                time.sleep(0.01)
            child.send_signal(signal.SIGKILL)
            child.wait(timeout=60)
    finally:
        child.kill()
        child.wait()
    assert child.returncode == -signal.SIGKILL
    assert cache.manifest(KEY) is None and cache.lookup(KEY, [file]) is None
    assert not list(cache.entry_dir(KEY).glob("g-*"))

    # The dead holder's lock and staging folder are taken over; the entry is complete.
    folder = asyncio.run(cache.adopt(KEY, [file], {file.name: tmp_path / "src" / file.name}))
    assert (folder / file.name).read_bytes() == data
    assert cache.lookup(KEY, [file]) == folder
    _home_is_clean(cache)
