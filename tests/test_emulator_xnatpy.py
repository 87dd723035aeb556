"""The real xnatpy client against the emulator: walk, download, upload, digests, fields."""

from __future__ import annotations

import datetime
import hashlib
import time
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import requests
import xnat

from sinagot.demo import DEMO_RECORDS, DEMO_TASK_MODALITIES, load_demo
from sinagot.errors import EmulatorError
from sinagot.testing import EmulatorServer, Owner
from sinagot.testing.pytest_plugin import XNAT_PASSWORD, XNAT_USER


@pytest.fixture
def demo_server(xnat_server: EmulatorServer) -> EmulatorServer:
    load_demo(xnat_server)
    return xnat_server


@pytest.fixture
def session(demo_server: EmulatorServer) -> Iterator[xnat.session.XNATSession]:
    with xnat.connect(
        demo_server.url, user=XNAT_USER, password=XNAT_PASSWORD, loglevel="ERROR"
    ) as connection:
        yield connection


def test_walk_matches_demo_layout(session: xnat.session.XNATSession) -> None:
    project = session.projects["SONETAA"]
    assert sorted(s.label for s in project.subjects.values()) == sorted(DEMO_RECORDS)
    assert sorted(e.label for e in project.experiments.values()) == sorted(DEMO_RECORDS)
    experiment = project.experiments[DEMO_RECORDS[0]]
    scans = list(experiment.scans.values())
    assert [s.type for s in scans] == list(DEMO_TASK_MODALITIES)
    assert [s.id for s in scans] == ["1", "2", "3"]
    for scan in scans:
        labels = sorted(r.label for r in scan.resources.values())
        assert labels == sorted(DEMO_TASK_MODALITIES[scan.type])
        for resource in scan.resources.values():
            assert len(resource.files) == 1


def test_download_file_checks_digest(session: xnat.session.XNATSession, tmp_path: Path) -> None:
    experiment = session.projects["SONETAA"].experiments[DEMO_RECORDS[0]]
    file_ = experiment.scans["RS"].resources["EEG"].files["raw.csv"]
    target = tmp_path / "raw.csv"
    file_.download(str(target), verbose=False)
    assert hashlib.md5(target.read_bytes()).hexdigest() == file_.digest
    assert target.stat().st_size == int(file_.size)


def test_download_resource_and_session_zip(
    session: xnat.session.XNATSession, tmp_path: Path
) -> None:
    experiment = session.projects["SONETAA"].experiments[DEMO_RECORDS[1]]
    experiment.scans["HDC"].resources["behavior"].download(str(tmp_path / "r.zip"), verbose=False)
    with zipfile.ZipFile(tmp_path / "r.zip") as archive:
        assert archive.namelist() == [
            f"{DEMO_RECORDS[1]}/scans/3/resources/behavior/files/responses.csv"
        ]
        assert archive.testzip() is None
    experiment.download(str(tmp_path / "s.zip"), verbose=False)
    with zipfile.ZipFile(tmp_path / "s.zip") as archive:
        expected = sum(len(m) for m in DEMO_TASK_MODALITIES.values())
        assert len(archive.namelist()) == expected
        assert archive.testzip() is None
    experiment.scans["RS"].resources["EEG"].download_dir(str(tmp_path / "dir"), verbose=False)
    assert list((tmp_path / "dir").rglob("raw.csv"))


def test_create_resource_upload_and_digest(
    session: xnat.session.XNATSession, tmp_path: Path
) -> None:
    experiment = session.projects["SONETAA"].experiments[DEMO_RECORDS[0]]
    resource = experiment.create_resource("spectrum@sinagot")
    payload = b"frequency,power\n10,3.5\n" * 1000
    source = tmp_path / "spectrum.csv"
    source.write_bytes(payload)
    resource.upload(str(source), "nested/spectrum.csv")
    resource.clearcache()
    listed = experiment.resources["spectrum@sinagot"].files["nested/spectrum.csv"]
    assert listed.digest == hashlib.md5(payload).hexdigest()
    assert int(listed.size) == len(payload)
    back = tmp_path / "back.csv"
    listed.download(str(back), verbose=False)
    assert back.read_bytes() == payload


