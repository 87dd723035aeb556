"""Uploads with ``extract=true`` unpacked as XNAT does, and hostile archives refused whole."""

from __future__ import annotations

import hashlib
import io
import os
import stat
import tarfile
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import requests
import xnat
from pyxnat import Interface

from sinagot.testing import EmulatorServer, ExtractLimits, Owner
from sinagot.testing.pytest_plugin import XNAT_PASSWORD, XNAT_USER

AUTH = (XNAT_USER, XNAT_PASSWORD)
TREE = {"one.txt": b"one", "sub/two.txt": b"two" * 100, "sub/deeper/three.bin": os.urandom(5000)}


@pytest.fixture
def server(xnat_server: EmulatorServer) -> EmulatorServer:
    xnat_server.create_project("P")
    xnat_server.create_session("P", "S1")
    xnat_server.add_scan_file("P", "S1", scan_type="RS", resource="EEG", name="f.bin", data=b"x")
    return xnat_server


@pytest.fixture
def session(server: EmulatorServer) -> Iterator[xnat.session.XNATSession]:
    with xnat.connect(server.url, user=XNAT_USER, password=XNAT_PASSWORD, loglevel="ERROR") as s:
        yield s


def _write_tree(root: Path) -> Path:
    for name, data in TREE.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
    return root


def _listing(server: EmulatorServer, resource: str = "OUT") -> dict[str, str]:
    """Path in the resource -> listed digest."""
    url = f"{server.url}/data/projects/P/experiments/S1/resources/{resource}/files"
    rows = requests.get(url, auth=AUTH, timeout=10).json()["ResultSet"]["Result"]
    return {row["URI"].split("/files/", 1)[1]: row["digest"] for row in rows}


def _md5s(tree: dict[str, bytes]) -> dict[str, str]:
    return {name: hashlib.md5(data).hexdigest() for name, data in tree.items()}


def _put_archive(server: EmulatorServer, name: str, body: bytes) -> requests.Response:
    url = f"{server.url}/data/projects/P/experiments/S1/resources/OUT/files/{name}"
    return requests.put(url, data=body, params={"extract": "true"}, auth=AUTH, timeout=30)


def _nothing_stored(server: EmulatorServer) -> bool:
    experiment = server.store.find_experiment("P", "S1")
    assert experiment is not None
    resource = server.store.find_resource(Owner("experiment", experiment.id), "OUT")
    leftovers = list((server.data_dir / "tmp").iterdir())
    return resource is None and leftovers == []


@pytest.mark.parametrize("method", ["tgz_file", "tar_memory"])
def test_xnatpy_upload_dir_is_unpacked_into_files(
    server: EmulatorServer, session: xnat.session.XNATSession, tmp_path: Path, method: str
) -> None:
    experiment = session.projects["P"].experiments["S1"]
    resource = session.classes.ResourceCatalog(parent=experiment, label="OUT", format="TXT")
    resource.upload_dir(_write_tree(tmp_path / "tree"), method=method)
    assert _listing(server) == _md5s(TREE)
    # xnatpy itself reads them back, checking every digest.
    resource.download_dir(str(tmp_path / "back"), verbose=False)
    files = tmp_path / "back" / "S1" / "resources" / "OUT" / "files"
    assert {p.relative_to(files).as_posix(): p.read_bytes() for p in files.rglob("*.*")} == TREE


def test_xnatpy_upload_dir_twice_needs_overwrite(
    server: EmulatorServer, session: xnat.session.XNATSession, tmp_path: Path
) -> None:
    resource = session.classes.ResourceCatalog(
        parent=session.projects["P"].experiments["S1"], label="OUT"
    )
    tree = _write_tree(tmp_path / "tree")
    resource.upload_dir(tree)
    (tree / "one.txt").write_bytes(b"changed")
    (tree / "new.txt").write_bytes(b"new")
    with pytest.raises(xnat.exceptions.XNATUploadError, match=r"409.*exists in resource OUT"):
        resource.upload_dir(tree)
    assert _listing(server) == _md5s(TREE)  # the refused upload changed nothing
    resource.upload_dir(tree, overwrite=True)
    assert _listing(server) == _md5s({**TREE, "one.txt": b"changed", "new.txt": b"new"})


