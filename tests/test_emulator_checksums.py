"""Checksums off, as on an XNAT whose setting is off: files listed with an empty digest."""

from __future__ import annotations

import hashlib
import io
import zipfile
from collections.abc import Callable
from pathlib import Path

import requests
import xnat
from pyxnat import Interface

from sinagot.testing import EmulatorServer
from sinagot.testing.pytest_plugin import XNAT_PASSWORD, XNAT_USER

AUTH = (XNAT_USER, XNAT_PASSWORD)


def _digests(server: EmulatorServer, project: str = "P") -> dict[str, str]:
    url = f"{server.url}/data/projects/{project}/experiments/S1/scans/1/resources/EEG/files"
    rows = requests.get(url, auth=AUTH, timeout=10).json()["ResultSet"]["Result"]
    return {row["Name"]: row["digest"] for row in rows}


def _add(server: EmulatorServer, name: str, data: bytes, project: str = "P", **kw: bool) -> str:
    return server.add_scan_file(
        project, "S1", scan_type="RS", resource="EEG", name=name, data=data, **kw
    )


def test_project_without_checksums_lists_empty_digests_and_clients_still_download(
    xnat_server: EmulatorServer, tmp_path: Path
) -> None:
    xnat_server.create_project("P", checksums=False)
    xnat_server.create_session("P", "S1")
    assert _add(xnat_server, "raw.csv", b"a,b\n1,2\n") == ""
    xnat_server.create_project("ON")
    xnat_server.create_session("ON", "S1")
    _add(xnat_server, "raw.csv", b"other", project="ON")
    assert _digests(xnat_server) == {"raw.csv": ""}
    assert _digests(xnat_server, "ON") == {"raw.csv": hashlib.md5(b"other").hexdigest()}

    with xnat.connect(
        xnat_server.url, user=XNAT_USER, password=XNAT_PASSWORD, loglevel="ERROR"
    ) as session:
        file_ = (
            session.projects["P"].experiments["S1"].scans["RS"].resources["EEG"].files["raw.csv"]
        )
        assert file_.digest == ""
        file_.download(str(tmp_path / "xnatpy.csv"), verbose=False)
    assert (tmp_path / "xnatpy.csv").read_bytes() == b"a,b\n1,2\n"

    interface = Interface(server=xnat_server.url, user=XNAT_USER, password=XNAT_PASSWORD)
    try:
        resource = interface.select.project("P").subject("S1").experiment("S1").scan("1")
        resource = resource.resource("EEG")
        resource.file("raw.csv").get(str(tmp_path / "pyxnat.csv"))
    finally:
        interface.disconnect()
    assert (tmp_path / "pyxnat.csv").read_bytes() == b"a,b\n1,2\n"


def test_one_file_without_digest_among_others(xnat_server: EmulatorServer) -> None:
    xnat_server.create_project("P")
    xnat_server.create_session("P", "S1")
    old = _add(xnat_server, "archived-before.csv", b"old", digest=False)
    new = _add(xnat_server, "new.csv", b"new")
    assert (old, new) == ("", hashlib.md5(b"new").hexdigest())
    assert _digests(xnat_server) == {"archived-before.csv": "", "new.csv": new}


def test_uploads_while_off_keep_no_digest_after_it_is_back_on(
    xnat_server: EmulatorServer,
) -> None:
    xnat_server.create_project("P")
    xnat_server.create_session("P", "S1")
    _add(xnat_server, "seed.csv", b"seed")
    admin = f"{xnat_server.url}/_emulator/checksums"
    off = requests.post(admin, json={"enabled": False, "project": "P"}, timeout=10)
    assert off.json() == {"site": True, "projects": {"P": False}}
    files = f"{xnat_server.url}/data/projects/P/experiments/S1/scans/1/resources/EEG/files"
    with xnat.connect(
        xnat_server.url, user=XNAT_USER, password=XNAT_PASSWORD, loglevel="ERROR"
    ) as session:
        resource = session.projects["P"].experiments["S1"].scans["RS"].resources["EEG"]
        resource.upload_data(b"while off", "off.csv")
        extracted = requests.put(
            f"{files}/bundle.zip",
            data=_zip({"in/zip.txt": b"z"}),
            params={"extract": "true"},
            auth=AUTH,
            timeout=10,
        )
        assert extracted.status_code == 200
        requests.post(admin, json={"enabled": True, "project": "P"}, timeout=10)
        resource.upload_data(b"back on", "on.csv")
    assert _digests(xnat_server) == {
        "seed.csv": hashlib.md5(b"seed").hexdigest(),
        "off.csv": "",
        "zip.txt": "",
        "on.csv": hashlib.md5(b"back on").hexdigest(),
    }


def _zip(members: dict[str, bytes]) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return out.getvalue()


def test_site_setting_off_covers_every_project(
    xnat_server_factory: Callable[..., EmulatorServer],
) -> None:
    server = xnat_server_factory(checksums=False)
    server.create_project("P")
    server.create_session("P", "S1")
    _add(server, "a.csv", b"a")
    assert _digests(server) == {"a.csv": ""}
    admin = f"{server.url}/_emulator/checksums"
    assert requests.get(admin, timeout=10).json() == {"site": False, "projects": {"P": True}}
    server.set_checksums(True)
    _add(server, "b.csv", b"b")
    assert _digests(server) == {"a.csv": "", "b.csv": hashlib.md5(b"b").hexdigest()}
    assert requests.post(admin, json={"enabled": "no"}, timeout=10).status_code == 400
    missing = requests.post(admin, json={"enabled": False, "project": "NOPE"}, timeout=10)
    assert missing.status_code == 404 and "NOPE" in missing.json()["error"]


def test_seeding_again_without_digest_changes_nothing(xnat_server: EmulatorServer) -> None:
    xnat_server.create_project("P", checksums=False)
    xnat_server.create_session("P", "S1")
    _add(xnat_server, "a.csv", b"same")
    before = [e.modified_ms for e in xnat_server.store.experiments("P")]
    _add(xnat_server, "a.csv", b"same")
    assert [e.modified_ms for e in xnat_server.store.experiments("P")] == before
    _add(xnat_server, "a.csv", b"diff")
    assert [e.modified_ms for e in xnat_server.store.experiments("P")] != before


def test_project_setting_survives_a_restart(tmp_path: Path) -> None:
    first = EmulatorServer(tmp_path)
    first.create_project("P", checksums=False)
    first.close()
    second = EmulatorServer(tmp_path)
    second.create_project("P")  # found as it is: still off
    second.create_session("P", "S1")
    assert _add(second, "a.csv", b"a") == ""
    second.create_project("P", checksums=True)
    assert _add(second, "b.csv", b"b") == hashlib.md5(b"b").hexdigest()
    second.close()