def test_upload_existing_file_without_overwrite_is_refused(
    session: xnat.session.XNATSession, tmp_path: Path
) -> None:
    experiment = session.projects["SONETAA"].experiments[DEMO_RECORDS[0]]
    resource = experiment.create_resource("out")
    source = tmp_path / "a.txt"
    source.write_bytes(b"one")
    resource.upload(str(source), "a.txt")
    source.write_bytes(b"two")
    with pytest.raises(xnat.exceptions.XNATUploadError, match="409"):
        resource.upload(str(source), "a.txt")
    resource.upload(str(source), "a.txt", overwrite=True)
    resource.clearcache()
    assert resource.files["a.txt"].digest == hashlib.md5(b"two").hexdigest()


def test_custom_fields_round_trip(session: xnat.session.XNATSession) -> None:
    experiment = session.projects["SONETAA"].experiments[DEMO_RECORDS[2]]
    assert dict(experiment.fields) == {}
    experiment.fields["spectrum_peak"] = "10.5"
    experiment.fields["status"] = "done"
    experiment.clearcache()
    assert dict(experiment.fields) == {"spectrum_peak": "10.5", "status": "done"}
    experiment.fields["status"] = "redo"
    experiment.clearcache()
    assert experiment.fields["status"] == "redo"


def _modified(server: EmulatorServer, label: str) -> str:
    response = requests.get(
        f"{server.url}/data/projects/SONETAA/experiments",
        params={"columns": "ID,label,last_modified,insert_date", "format": "json"},
        auth=(XNAT_USER, XNAT_PASSWORD),
        timeout=10,
    )
    response.raise_for_status()
    rows = response.json()["ResultSet"]["Result"]
    assert set(rows[0]) == {"ID", "label", "last_modified", "insert_date", "URI"}
    return str(next(r["last_modified"] for r in rows if r["label"] == label))


def test_last_modified_bumps_on_every_change(
    demo_server: EmulatorServer, session: xnat.session.XNATSession, tmp_path: Path
) -> None:
    label = DEMO_RECORDS[3]
    experiment = session.projects["SONETAA"].experiments[label]
    seen = [_modified(demo_server, label)]
    resource = experiment.create_resource("derived")
    seen.append(_modified(demo_server, label))
    source = tmp_path / "x.txt"
    source.write_bytes(b"x")
    resource.upload(str(source), "x.txt")
    seen.append(_modified(demo_server, label))
    resource.clearcache()
    resource.files["x.txt"].delete()
    seen.append(_modified(demo_server, label))
    experiment.fields["k"] = "v"
    seen.append(_modified(demo_server, label))
    # xnatpy's object delete() walks listings of every session ever opened in this
    # process (a client quirk), so delete through the plain REST call.
    session.delete(resource.uri)
    seen.append(_modified(demo_server, label))
    # "YYYY-MM-DD HH:MM:SS.fff" sorts as text; every change gives a strictly later value.
    assert all(len(stamp) == 23 for stamp in seen)
    assert seen == sorted(seen)
    assert len(set(seen)) == len(seen)
    others = {r: _modified(demo_server, r) for r in DEMO_RECORDS if r != label}
    assert all(stamp < seen[-1] for stamp in others.values())


def test_bad_password_is_refused(demo_server: EmulatorServer) -> None:
    with pytest.raises(xnat.exceptions.XNATLoginFailedError):
        xnat.connect(demo_server.url, user=XNAT_USER, password="wrong", loglevel="CRITICAL")


