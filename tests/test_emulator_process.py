"""`sinagot emulator` as a real process: start-up line, signals, SIGKILL safety, memory."""

from __future__ import annotations

import re
import selectors
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
import requests

from sinagot.testing import EmulatorServer

ALICE = ("alice", "secret")
START_TIMEOUT = 30.0


def _start(*args: str) -> tuple[subprocess.Popen[str], str]:
    process = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys; from sinagot.cli import main; sys.exit(main())",
            "emulator",
            *args,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    selector = selectors.DefaultSelector()
    selector.register(process.stdout, selectors.EVENT_READ)
    ready = selector.select(START_TIMEOUT)
    selector.close()
    if not ready:
        process.kill()
        pytest.fail("the emulator printed nothing within 30 s")
    line = process.stdout.readline()
    match = re.fullmatch(r"listening on (http://127\.0\.0\.1:\d+)\n", line)
    if match is None:
        process.kill()
        pytest.fail(f"unexpected first line {line!r}; stderr: {process.stderr.read()}")  # type: ignore[union-attr]
    return process, match.group(1)


@pytest.fixture
def processes() -> Iterator[list[subprocess.Popen[str]]]:
    started: list[subprocess.Popen[str]] = []
    yield started
    for process in started:
        if process.poll() is None:
            process.kill()
        process.wait(timeout=30)
        for stream in (process.stdout, process.stderr):
            if stream is not None:
                stream.close()


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_cli_demo_users_and_clean_exit(
    tmp_path: Path, processes: list[subprocess.Popen[str]], signum: signal.Signals
) -> None:
    process, url = _start(
        "--data",
        str(tmp_path / "data"),
        "--demo",
        "--user",
        "alice:secret",
        "--user",
        "bob:pw:OTHER",
        "--faults",
        '[{"kind": "status", "status": 503, "path": "/version$", "times": 1}]',
    )
    processes.append(process)
    experiments = f"{url}/data/projects/SONETAA/experiments"
    rows = requests.get(experiments, auth=ALICE, timeout=10).json()["ResultSet"]["Result"]
    assert len(rows) == 5
    assert requests.get(experiments, auth=("bob", "pw"), timeout=10).status_code == 403
    assert requests.get(f"{url}/data/version", auth=ALICE, timeout=10).status_code == 503
    counters = requests.get(f"{url}/_emulator/counters", timeout=10).json()
    assert counters["faults"] == {"status_503": 1}
    process.send_signal(signum)
    assert process.wait(timeout=30) == 0


