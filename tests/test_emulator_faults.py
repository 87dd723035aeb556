"""Each injected fault kind, observed by a real client, and the admin endpoints."""

from __future__ import annotations

import zipfile
from io import BytesIO
from pathlib import Path

import pytest
import requests
import xnat

from sinagot.testing import EmulatorServer, FaultRule, parse_fault_spec
from sinagot.testing.pytest_plugin import XNAT_PASSWORD, XNAT_USER

PAYLOAD = bytes(range(256)) * 4096  # 1 MiB
FILE_PATH = "/data/projects/P/experiments/S1/scans/1/resources/EEG/files/big.bin"


@pytest.fixture
def server(xnat_server: EmulatorServer) -> EmulatorServer:
    xnat_server.create_project("P")
    xnat_server.create_session("P", "S1")
    xnat_server.add_scan_file(
        "P", "S1", scan_type="RS", resource="EEG", name="big.bin", data=PAYLOAD
    )
    return xnat_server


@pytest.fixture
def client() -> requests.Session:
    session = requests.Session()
    session.auth = (XNAT_USER, XNAT_PASSWORD)
    return session


@pytest.mark.parametrize(("status", "retry_after"), [(500, None), (503, 2), (429, 1)])
def test_status_fault_then_success(
    server: EmulatorServer, client: requests.Session, status: int, retry_after: int | None
) -> None:
    server.set_faults(
        [FaultRule("status", path=r"/files/", status=status, retry_after=retry_after, times=2)]
    )
    seen = []
    for _ in range(5):  # a client retry loop, bounded
        response = client.get(server.url + FILE_PATH, timeout=10)
        seen.append(response.status_code)
        if response.ok:
            break
        assert response.headers.get("Retry-After") == (
            None if retry_after is None else str(retry_after)
        )
    assert seen == [status, status, 200]
    assert response.content == PAYLOAD
    assert server.fault_counts() == {f"status_{status}": 2}
    assert (
        server.request_counts()[
            "GET /data/projects/{project}/experiments/{experiment}/scans/{scan}"
            "/resources/{resource}/files/{path}"
        ]
        == 3
    )


def test_reset_mid_body_then_resume_with_range(
    server: EmulatorServer, client: requests.Session
) -> None:
    server.set_faults([FaultRule("reset", path=r"big\.bin$", at=300_000, times=1)])
    received = bytearray()
    with (
        pytest.raises(requests.exceptions.ChunkedEncodingError),
        client.get(server.url + FILE_PATH, stream=True, timeout=10) as response,
    ):
        assert response.headers["Content-Length"] == str(len(PAYLOAD))
        for chunk in response.iter_content(65536):
            received += chunk
    assert len(received) <= 300_000
    rest = client.get(
        server.url + FILE_PATH, headers={"Range": f"bytes={len(received)}-"}, timeout=10
    )
    assert rest.status_code == 206
    assert bytes(received) + rest.content == PAYLOAD
    assert server.fault_counts() == {"reset": 1}


def test_truncated_body_with_full_content_length(
    server: EmulatorServer, client: requests.Session
) -> None:
    server.set_faults([FaultRule("truncate", times=1)])
    with pytest.raises(requests.exceptions.ChunkedEncodingError, match="IncompleteRead"):
        client.get(server.url + FILE_PATH, timeout=10)
    assert server.fault_counts() == {"truncate": 1}
    assert client.get(server.url + FILE_PATH, timeout=10).content == PAYLOAD


def test_corrupted_bytes_fail_the_xnatpy_digest_check(
    server: EmulatorServer, tmp_path: Path
) -> None:
    with xnat.connect(
        server.url, user=XNAT_USER, password=XNAT_PASSWORD, loglevel="CRITICAL"
    ) as session:
        file_ = (
            session.projects["P"].experiments["S1"].scans["RS"].resources["EEG"].files["big.bin"]
        )
        server.set_faults([FaultRule("corrupt", method="GET", path=r"big\.bin$", times=1)])
        with pytest.raises(xnat.exceptions.XNATValueError, match=r"(?i)digest|md5"):
            file_.download(str(tmp_path / "bad.bin"), verbose=False)
        file_.download(str(tmp_path / "good.bin"), verbose=False)
    assert (tmp_path / "good.bin").read_bytes() == PAYLOAD
    assert server.fault_counts() == {"corrupt": 1}