def test_zip_is_unpacked_for_xnatpy_and_pyxnat(
    server: EmulatorServer, session: xnat.session.XNATSession, tmp_path: Path
) -> None:
    bundle = tmp_path / "bundle.zip"
    with zipfile.ZipFile(bundle, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in TREE.items():
            archive.writestr(name, data)
        archive.writestr("sub/", b"")  # a directory entry: nothing to store
    resource = session.classes.ResourceCatalog(
        parent=session.projects["P"].experiments["S1"], label="OUT"
    )
    resource.upload(bundle, "bundle.zip", extract=True)
    assert _listing(server) == _md5s(TREE)
    interface = Interface(server=server.url, user=XNAT_USER, password=XNAT_PASSWORD)
    try:
        other = interface.select.project("P").subject("S1").experiment("S1").resource("PY")
        other.put_dir(str(_write_tree(tmp_path / "tree")))  # pyxnat zips and extracts
    finally:
        interface.disconnect()
    assert _listing(server, "PY") == _md5s(TREE)


def test_extract_of_something_else_stores_it_as_it_is(server: EmulatorServer) -> None:
    assert _put_archive(server, "notes.txt", b"plain").status_code == 200
    assert _listing(server) == _md5s({"notes.txt": b"plain"})


def _tar(*members: tuple[tarfile.TarInfo, bytes]) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w:gz") as archive:
        archive.addfile(_info("fine.txt", tarfile.REGTYPE, 2), io.BytesIO(b"ok"))
        for info, data in members:
            archive.addfile(info, io.BytesIO(data) if data else None)
    return out.getvalue()


def _info(name: str, kind: bytes, size: int = 0, link: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.size, info.linkname = kind, size, link
    return info


def _zip(name: str, data: bytes, mode: int = stat.S_IFREG | 0o644) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        archive.writestr("fine.txt", b"ok")
        info = zipfile.ZipInfo(name)
        info.create_system = 3  # Unix: the file type is in the high bits
        info.external_attr = mode << 16
        archive.writestr(info, data)
    return out.getvalue()


HOSTILE: dict[str, tuple[str, bytes, str]] = {
    "tar dot-dot": (
        "x.tar.gz",
        _tar((_info("../../escape.txt", tarfile.REGTYPE, 4), b"evil")),
        "outside its resource",
    ),
    "tar absolute": (
        "x.tgz",
        _tar((_info("/etc/cron.d/evil", tarfile.REGTYPE, 4), b"evil")),
        "outside its resource",
    ),
    "tar symlink": (
        "x.tar.gz",
        _tar((_info("link", tarfile.SYMTYPE, link="/etc/passwd"), b"")),
        "is a link",
    ),
    "tar hard link": (
        "x.tar.gz",
        _tar((_info("hard", tarfile.LNKTYPE, link="fine.txt"), b"")),
        "is a link",
    ),
    "tar fifo": ("x.tar.gz", _tar((_info("pipe", tarfile.FIFOTYPE), b"")), "special file"),
    "tar device": ("x.tar.gz", _tar((_info("dev", tarfile.CHRTYPE), b"")), "special file"),
    "zip dot-dot": ("x.zip", _zip("a/../../escape.txt", b"evil"), "outside its resource"),
    "zip absolute": ("x.zip", _zip("/tmp/evil", b"evil"), "outside its resource"),
    "zip symlink": ("x.zip", _zip("link", b"/etc/passwd", stat.S_IFLNK | 0o777), "is a link"),
    "corrupt gzip": ("x.tar.gz", b"\x1f\x8b" + os.urandom(2000), "not a readable tar archive"),
    "truncated zip": ("x.zip", _zip("big.bin", os.urandom(5000))[:3000], "not a readable zip"),
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_archives_are_refused_whole(server: EmulatorServer, case: str) -> None:
    name, body, reason = HOSTILE[case]
    answer = _put_archive(server, name, body)
    assert answer.status_code == 400
    assert reason in answer.text
    assert _nothing_stored(server)
    assert not (server.data_dir / "escape.txt").exists()


def test_duplicate_members_are_refused(server: EmulatorServer) -> None:
    twice = _tar((_info("fine.txt", tarfile.REGTYPE, 3), b"two"))
    answer = _put_archive(server, "twice.tar.gz", twice)
    assert answer.status_code == 400 and "appears twice" in answer.text
    assert _nothing_stored(server)


@pytest.mark.parametrize(
    ("limits", "body", "reason"),
    [
        (ExtractLimits(max_members=3), _zip("a/b.txt", b"b"), ""),
        (ExtractLimits(max_members=1), _zip("a/b.txt", b"b"), "more than 1 files"),
        (ExtractLimits(max_bytes=5_002), _zip("big.bin", bytes(5000)), ""),
        (ExtractLimits(max_bytes=5_001), _zip("big.bin", bytes(5000)), "more than 5001 bytes"),
    ],
)
def test_extract_limits(
    xnat_server_factory: Callable[..., EmulatorServer],
    limits: ExtractLimits,
    body: bytes,
    reason: str,
) -> None:
    server = xnat_server_factory(extract_limits=limits)
    server.create_project("P")
    server.create_session("P", "S1")
    answer = _put_archive(server, "x.zip", body)
    if reason:
        assert answer.status_code == 400 and reason in answer.text
        assert _nothing_stored(server)
    else:
        assert answer.status_code == 200
        assert len(_listing(server)) == 2


def test_a_small_archive_that_unpacks_huge_is_stopped(
    xnat_server_factory: Callable[..., EmulatorServer],
) -> None:
    server = xnat_server_factory(extract_limits=ExtractLimits(max_bytes=1 << 20))
    server.create_project("P")
    server.create_session("P", "S1")
    bomb = io.BytesIO()
    with zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("zeros.bin", bytes(64 << 20))
    assert len(bomb.getvalue()) < 100_000
    answer = _put_archive(server, "bomb.zip", bomb.getvalue())
    assert answer.status_code == 400 and "unpacks to more than" in answer.text
    assert _nothing_stored(server)


def test_extract_limits_must_make_sense() -> None:
    with pytest.raises(ValueError, match="at least 1 member"):
        ExtractLimits(max_members=0)