def test_cli_rejects_bad_options(tmp_path: Path) -> None:
    def refused(*args: str) -> str:
        """The one-line error of ``sinagot emulator --data TMP ARGS``, which must exit 2."""
        done = subprocess.run(
            [
                sys.executable,
                "-c",
                "import sys; from sinagot.cli import main; sys.exit(main())",
                "emulator",
                "--data",
                str(tmp_path),
                *args,
            ],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert done.returncode == 2
        return done.stderr

    bad_user = refused("--user", "nopassword")
    assert "--user" in bad_user and len(bad_user.strip().splitlines()) == 1
    assert "--faults" in refused("--faults", "[{")
    bad_profile = refused("--profile", "lan")
    assert "--profile" in bad_profile and "production" in bad_profile


def test_cli_profile_and_checksums_off(
    tmp_path: Path, processes: list[subprocess.Popen[str]]
) -> None:
    slow = '{"base": "production", "request_latency": [0.2, 0.2]}'
    data = str(tmp_path / "data")
    process, url = _start("--data", data, "--demo", "--no-checksums", "--profile", slow)
    processes.append(process)
    profile = requests.get(f"{url}/_emulator/profile", timeout=10).json()
    assert (profile["name"], profile["request_latency"]) == ("production", [0.2, 0.2])
    assert requests.get(f"{url}/_emulator/checksums", timeout=10).json()["site"] is False
    files = f"{url}/data/projects/SONETAA/experiments/REC-200331-A/scans/1/resources/EEG/files"
    start = time.monotonic()
    rows = requests.get(files, auth=("admin", "admin"), timeout=30).json()["ResultSet"]["Result"]
    assert time.monotonic() - start >= 0.2
    assert rows and all(row["digest"] == "" for row in rows)


def test_sigkill_mid_upload_leaves_nothing_half_visible(
    tmp_path: Path, processes: list[subprocess.Popen[str]]
) -> None:
    data = tmp_path / "data"
    process, url = _start("--data", str(data), "--user", "alice:secret", "--demo")
    processes.append(process)
    files = f"{url}/data/projects/SONETAA/experiments/REC-200331-A/resources/out/files"
    assert requests.put(f"{files}/done.bin", data=b"complete", auth=ALICE, timeout=10).ok
    # Announce 10 MB, send 1 MB, then kill the server while it is receiving.
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        head = (
            f"PUT /data/projects/SONETAA/experiments/REC-200331-A/resources/out/files/half.bin"
            f" HTTP/1.1\r\nHost: {host}\r\nAuthorization: Basic YWxpY2U6c2VjcmV0\r\n"
            f"Content-Length: 10000000\r\n\r\n"
        )
        sock.sendall(head.encode() + b"x" * 1_000_000)
        for _ in range(100):  # until the server has started writing the temporary file
            if any((data / "tmp").iterdir()):
                break
            time.sleep(0.05)
        process.kill()
        process.wait(timeout=30)
    restarted, url = _start("--data", str(data), "--user", "alice:secret")
    processes.append(restarted)
    files = f"{url}/data/projects/SONETAA/experiments/REC-200331-A/resources/out/files"
    rows = requests.get(files, auth=ALICE, timeout=10).json()["ResultSet"]["Result"]
    assert [r["Name"] for r in rows] == ["done.bin"]
    assert requests.get(f"{files}/done.bin", auth=ALICE, timeout=10).content == b"complete"
    assert list((data / "tmp").iterdir()) == []


def _peak_rss_while_downloading(
    url: str, path: str, pid: int, headers: dict[str, str]
) -> tuple[int, int]:
    """(peak server RSS, bytes received) over one streamed download."""
    process = psutil.Process(pid)
    peak = process.memory_info().rss
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.wait(0.02):
            peak = max(peak, process.memory_info().rss)

    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        received = 0
        with requests.get(url + path, auth=ALICE, headers=headers, stream=True, timeout=60) as r:
            r.raise_for_status()
            for chunk in r.iter_content(1024 * 1024):
                received += len(chunk)
    finally:
        done.set()
        sampler.join()
    return peak, received


def _check_rss_bounded(tmp_path: Path, processes: list[subprocess.Popen[str]], size: int) -> None:
    data = tmp_path / "data"
    big = tmp_path / "big.bin"
    with big.open("wb") as out:  # sparse: quick to create, read back as zeros
        out.truncate(size)
    seeding = EmulatorServer(data, users={"alice": "secret"})
    seeding.create_project("P")
    seeding.create_session("P", "S1")
    seeding.add_scan_file("P", "S1", scan_type="RS", resource="R", name="big.bin", data=big)
    seeding.close()
    big.unlink()
    process, url = _start("--data", str(data), "--user", "alice:secret")
    processes.append(process)
    path = "/data/projects/P/experiments/S1/scans/1/resources/R/files/big.bin"
    baseline = psutil.Process(process.pid).memory_info().rss
    limit = baseline + 64 * 1024 * 1024
    peak, received = _peak_rss_while_downloading(url, path, process.pid, {})
    assert peak < limit and received == size
    # The hand-written streaming path (used when a body fault is active) is bounded too.
    requests.post(
        f"{url}/_emulator/faults",
        json=[{"kind": "corrupt", "at": size - 1}],
        timeout=10,
    ).raise_for_status()
    peak, received = _peak_rss_while_downloading(url, path, process.pid, {})
    assert peak < limit and received == size
    peak, received = _peak_rss_while_downloading(url, path, process.pid, {"Range": "bytes=5-"})
    assert peak < limit and received == size - 5


def test_rss_bounded_while_serving_a_large_file(
    tmp_path: Path, processes: list[subprocess.Popen[str]]
) -> None:
    _check_rss_bounded(tmp_path, processes, 256 * 1024 * 1024)


@pytest.mark.slow
def test_rss_bounded_while_serving_one_gib(
    tmp_path: Path, processes: list[subprocess.Popen[str]]
) -> None:
    _check_rss_bounded(tmp_path, processes, 1024 * 1024 * 1024)