def test_latency_and_trickle_deliver_intact_bodies(
    server: EmulatorServer, client: requests.Session
) -> None:
    server.set_faults(
        [
            FaultRule("latency", delay=0.05, times=1),
            FaultRule("trickle", chunk_size=100_000, delay=0.001, times=2),
        ]
    )
    assert client.get(server.url + FILE_PATH, timeout=10).content == PAYLOAD
    assert client.get(server.url + FILE_PATH, timeout=10).content == PAYLOAD
    ranged = client.get(server.url + FILE_PATH, headers={"Range": "bytes=-1000"}, timeout=10)
    assert ranged.status_code == 206 and ranged.content == PAYLOAD[-1000:]
    assert server.fault_counts() == {"latency": 1, "trickle": 2}


def test_reset_in_a_streamed_zip(server: EmulatorServer, client: requests.Session) -> None:
    url = server.url + "/data/projects/P/experiments/S1/scans/1/resources/EEG/files"
    server.set_faults([FaultRule("reset", path=r"/files$", times=1)])
    with pytest.raises(requests.exceptions.ChunkedEncodingError):
        client.get(url, params={"format": "zip"}, timeout=10)
    whole = client.get(url, params={"format": "zip"}, timeout=10)
    with zipfile.ZipFile(BytesIO(whole.content)) as archive:
        assert archive.read("S1/scans/1/resources/EEG/files/big.bin") == PAYLOAD


def test_probability_is_deterministic_per_seed(
    server: EmulatorServer, client: requests.Session
) -> None:
    def pattern(seed: int) -> list[int]:
        server.set_faults([FaultRule("status", path="/experiments$", probability=0.5)], seed=seed)
        return [
            client.get(server.url + "/data/projects/P/experiments", timeout=10).status_code
            for _ in range(24)
        ]

    first = pattern(7)
    assert set(first) == {200, 503}
    assert pattern(7) == first
    assert pattern(8) != first


def test_method_filter_and_listing_faults(server: EmulatorServer, client: requests.Session) -> None:
    server.set_faults([FaultRule("status", method="PUT", status=500)])
    assert client.get(server.url + "/data/projects", timeout=10).status_code == 200
    put = client.put(server.url + "/data/projects/P/experiments/S1/resources/new", timeout=10)
    assert put.status_code == 500
    server.set_faults([FaultRule("corrupt", path=r"^/data/projects$", at=0, times=1)])
    corrupted = client.get(server.url + "/data/projects", timeout=10)
    with pytest.raises(ValueError):
        corrupted.json()
    assert server.fault_counts() == {"status_500": 1, "corrupt": 1}


def test_admin_endpoints(server: EmulatorServer) -> None:
    admin = requests.Session()  # no credentials: admin routes need none
    rules = [{"kind": "status", "status": 503, "path": "/files/", "times": 1}]
    posted = admin.post(server.url + "/_emulator/faults", json={"rules": rules, "seed": 3})
    assert posted.status_code == 200
    listed = admin.get(server.url + "/_emulator/faults").json()
    assert listed["seed"] == 3 and listed["rules"][0]["status"] == 503
    response = requests.get(server.url + FILE_PATH, auth=(XNAT_USER, XNAT_PASSWORD), timeout=10)
    assert response.status_code == 503
    counters = admin.get(server.url + "/_emulator/counters").json()
    assert counters["faults"] == {"status_503": 1}
    assert sum(counters["requests"].values()) == 1  # admin calls are never counted
    admin.post(server.url + "/_emulator/counters/reset")
    assert admin.get(server.url + "/_emulator/counters").json() == {"requests": {}, "faults": {}}
    bad = admin.post(server.url + "/_emulator/faults", json=[{"kind": "explode"}])
    assert bad.status_code == 400 and "unknown fault kind" in bad.json()["error"]


def test_fault_spec_parsing(tmp_path: Path) -> None:
    spec = '[{"kind": "reset", "path": "\\\\.csv$", "at": 10}, {"kind": "latency", "delay": 1}]'
    rules = parse_fault_spec(spec)
    assert rules == [FaultRule("reset", path=r"\.csv$", at=10), FaultRule("latency", delay=1)]
    (tmp_path / "faults.json").write_text(f'{{"rules": {spec}}}')
    assert parse_fault_spec(f"@{tmp_path / 'faults.json'}") == rules
    with pytest.raises(ValueError, match="unknown fault rule keys"):
        parse_fault_spec('[{"kind": "reset", "wat": 1}]')
