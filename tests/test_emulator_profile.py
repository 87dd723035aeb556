"""The production profile over real sockets: latency, time to first byte, slow archives, bandwidth.

Timings are lower bounds only, and generous: a loaded machine makes things slower,
never faster, so an upper bound would only measure the machine.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import requests
import xnat

from sinagot.testing import PROFILES, EmulatorServer, FaultRule, Pace, Profile, parse_profile_spec
from sinagot.testing.pytest_plugin import XNAT_PASSWORD, XNAT_USER

AUTH = (XNAT_USER, XNAT_PASSWORD)
PRODUCTION = PROFILES["production"]
# Only the figure under test: the others are zero or unlimited, so it alone explains a delay.
QUIET = Profile(name="quiet")


def _seed(server: EmulatorServer, size: int = 10) -> bytes:
    data = os.urandom(size)
    server.create_project("P")
    server.create_session("P", "S1")
    server.add_scan_file("P", "S1", scan_type="RS", resource="EEG", name="f.bin", data=data)
    return data


def _resource_url(server: EmulatorServer) -> str:
    return f"{server.url}/data/projects/P/experiments/S1/scans/1/resources/EEG"


def _timed(call: Callable[[], requests.Response]) -> tuple[requests.Response, float]:
    start = time.monotonic()
    response = call()
    return response, time.monotonic() - start


def test_production_figures_are_those_documented() -> None:
    assert PRODUCTION.request_latency == (0.02, 0.12)
    assert PRODUCTION.first_byte == (0.05, 0.4)
    assert PRODUCTION.archive_start == (0.5, 2.0)
    assert (PRODUCTION.archive_rate, PRODUCTION.connection_bandwidth) == (200e6, 50e6)
    assert PRODUCTION.server_bandwidth == 117e6
    assert not PROFILES["fast"].limits_bandwidth
    assert PROFILES["fast"].request_latency == (0.0, 0.0)


def test_every_request_waits_the_request_latency(
    xnat_server_factory: Callable[..., EmulatorServer],
) -> None:
    server = xnat_server_factory(profile="production")
    _seed(server)
    listing = f"{_resource_url(server)}/files"
    requests.get(listing, auth=AUTH, timeout=30)  # connection set up outside the measure
    with requests.Session() as http:
        http.auth = AUTH
        start = time.monotonic()
        for _ in range(10):
            assert http.get(listing, timeout=30).status_code == 200
        elapsed = time.monotonic() - start
    assert elapsed >= 10 * PRODUCTION.request_latency[0]


def test_xnatpy_connects_and_reads_under_production(
    xnat_server_factory: Callable[..., EmulatorServer], tmp_path: Path
) -> None:
    server = xnat_server_factory(profile="production")
    data = _seed(server, 200_000)
    start = time.monotonic()
    with xnat.connect(server.url, user=XNAT_USER, password=XNAT_PASSWORD, loglevel="ERROR") as s:
        resource = s.projects["P"].experiments["S1"].scans["RS"].resources["EEG"]
        resource.files["f.bin"].download(str(tmp_path / "f.bin"), verbose=False)
    elapsed = time.monotonic() - start
    assert (tmp_path / "f.bin").read_bytes() == data
    requests_made = sum(server.request_counts().values())
    assert requests_made >= 10
    assert elapsed >= requests_made * PRODUCTION.request_latency[0] + PRODUCTION.first_byte[0]


def test_file_body_waits_for_its_first_byte(
    xnat_server_factory: Callable[..., EmulatorServer],
) -> None:
    server = xnat_server_factory(profile=dataclasses.replace(QUIET, first_byte=(0.3, 0.3)))
    data = _seed(server)
    url = f"{_resource_url(server)}/files/f.bin"
    response, elapsed = _timed(lambda: requests.get(url, auth=AUTH, stream=True, timeout=30))
    assert elapsed >= 0.3  # the headers came only with the first byte
    assert response.raw.read() == data
    head, _ = _timed(lambda: requests.head(url, auth=AUTH, timeout=30))
    assert head.headers["Content-Length"] == str(len(data))


def test_archive_takes_its_time_to_start(
    xnat_server_factory: Callable[..., EmulatorServer], tmp_path: Path
) -> None:
    server = xnat_server_factory(profile="production")
    data = _seed(server, 1000)
    # xnatpy's download_dir asks for the resource as a zip (format=zip).
    with xnat.connect(server.url, user=XNAT_USER, password=XNAT_PASSWORD, loglevel="ERROR") as s:
        resource = s.projects["P"].experiments["S1"].scans["RS"].resources["EEG"]
        start = time.monotonic()
        resource.download_dir(str(tmp_path / "out"), verbose=False)
        elapsed = time.monotonic() - start
    assert elapsed >= PRODUCTION.request_latency[0] + PRODUCTION.archive_start[0]
    [found] = (tmp_path / "out").rglob("f.bin")
    assert found.relative_to(tmp_path / "out").as_posix() == "S1/scans/1/resources/EEG/files/f.bin"
    assert found.read_bytes() == data


def test_archive_build_time_grows_with_its_size(
    xnat_server_factory: Callable[..., EmulatorServer],
) -> None:
    server = xnat_server_factory(profile=dataclasses.replace(QUIET, archive_rate=4e6))
    _seed(server, 2_000_000)
    response, elapsed = _timed(
        lambda: requests.get(
            f"{_resource_url(server)}/files", params={"format": "zip"}, auth=AUTH, timeout=30
        )
    )
    assert response.status_code == 200
    assert elapsed >= 2_000_000 / 4e6


def test_connection_bandwidth_paces_downloads_and_uploads(
    xnat_server_factory: Callable[..., EmulatorServer],
) -> None:
    rate = 4e6
    server = xnat_server_factory(profile=dataclasses.replace(QUIET, connection_bandwidth=rate))
    data = _seed(server, 2_000_000)
    url = f"{_resource_url(server)}/files/f.bin"
    response, elapsed = _timed(lambda: requests.get(url, auth=AUTH, timeout=30))
    assert response.content == data
    assert elapsed >= len(data) / rate
    body = os.urandom(2_000_000)
    put, elapsed = _timed(
        lambda: requests.put(
            f"{_resource_url(server)}/files/up.bin", data=body, auth=AUTH, timeout=30
        )
    )
    assert put.status_code == 200
    assert elapsed >= len(body) / rate
    assert requests.get(f"{_resource_url(server)}/files/up.bin", auth=AUTH).content == body


async def test_server_bandwidth_is_shared_by_all_connections(tmp_path: Path) -> None:
    rate = 4e6
    server = EmulatorServer(
        tmp_path,
        users={XNAT_USER: XNAT_PASSWORD},
        profile=dataclasses.replace(QUIET, server_bandwidth=rate),
    )
    server.create_project("P")
    server.create_session("P", "S1")
    for index in range(4):
        server.add_scan_file(
            "P", "S1", scan_type="RS", resource="EEG", name=f"{index}.bin", data=bytes(500_000)
        )
    async with server:
        url = _resource_url(server)

        def fetch(index: int) -> bytes:
            return requests.get(f"{url}/files/{index}.bin", auth=AUTH, timeout=30).content

        start = time.monotonic()
        bodies = await asyncio.gather(*(asyncio.to_thread(fetch, i) for i in range(4)))
        elapsed = time.monotonic() - start
    server.close()
    assert [len(b) for b in bodies] == [500_000] * 4
    assert elapsed >= 4 * 500_000 / rate


def test_production_bandwidth_of_a_large_file(
    xnat_server_factory: Callable[..., EmulatorServer],
) -> None:
    server = xnat_server_factory(profile="production")
    data = _seed(server, 10_000_000)
    response, elapsed = _timed(
        lambda: requests.get(f"{_resource_url(server)}/files/f.bin", auth=AUTH, timeout=60)
    )
    assert response.content == data
    assert PRODUCTION.connection_bandwidth is not None
    assert elapsed >= len(data) / PRODUCTION.connection_bandwidth + PRODUCTION.first_byte[0]


def test_faults_still_apply_under_production(
    xnat_server_factory: Callable[..., EmulatorServer],
) -> None:
    server = xnat_server_factory(
        profile="production",
        faults=[
            FaultRule("status", path=r"/files$", status=503, times=1),
            FaultRule("corrupt", path=r"f\.bin$", at=3, times=1),
        ],
    )
    data = _seed(server, 100_000)
    listing = f"{_resource_url(server)}/files"
    refused, elapsed = _timed(lambda: requests.get(listing, auth=AUTH, timeout=30))
    assert refused.status_code == 503
    assert elapsed >= PRODUCTION.request_latency[0]
    assert requests.get(listing, auth=AUTH, timeout=30).status_code == 200
    corrupt = requests.get(f"{listing}/f.bin", auth=AUTH, timeout=30).content
    assert len(corrupt) == len(data) and corrupt != data
    assert requests.get(f"{listing}/f.bin", auth=AUTH, timeout=30).content == data
    assert server.fault_counts() == {"status_503": 1, "corrupt": 1}


def test_profile_switches_while_running(xnat_server_factory: Callable[..., EmulatorServer]) -> None:
    server = xnat_server_factory()
    _seed(server)
    admin = f"{server.url}/_emulator/profile"
    assert requests.get(admin, timeout=10).json()["name"] == "fast"
    answer = requests.post(
        admin, json={"base": "production", "request_latency": [0.3, 0.3]}, timeout=10
    )
    assert answer.status_code == 200
    assert answer.json()["request_latency"] == [0.3, 0.3]
    assert server.profile == dataclasses.replace(PRODUCTION, request_latency=(0.3, 0.3))
    _, elapsed = _timed(lambda: requests.get(f"{_resource_url(server)}/files", auth=AUTH))
    assert elapsed >= 0.3
    bad = requests.post(admin, json={"base": "lan"}, timeout=10)
    assert bad.status_code == 400 and "fast" in bad.json()["error"]
    server.set_profile("fast")
    assert Profile.from_json(requests.get(admin, timeout=10).json()) == PROFILES["fast"]


async def test_delays_are_drawn_from_the_seed(monkeypatch: pytest.MonkeyPatch) -> None:
    slept: list[float] = []

    async def record(delay: float) -> None:
        slept.append(delay)

    monkeypatch.setattr(asyncio, "sleep", record)
    for seed in (7, 7, 8):
        pace = Pace(PRODUCTION, seed)
        for _ in range(5):
            await pace.request_started()
            await pace.body_starting(archive_bytes=None)
    first, again, other = slept[:10], slept[10:20], slept[20:]
    assert first == again and first != other
    assert all(0.02 <= d <= 0.12 for d in first[::2])
    assert all(0.05 <= d <= 0.4 for d in first[1::2])


def test_profile_specs_and_their_errors(tmp_path: Path) -> None:
    assert parse_profile_spec("production") == PRODUCTION
    spec = tmp_path / "lan.json"
    spec.write_text('{"base": "production", "name": "slow lan", "connection_bandwidth": 1e6}')
    slow = parse_profile_spec(f"@{spec}")
    assert (slow.name, slow.connection_bandwidth, slow.first_byte) == ("slow lan", 1e6, (0.05, 0.4))
    assert Profile.from_json(slow.to_json()) == slow
    with pytest.raises(ValueError, match="unknown profile 'lan'"):
        parse_profile_spec("lan")
    with pytest.raises(ValueError, match="unknown profile keys"):
        parse_profile_spec('{"latency": 1}')
    with pytest.raises(ValueError, match="0 <= low <= high"):
        Profile(request_latency=(0.5, 0.1))
    with pytest.raises(ValueError, match="positive bytes/s"):
        Profile(server_bandwidth=0)
