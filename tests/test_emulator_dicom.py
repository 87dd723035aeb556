"""The emulator's DICOM dump service, read as XNAT answers it (and as frametree-xnat reads it)."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

import pydicom
import pytest
import requests
from frametree.xnat import Xnat
from pydicom.dataset import FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from sinagot.testing import EmulatorServer

DUMP = "/data/services/dicomdump"
SCAN = "/projects/P/subjects/SUB/experiments/S1/scans/1"


def _dicom(path: Path, description: str) -> Path:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.4"
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = pydicom.Dataset()
    ds.file_meta = meta
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "M", "ND"]
    ds.Modality = "MR"
    ds.SeriesDescription = description
    ds.ImageComments = "A <&> B " + "x" * 80
    ds.AcquisitionTime = "152535.435000"
    item = pydicom.Dataset()
    item.ReferencedSOPInstanceUID = "1.2.3"
    ds.ReferencedImageSequence = Sequence([item])
    ds.Rows = 2
    ds.BitsAllocated = 8
    ds.PixelData = b"\0" * 8
    ds.save_as(path, enforce_file_format=True)
    return path


@pytest.fixture
def server(xnat_server: EmulatorServer, tmp_path: Path) -> EmulatorServer:
    xnat_server.create_project("P")
    xnat_server.create_session("P", "S1", subject="SUB")
    for name, description in (("b.dcm", "second"), ("a.dcm", "first")):
        xnat_server.add_scan_file(
            "P",
            "S1",
            scan_type="fmap",
            scan_id="1",
            resource="DICOM",
            name=name,
            data=_dicom(tmp_path / name, description),
        )
    xnat_server.add_scan_file(
        "P", "S1", scan_type="t1", scan_id="2", resource="NIFTI", name="t1.nii", data=b"nii"
    )
    return xnat_server


def _dump(
    server: EmulatorServer, auth: tuple[str, str] = ("alice", "secret"), **params: object
) -> requests.Response:
    return requests.get(server.url + DUMP, params=params, auth=auth, timeout=10)  # type: ignore[arg-type]


def _rows(server: EmulatorServer, **params: object) -> list[dict[str, str]]:
    answer = _dump(server, **params)
    assert answer.status_code == 200, answer.text
    rows: list[dict[str, str]] = answer.json()["ResultSet"]["Result"]
    return rows


def test_the_header_of_a_scans_first_dicom_file_in_xnats_rows(server: EmulatorServer) -> None:
    rows = _rows(server, src=SCAN)
    assert all(list(row) == ["tag1", "tag2", "vr", "value", "desc"] for row in rows)
    by_tag = {(r["tag1"], r["tag2"]): r for r in rows}
    assert by_tag[("(0008,103E)", "")]["value"] == "first"  # a.dcm, the first by name
    assert by_tag[("(0008,0008)", "")] == {
        "tag1": "(0008,0008)",
        "tag2": "",
        "vr": "CS",
        "value": "ORIGINAL\\PRIMARY\\M\\ND",
        "desc": "Image Type",
    }
    comments = by_tag[("(0020,4000)", "")]["value"]  # escaped, cut at 64 characters
    assert comments == "A &lt;&amp;&gt; B " + "x" * 56 + "..."
    # A sequence: a row for each item, then one per element of the item.
    assert by_tag[("(0008,1140)", "(0008,1140)")]["vr"] == "SQ"
    assert by_tag[("(0008,1140)", "(0008,1155)")]["value"] == "1.2.3"
    assert ("(7FE0,0010)", "") not in by_tag  # the pixel data is not read
    # The same file by every form of src XNAT takes; a whole session's first DICOM file.
    for src in (
        "/archive" + SCAN,
        "/projects/P/experiments/S1/scans/1",
        "/archive/projects/P/experiments/S1",
    ):
        assert _rows(server, src=src) == rows
    csv = _dump(server, src=SCAN, format="csv").text
    assert csv.splitlines()[0] == "tag1,tag2,vr,value,desc"


def test_fields_choose_rows(server: EmulatorServer) -> None:
    rows = _rows(server, src=SCAN, field=["SeriesDescription", "00080060"])
    assert [(r["tag1"], r["value"]) for r in rows] == [
        ("(0008,0060)", "MR"),
        ("(0008,103E)", "first"),
    ]
    bad = _dump(server, src=SCAN, field="NoSuchKeyword")
    assert bad.status_code == 400 and "not a valid DICOM attribute tag: NoSuchKeyword" in bad.text


def test_frametree_reads_the_header(server: EmulatorServer, tmp_path: Path) -> None:
    (tmp_path / "c").mkdir()
    store = Xnat(server=server.url, user="alice", password="secret", cache_dir=tmp_path / "c")
    header = store.get_dicom_header(
        "/data/projects/P/subjects/SUB/experiments/S1/scans/1/resources/DICOM"
    )
    assert header[("0008", "0060")] == ["MR"]
    assert header[("0008", "0032")] == 152535.435  # TM values as numbers


def test_wrong_requests(
    server: EmulatorServer, xnat_server_factory: Callable[..., EmulatorServer]
) -> None:
    assert _rows(server, src="/projects/P/experiments/S1/scans/2") == []  # no DICOM resource
    server.add_scan_file(
        "P", "S1", scan_type="bad", scan_id="3", resource="DICOM", name="x", data=b"no"
    )
    broken = _dump(server, src="/projects/P/experiments/S1/scans/3")
    assert broken.status_code == 500 and "x is not a DICOM file" in broken.text
    assert _dump(server).status_code == 400
    assert "names no session, scan or file" in _dump(server, src="/projects/P").text
    assert _dump(server, src="/projects/P/experiments/S9/scans/1").status_code == 404
    assert _dump(server, src=SCAN, auth=("alice", "wrong")).status_code == 401
    assert (
        requests.post(
            server.url + DUMP, params={"src": SCAN}, auth=("alice", "secret"), timeout=10
        ).status_code
        == 405
    )
    other = xnat_server_factory(users={"bob": "b"}, project_access={"bob": ["Q"]})
    other.create_project("P")
    other.create_session("P", "S1")
    assert _dump(other, src="/projects/P/experiments/S1", auth=("bob", "b")).status_code == 403


def test_without_pydicom_the_service_says_what_to_install(
    server: EmulatorServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "pydicom", None)
    answer = _dump(server, src=SCAN)
    assert answer.status_code == 501
    assert "pip install 'sinagot[emulator]'" in answer.text
