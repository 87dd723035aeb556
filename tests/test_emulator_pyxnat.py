"""The real pyxnat client against the emulator, and cross-checks with xnatpy."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import xnat
from pyxnat import Interface

from sinagot.demo import DEMO_RECORDS, DEMO_TASK_MODALITIES, load_demo, write_demo_recordings
from sinagot.testing import EmulatorServer
from sinagot.testing.pytest_plugin import XNAT_PASSWORD, XNAT_USER

RECORD = DEMO_RECORDS[0]


@pytest.fixture
def demo_server(xnat_server: EmulatorServer) -> EmulatorServer:
    load_demo(xnat_server)
    return xnat_server


@pytest.fixture
def interface(demo_server: EmulatorServer) -> Iterator[Interface]:
    connection = Interface(server=demo_server.url, user=XNAT_USER, password=XNAT_PASSWORD)
    yield connection
    connection.disconnect()


def test_select_and_exists(interface: Interface) -> None:
    assert interface.select.projects().get() == ["SONETAA"]
    project = interface.select.project("SONETAA")
    assert project.exists()
    assert len(project.subjects().get()) == len(DEMO_RECORDS)
    experiment = project.subject(RECORD).experiment(RECORD)
    assert experiment.exists()
    assert experiment.datatype() == "xnat:mrSessionData"
    assert experiment.scans().get() == ["1", "2", "3"]
    assert sorted(r.label() for r in experiment.scan("3").resources()) == sorted(
        DEMO_TASK_MODALITIES["HDC"]
    )
    assert not project.subject("nobody").exists()
    assert not experiment.resource("missing").exists()
    assert not experiment.scan("1").resource("EEG").file("missing.csv").exists()


def test_get_file(interface: Interface, tmp_path: Path) -> None:
    file_ = (
        interface.select.project("SONETAA")
        .subject(RECORD)
        .experiment(RECORD)
        .scan("1")
        .resource("EEG")
        .file("raw.csv")
    )
    assert file_.exists()
    local = Path(file_.get(str(tmp_path / "raw.csv")))
    write_demo_recordings(tmp_path / "demo", (RECORD,))
    assert (
        local.read_bytes() == (tmp_path / "demo" / RECORD / "RS" / "EEG" / "raw.csv").read_bytes()
    )


def test_insert_create_and_delete(interface: Interface, tmp_path: Path) -> None:
    project = interface.select.project("SONETAA")
    subject = project.subject("NEW-SUBJECT")
    subject.insert()
    experiment = subject.experiment("NEW-SESSION")
    experiment.insert(experiments="xnat:mrSessionData")
    assert subject.exists() and experiment.exists()
    experiment.scan("7").insert(scans="xnat:mrScanData")
    assert experiment.scans().get() == ["7"]
    resource = experiment.resource("derived")
    source = tmp_path / "mask.txt"
    source.write_bytes(b"mask bytes")
    resource.file("mask.txt").insert(str(source))
    assert resource.exists() and resource.file("mask.txt").exists()
    assert resource.files().get() == ["mask.txt"]
    (tmp_path / "out").mkdir()
    resource.get(str(tmp_path / "out"), extract=True)
    assert (tmp_path / "out" / "derived" / "mask.txt").read_bytes() == b"mask bytes"
    resource.file("mask.txt").delete()
    assert not resource.file("mask.txt").exists()
    resource.delete()
    assert not resource.exists()


def test_cross_client_byte_identical(demo_server: EmulatorServer, tmp_path: Path) -> None:
    payload = bytes(range(256)) * 4000 + b"tail"
    source = tmp_path / "payload.bin"
    source.write_bytes(payload)
    interface = Interface(server=demo_server.url, user=XNAT_USER, password=XNAT_PASSWORD)
    try:
        experiment = interface.select.project("SONETAA").subject(RECORD).experiment(RECORD)
        experiment.resource("from_pyxnat").file("payload.bin").insert(str(source))
        with xnat.connect(
            demo_server.url, user=XNAT_USER, password=XNAT_PASSWORD, loglevel="ERROR"
        ) as session:
            remote = session.projects["SONETAA"].experiments[RECORD]
            remote.resources["from_pyxnat"].files["payload.bin"].download(
                str(tmp_path / "via_xnatpy.bin"), verbose=False
            )
            created = remote.create_resource("from_xnatpy")
            created.upload(str(source), "payload.bin")
        assert (tmp_path / "via_xnatpy.bin").read_bytes() == payload
        back = (
            experiment.resource("from_xnatpy")
            .file("payload.bin")
            .get(str(tmp_path / "via_pyxnat.bin"))
        )
        assert Path(back).read_bytes() == payload
    finally:
        interface.disconnect()