def test_project_access_and_session_expiry(
    xnat_server_factory: Callable[..., EmulatorServer],
) -> None:
    server = xnat_server_factory(
        users={"alice": "secret", "bob": "pw"},
        project_access={"alice": None, "bob": ["OTHER"]},
        session_expiry=0.2,
    )
    load_demo(server)
    url = f"{server.url}/data/projects/SONETAA/experiments?format=json"
    assert requests.get(url, auth=("bob", "pw"), timeout=10).status_code == 403
    assert requests.get(url, auth=("bob", "nope"), timeout=10).status_code == 401
    projects = requests.get(f"{server.url}/data/projects", auth=("bob", "pw"), timeout=10)
    assert projects.json()["ResultSet"]["Result"] == []

    client = requests.Session()
    login = client.post(f"{server.url}/data/JSESSION", auth=("alice", "secret"), timeout=10)
    assert login.status_code == 200 and client.cookies["JSESSIONID"] == login.text
    assert client.get(url, timeout=10).status_code == 200  # cookie only
    time.sleep(0.5)  # idle longer than the 0.2 s expiry (monotonic clock on both sides)
    assert client.get(url, timeout=10).status_code == 401
    relogin = client.post(f"{server.url}/data/JSESSION", auth=("alice", "secret"), timeout=10)
    assert relogin.text != login.text
    assert client.get(url, timeout=10).status_code == 200
    client.delete(f"{server.url}/data/JSESSION", timeout=10)
    assert client.get(url, timeout=10).status_code == 401


def test_create_subject_session_and_scan(xnat_server: EmulatorServer) -> None:
    xnat_server.create_project("NEW")
    with xnat.connect(
        xnat_server.url, user=XNAT_USER, password=XNAT_PASSWORD, loglevel="ERROR"
    ) as session:
        project = session.projects["NEW"]
        subject = session.classes.SubjectData(parent=project, label="SUBJ1")
        experiment = session.classes.EegSessionData(parent=subject, label="REC-200331-A")
        scan = session.classes.MrScanData(parent=experiment, id="4", type="RS")
        assert (subject.id, experiment.id, scan.id, scan.type) == (
            "XNAT_S00001",
            "XNAT_E00001",
            "4",
            "RS",
        )
        scan.create_resource("EEG")
        project.clearcache()
        assert [e.label for e in project.experiments.values()] == ["REC-200331-A"]
    found = xnat_server.store.find_experiment("NEW", "REC-200331-A")
    assert found is not None and found.xsi_type == "xnat:eegSessionData"


def test_session_and_scan_fields_read_and_set_through_the_schema(
    xnat_server: EmulatorServer,
) -> None:
    xnat_server.create_project("P")
    xnat_server.create_session(
        "P", "S1", date="2024-01-02", time="09:30:00", visit_id="V1", age=41.5
    )
    xnat_server.create_session("P", "E1", xsi_type="xnat:eegSessionData")
    xnat_server.add_scan_file("P", "S1", scan_type="RS", resource="EEG", name="a", data=b"a")
    with xnat.connect(
        xnat_server.url, user=XNAT_USER, password=XNAT_PASSWORD, loglevel="ERROR"
    ) as session:
        project = session.projects["P"]
        mr, eeg = project.experiments["S1"], project.experiments["E1"]
        assert (mr.date, mr.time, mr.visit_id, mr.age, mr.modality) == (
            datetime.date(2024, 1, 2),
            datetime.time(9, 30),
            "V1",
            41.5,
            "MR",
        )
        assert (eeg.date, eeg.time, eeg.visit_id, eeg.age, eeg.modality) == (
            None,
            None,
            None,
            None,
            "EEG",
        )
        scan = mr.scans["RS"]
        assert (scan.id, scan.type, scan.quality) == ("1", "RS", "usable")
        mr.time = datetime.time(10, 15)
        mr.visit_id = "V2"
        scan.quality = "questionable"
    found = xnat_server.store.find_experiment("P", "S1")
    assert found is not None and (found.time, found.visit_id) == ("10:15:00", "V2")
    assert [s.quality for s in xnat_server.store.scans(found.id)] == ["questionable"]
    listing = requests.get(
        f"{xnat_server.url}/data/projects/P/experiments",
        params={"columns": "label,date,time,visit_id,age,modality", "format": "json"},
        auth=(XNAT_USER, XNAT_PASSWORD),
        timeout=10,
    ).json()["ResultSet"]["Result"]
    assert [(r["label"], r["time"], r["age"], r["modality"]) for r in listing] == [
        ("S1", "10:15:00", "41.5", "MR"),
        ("E1", "", "", "EEG"),
    ]
    bad = requests.put(
        f"{xnat_server.url}/data/projects/P/experiments/S1",
        params={"xsiType": "xnat:mrSessionData", "xnat:mrSessionData/date": "2024-02-30"},
        auth=(XNAT_USER, XNAT_PASSWORD),
        timeout=10,
    )
    assert bad.status_code == 400 and "YYYY-MM-DD" in bad.text
    with pytest.raises(EmulatorError, match="session S2: session time '9h' is not HH:MM:SS"):
        xnat_server.create_session("P", "S2", time="9h")
    assert xnat_server.store.find_subject("P", "S2") is None


