"""The daemon as a real subprocess: signals, crash recovery, the socket and the CLI clients."""

from __future__ import annotations

import json
import os
import pwd
import signal
import socket
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

import pytest

from daemon_support import (
    DaemonProcess,
    add_session,
    daemon_table,
    raw_request,
    touch_session,
    uploads,
    wait_for,
    write_config,
)
from sinagot.daemon import client_socket_path
from sinagot.daemon.internals import SYSTEM_SOCKET
from sinagot.errors import DaemonError

SINAGOT = str(Path(sys.executable).with_name("sinagot"))

StartDaemon = Callable[..., DaemonProcess]


@pytest.fixture
def start_daemon(tmp_path: Path) -> Iterator[StartDaemon]:
    started: list[DaemonProcess] = []

    def start(
        configs: list[Path], *, wait: bool = True, env: dict[str, str] | None = None
    ) -> DaemonProcess:
        daemon = DaemonProcess(tmp_path, configs, env)
        started.append(daemon)
        return daemon.start(wait=wait)

    yield start
    for daemon in started:
        daemon.ensure_stopped()


def cli(*args: str, env: Mapping[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [SINAGOT, *args], capture_output=True, text=True, timeout=60, check=False, env=env
    )


def test_no_daemon_gives_one_clear_line(tmp_path: Path) -> None:
    socket_path = tmp_path / "none.sock"
    result = cli("status", "--socket", str(socket_path))
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1
    assert f"no daemon answers on {socket_path}" in result.stderr
    assert "sinagot daemon CONFIG" in result.stderr
    assert "systemctl start sinagot" in result.stderr


UNUSABLE_RUNTIME = [
    pytest.param(
        "owned by another user",
        marks=pytest.mark.skipif(os.geteuid() != 0, reason="needs root to give a dir to uid 65534"),
    ),
    "not a directory",
]


def unusable_runtime_env(tmp_path: Path, how: str) -> dict[str, str]:
    """Variables under which platformdirs' last fallback, ``$TMPDIR/runtime-<uid>``, is unusable."""
    if Path(f"/run/user/{os.geteuid()}").is_dir():
        pytest.skip("platformdirs takes /run/user/<uid> here and never reaches its /tmp fallback")
    temp = tmp_path / "tmp"
    temp.mkdir()
    runtime = temp / f"runtime-{os.geteuid()}"
    if how == "owned by another user":
        runtime.mkdir(mode=0o700)
        os.chown(runtime, 65534, 65534)
    else:
        runtime.write_text("")
    # Empty counts as unset for both platformdirs and the systemd variable.
    return {"XDG_RUNTIME_DIR": "", "RUNTIME_DIRECTORY": "", "TMPDIR": str(temp)}


@pytest.mark.parametrize("how", UNUSABLE_RUNTIME)
def test_unusable_runtime_dir_gives_clients_one_clear_line(tmp_path: Path, how: str) -> None:
    if SYSTEM_SOCKET.exists():
        pytest.skip(f"{SYSTEM_SOCKET} exists, so the clients rightly fall back to it")
    env = {**os.environ, **unusable_runtime_env(tmp_path, how)}
    for command in ("status", "jobs", "pause"):
        result = cli(command, env=env)
        assert result.returncode == 1, result.stderr
        assert result.stderr.startswith("sinagot: error: ")
        assert result.stderr.count("\n") == 1, result.stderr
        assert f"runtime-{os.geteuid()}" in result.stderr
        assert "XDG_RUNTIME_DIR" in result.stderr and "--socket" in result.stderr


def test_unusable_runtime_dir_falls_back_to_the_system_socket(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in unusable_runtime_env(tmp_path, "not a directory").items():
        monkeypatch.setenv(name, value)
    # gettempdir() caches its first answer; platformdirs must see this test's TMPDIR.
    monkeypatch.setattr(tempfile, "tempdir", None)
    system = tmp_path / "run" / "sinagot.sock"
    with pytest.raises(DaemonError, match="XDG_RUNTIME_DIR"):
        client_socket_path(system_socket=system)
    system.parent.mkdir()
    with socket.socket(socket.AF_UNIX) as listener:
        listener.bind(str(system))
        assert client_socket_path(system_socket=system) == system


@pytest.mark.parametrize("how", UNUSABLE_RUNTIME)
def test_daemon_with_unusable_runtime_dir_exits_with_one_clear_line(
    tmp_path: Path, start_daemon: StartDaemon, how: str
) -> None:
    table = daemon_table(tmp_path)
    del table["socket"]
    config = write_config(tmp_path, "lab", table)
    daemon = start_daemon([config], wait=False, env=unusable_runtime_env(tmp_path, how))
    assert daemon.wait_exit() == 1
    log = daemon.log_text()
    assert "Traceback" not in log
    (error,) = [line for line in log.splitlines() if line.startswith("sinagot: error: ")]
    assert f"runtime-{os.geteuid()}" in error
    assert "XDG_RUNTIME_DIR" in error and "[daemon] socket" in error


def test_processes_new_and_changed_sessions_once(tmp_path: Path, start_daemon: StartDaemon) -> None:
    config = write_config(tmp_path, "lab", daemon_table(tmp_path))
    for label in ("REC-1", "REC-2", "junk"):
        add_session(config, label)
    daemon = start_daemon([config])
    daemon.wait_jobs("done", 2)
    assert sorted(uploads(config)) == ["REC-1", "REC-2"]
    assert "ignoring 1 session(s) that do not match id_pattern" in daemon.log_text()

    touch_session(config, "REC-1")
    wait_for(lambda: uploads(config).count("REC-1") == 2, what="REC-1 processed again")

    table = cli("status", "--socket", str(daemon.socket))
    assert table.returncode == 0, table.stderr
    assert "DATASET" in table.stdout
    assert "lab" in table.stdout
    status = json.loads(cli("status", "--json", "--socket", str(daemon.socket)).stdout)
    (dataset,) = status["datasets"]
    assert dataset["health"] == "ok"
    assert dataset["jobs"]["done"] == 2
    assert daemon.stop() == 0

    # A restart does not queue unchanged done sessions again.
    daemon = start_daemon([config])
    first = wait_for(lambda: daemon.call("status")["datasets"][0]["last_poll"], what="a poll")
    daemon.call("poll")
    wait_for(lambda: daemon.call("status")["datasets"][0]["last_poll"] != first, what="a 2nd poll")
    assert daemon.stop() == 0
    assert "new or changed" not in daemon.log_text().split("ready:")[-1]
    assert sorted(uploads(config)) == ["REC-1", "REC-1", "REC-2"]


def test_sigterm_lets_a_running_job_finish(tmp_path: Path, start_daemon: StartDaemon) -> None:
    config = write_config(tmp_path, "lab", daemon_table(tmp_path))
    add_session(config, "REC-1", sleep=1.0)
    daemon = start_daemon([config])
    daemon.wait_jobs("running", 1)
    daemon.signal(signal.SIGTERM)
    assert daemon.wait_exit() == 0
    assert uploads(config) == ["REC-1"]
    assert "stopping: 1 running job(s)" in daemon.log_text()
    assert not daemon.socket.exists()


def test_sigkill_mid_job_then_restart_resumes(tmp_path: Path, start_daemon: StartDaemon) -> None:
    config = write_config(tmp_path, "lab", daemon_table(tmp_path))
    session = add_session(config, "REC-1", sleep=60)
    add_session(config, "REC-2")
    daemon = start_daemon([config])
    job = wait_for(
        lambda: next((j for j in daemon.jobs(state="running") if j["session"] == "REC-1"), None),
        what="REC-1 running",
    )
    daemon.wait_jobs("done", 1)
    assert daemon.proc is not None
    daemon.proc.kill()
    daemon.wait_exit()
    assert uploads(config) == ["REC-2"]

    (session / "sleep").unlink()
    daemon = start_daemon([config])
    daemon.wait_jobs("done", 2)
    detail = daemon.call("job", job["id"])
    assert detail["attempts"] == 2  # the killed attempt counts
    assert any("resumed after a daemon restart" in t["detail"] for t in detail["history"])
    assert sorted(uploads(config)) == ["REC-1", "REC-2"]
    assert daemon.stop() == 0


def test_shutdown_timeout_cancels_and_keeps_job_resumable(
    tmp_path: Path, start_daemon: StartDaemon
) -> None:
    config = write_config(tmp_path, "lab", daemon_table(tmp_path, shutdown_timeout=0.2))
    add_session(config, "REC-1", sleep=60)
    daemon = start_daemon([config])
    daemon.wait_jobs("running", 1)
    daemon.signal(signal.SIGTERM)
    assert daemon.wait_exit() == 0
    assert "did not finish within 0.2 s" in daemon.log_text()
    daemon = start_daemon([config])
    # Resumed: it goes through its phases again (on a loaded machine, not at once).
    daemon.wait_jobs("running", 1)
    assert daemon.stop() == 0


def test_failed_job_is_retried_from_the_cli(tmp_path: Path, start_daemon: StartDaemon) -> None:
    config = write_config(tmp_path, "lab", daemon_table(tmp_path))
    session = add_session(config, "REC-1", fail="script preprocess failed: bad header")
    crash = add_session(config, "REC-2")
    (crash / "crash").write_text("")
    daemon = start_daemon([config])
    failed = daemon.wait_jobs("failed", 2)
    errors = {job["session"]: job["last_error"] for job in failed}
    assert errors["REC-1"].startswith("script preprocess failed: bad header")
    assert errors["REC-2"].startswith("RuntimeError: backend bug")
    job_id = next(job["id"] for job in failed if job["session"] == "REC-1")

    listing = cli("jobs", "--state", "failed", "--socket", str(daemon.socket))
    assert "bad header" in listing.stdout
    shown = cli("jobs", str(job_id), "--socket", str(daemon.socket))
    assert "log tail:" in shown.stdout
    assert "processing REC-1" in shown.stdout

    (session / "fail").unlink()
    retried = cli("retry", str(job_id), "--json", "--socket", str(daemon.socket))
    assert retried.returncode == 0, retried.stderr
    assert json.loads(retried.stdout)["id"] == job_id
    daemon.wait_jobs("done", 1)
    assert uploads(config) == ["REC-1"]
    missing = cli("retry", "999", "--socket", str(daemon.socket))
    assert missing.returncode == 1
    assert "no job 999" in missing.stderr
    assert daemon.stop() == 0


def test_server_down_is_backed_off_and_does_not_block_others(
    tmp_path: Path, start_daemon: StartDaemon
) -> None:
    up = write_config(tmp_path, "up", daemon_table(tmp_path))
    down = write_config(tmp_path, "down", daemon_table(tmp_path))
    (down.parent / "data" / ".down").write_text("")
    add_session(down, "REC-1")
    daemon = start_daemon([up, down])

    def health() -> dict[str, dict[str, object]]:
        return {d["name"]: d for d in daemon.call("status")["datasets"]}

    wait_for(lambda: health()["down"]["failures"] >= 2, what="two failed listings")
    add_session(up, "REC-7")
    daemon.wait_jobs("done", 1)
    status = health()
    assert status["down"]["health"] == "down"
    assert "server of down is down" in str(status["down"]["last_error"])
    assert status["up"]["health"] == "ok"
    table = cli("status", "--socket", str(daemon.socket)).stdout
    assert "down: server of down is down" in table

    (down.parent / "data" / ".down").unlink()
    daemon.call("poll", ["down"])
    wait_for(lambda: health()["down"]["health"] == "ok", what="the server back up")
    daemon.wait_jobs("done", 2)
    metrics = daemon.call("metrics")
    assert 'sinagot_dataset_up{dataset="down"} 1' in metrics
    assert 'sinagot_polls_total{dataset="down",outcome="error"}' in metrics
    assert daemon.stop() == 0


def test_sighup_with_a_broken_config_keeps_the_old_one(
    tmp_path: Path, start_daemon: StartDaemon
) -> None:
    config = write_config(tmp_path, "lab", daemon_table(tmp_path))
    daemon = start_daemon([config])
    good = config.read_text()
    config.write_text(good + "[daemon\n")
    daemon.signal(signal.SIGHUP)
    wait_for(lambda: "reload rejected" in daemon.log_text(), what="the rejected reload")
    refused = cli("reload", "--socket", str(daemon.socket))
    assert refused.returncode == 1
    assert "not valid TOML" in refused.stderr

    add_session(config, "REC-1")
    daemon.wait_jobs("done", 1)

    config.write_text(good.replace("poll_interval = 0.2", "poll_interval = 0.3"))
    daemon.signal(signal.SIGHUP)
    wait_for(lambda: "reloaded: 1 dataset(s)" in daemon.log_text(), what="the reload")
    assert daemon.stop() == 0


def test_stale_socket_is_replaced_but_a_live_one_is_not(
    tmp_path: Path, start_daemon: StartDaemon
) -> None:
    import socket

    config = write_config(tmp_path, "lab", daemon_table(tmp_path))
    stale = tmp_path / "run" / "sinagot.sock"
    stale.parent.mkdir(mode=0o750)
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.bind(str(stale))
    assert stale.exists()
    first = start_daemon([config])
    assert "removing the stale control socket" in first.log_text()

    other = write_config(tmp_path, "other", daemon_table(tmp_path, state_dir=str(tmp_path / "s2")))
    second = start_daemon([other], wait=False)
    assert second.wait_exit() == 1
    assert f"another daemon answers on {stale}" in second.log_text()
    same_state = start_daemon([config], wait=False)
    assert same_state.wait_exit() == 1
    assert "already uses the state dir" in same_state.log_text()
    assert first.call("status")["pid"] == first.pid
    assert first.stop() == 0


def test_socket_mode_and_malformed_requests(tmp_path: Path, start_daemon: StartDaemon) -> None:
    config = write_config(tmp_path, "lab", daemon_table(tmp_path))
    daemon = start_daemon([config])
    sock = daemon.socket
    assert sock.stat().st_mode & 0o777 == 0o660
    assert sock.parent.stat().st_mode & 0o777 == 0o750

    cases = [
        ("GET", "/v1/jobs/abc", 400),
        ("GET", "/v1/jobs?state=bogus", 400),
        ("GET", "/v1/jobs?limit=-1", 400),
        ("GET", "/v1/jobs?colour=red", 400),
        ("GET", "/v1/jobs/12345", 404),
        ("POST", "/v1/jobs/12345/retry", 404),
        ("POST", "/v1/poll?dataset=nope", 404),
        ("GET", "/v1/nothing", 404),
        ("DELETE", "/v1/status", 405),
        ("GET", "/v1/pause", 405),
    ]
    for method, target, expected in cases:
        status, body = raw_request(sock, method, target)
        assert status == expected, (method, target, body)
        assert isinstance(body, dict) and body["error"], (method, target, body)
    status, _ = raw_request(sock, "GET", "/", b"\x00\x01 garbage\r\n\r\n")
    assert 400 <= status < 500
    status, body = raw_request(sock, "GET", "/v1/metrics")
    assert status == 200
    assert "# TYPE sinagot_jobs gauge" in body
    assert daemon.call("status")["pid"] == daemon.pid
    assert daemon.stop() == 0


def _as_nobody(socket_dir: Path, method: str, target: str, gid: int | None = None) -> int:
    """Fork a child that drops to ``nobody`` and sends one request; return its HTTP status."""
    nobody = pwd.getpwnam("nobody")
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        code = 1
        try:
            os.close(read_end)
            # A relative path from the socket dir: the pytest tmp dirs above are 0700.
            os.chdir(socket_dir)
            os.setgroups([])
            os.setgid(nobody.pw_gid if gid is None else gid)
            os.setuid(nobody.pw_uid)
            status, _ = raw_request("sinagot.sock", method, target)
            os.write(write_end, str(status).encode())
            code = 0
        finally:
            os._exit(code)
    os.close(write_end)
    with os.fdopen(read_end) as reader:
        answer = reader.read()
    _, exit_status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(exit_status) == 0
    return int(answer)


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to drop to another uid")
def test_peer_credentials_refuse_mutating_calls_from_another_uid(
    tmp_path: Path, start_daemon: StartDaemon
) -> None:
    config = write_config(tmp_path, "lab", daemon_table(tmp_path))
    daemon = start_daemon([config])
    # Loosen the file modes on purpose: SO_PEERCRED must refuse even when anyone may connect.
    daemon.socket.parent.chmod(0o755)
    daemon.socket.chmod(0o666)
    assert _as_nobody(daemon.socket.parent, "GET", "/v1/status") == 200
    assert _as_nobody(daemon.socket.parent, "POST", "/v1/pause") == 403
    assert daemon.call("status")["paused"] is False
    assert "refused POST /v1/pause from uid 65534" in daemon.log_text()

    config.write_text(config.read_text() + 'control_group = "nogroup"\n')
    daemon.call("reload")
    assert _as_nobody(daemon.socket.parent, "POST", "/v1/pause") == 200
    assert daemon.call("status")["paused"] is True
    assert daemon.stop() == 0