def test_custom_fields_of_projects_subjects_and_experiments(
    xnat_server_factory: Callable[..., EmulatorServer],
) -> None:
    server = xnat_server_factory(
        users={"alice": "secret", "bob": "b"}, project_access={"bob": ["P"]}
    )
    server.create_project("P")
    server.create_project("Q")
    server.create_session("P", "S1", subject="SUB")
    with xnat.connect(server.url, user="alice", password="secret", loglevel="ERROR") as session:
        project = session.projects["P"]
        project.fields["site"] = "Lyon"
        subject = project.subjects["SUB"]
        subject.fields["group"] = "control"
        experiment = project.experiments["S1"]
        experiment.fields["score"] = "3"
        experiment.fields["gone"] = "x"
        del experiment.fields["gone"]
    with xnat.connect(server.url, user="bob", password="b", loglevel="ERROR") as session:
        project = session.projects["P"]
        assert dict(project.fields) == {"site": "Lyon"}
        assert dict(project.subjects["SUB"].fields) == {"group": "control"}
        assert dict(project.experiments["S1"].fields) == {"score": "3"}
        project.fields["site"] = "Paris"  # a member sets fields of its project
    assert server.store.fields(Owner("project", "P")) == {"site": "Paris"}
    # ...but creates no project, and touches none it has no access to.
    for path in ("/data/projects/NEW", "/data/projects/Q"):
        refused = requests.put(
            server.url + path,
            params={"xnat:projectData/fields/field[name=site]/field": "x"},
            auth=("bob", "b"),
            timeout=10,
        )
        assert refused.status_code == 403
    assert server.store.get_project("NEW") is None
    assert server.store.fields(Owner("project", "Q")) == {}


def test_dates_and_times_as_xnat_parses_them(xnat_server: EmulatorServer) -> None:
    xnat_server.create_project("P")
    xnat_server.create_session("P", "S1")
    with xnat.connect(
        xnat_server.url, user=XNAT_USER, password=XNAT_PASSWORD, loglevel="ERROR"
    ) as session:
        experiment = session.projects["P"].experiments["S1"]
        # xnatpy sends a datetime's isoformat: XNAT keeps the date, drops the fraction.
        experiment.date = datetime.datetime(2024, 5, 6, 7, 8, 9, 123456)
        experiment.time = datetime.time(7, 8, 9, 123456)
        experiment.clearcache()
        assert (experiment.date, experiment.time) == (
            datetime.date(2024, 5, 6),
            datetime.time(7, 8, 9),
        )
    url = f"{xnat_server.url}/data/projects/P/experiments/S1"
    for sent, kept in (
        ("02/01/2024", "2024-02-01"),
        ("03.04.2024", "2024-03-04"),
        ("20240708", "2024-07-08"),
    ):
        answer = requests.put(
            url,
            params={"xsiType": "xnat:mrSessionData", "xnat:mrSessionData/date": sent},
            auth=(XNAT_USER, XNAT_PASSWORD),
            timeout=10,
        )
        assert answer.status_code == 200, answer.text
        found = xnat_server.store.find_experiment("P", "S1")
        assert found is not None and found.date == kept
    for bad in ("2024-13-01", "yesterday", "1.2"):
        answer = requests.put(
            url,
            params={"xsiType": "xnat:mrSessionData", "xnat:mrSessionData/date": bad},
            auth=(XNAT_USER, XNAT_PASSWORD),
            timeout=10,
        )
        assert answer.status_code == 400 and "is not YYYY-MM-DD" in answer.text
