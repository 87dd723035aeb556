"""sd_notify on a real datagram socket, journald priority prefixes, and the unit files:
the repository's example and those `sinagot systemd-unit` writes."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tomllib
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest

from daemon_support import DaemonProcess, daemon_table, wait_for, write_config
from sinagot import __version__
from sinagot.cli.internals import UnitSpec, own_command, render_unit
from sinagot.daemon import Notifier
from sinagot.errors import DaemonError

UNIT = Path(__file__).resolve().parents[1] / "systemd" / "sinagot.service"
SAMPLE_CONFIG = UNIT.with_name("sinagot.toml")
# The installation under test: the console script of the environment running pytest.
SINAGOT = Path(sys.executable).with_name("sinagot")

needs_systemd_analyze = pytest.mark.skipif(
    shutil.which("systemd-analyze") is None,
    reason="systemd-analyze not installed (apt-get install systemd; CI's .ci/run does)",
)


class Listener:
    """Collects sd_notify datagrams (bounded waits)."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.sock.settimeout(0.2)
        self.messages: list[str] = []

    def wait_for(self, line: str, timeout: float = 20.0) -> str:
        def seen() -> str | None:
            with contextlib.suppress(TimeoutError):
                self.messages.append(self.sock.recv(4096).decode())
            return next((m for m in self.messages if line in m.splitlines()), None)

        return wait_for(seen, timeout, f"sd_notify {line!r}")


@pytest.fixture
def listener(tmp_path: Path) -> Iterator[tuple[Listener, str]]:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    path = tmp_path / "notify.sock"
    sock.bind(str(path))
    with sock:
        yield Listener(sock), str(path)


def test_notify_messages_over_a_daemon_life(tmp_path: Path, listener: tuple[Listener, str]) -> None:
    notify, address = listener
    config = write_config(tmp_path, "lab", daemon_table(tmp_path))
    log = tmp_path / "daemon.log"
    log.touch()
    stat = log.stat()
    daemon = DaemonProcess(
        tmp_path,
        [config],
        env={
            "NOTIFY_SOCKET": address,
            "WATCHDOG_USEC": "200000",
            "JOURNAL_STREAM": f"{stat.st_dev}:{stat.st_ino}",
        },
    )
    daemon.start(wait=False)
    try:
        ready = notify.wait_for("READY=1")
        assert any(line.startswith("STATUS=running") for line in ready.splitlines())
        notify.wait_for("WATCHDOG=1")
        daemon.signal(signal.SIGHUP)
        reloading = notify.wait_for("RELOADING=1")
        assert any(line.startswith("MONOTONIC_USEC=") for line in reloading.splitlines())
        daemon.signal(signal.SIGTERM)
        notify.wait_for("STOPPING=1")
        assert daemon.wait_exit() == 0
    finally:
        daemon.ensure_stopped()
    lines = [line for line in daemon.log_text().splitlines() if line]
    assert lines
    assert all(line[0] == "<" and line[2] == ">" for line in lines), lines[:3]
    assert any(line.startswith("<6>sinagot.daemon._service: ready") for line in lines)


def test_abstract_notify_socket_and_environment_is_unset() -> None:
    name = f"sinagot-test-{uuid.uuid4().hex}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        sock.settimeout(5)
        env = {"NOTIFY_SOCKET": f"@{name}", "WATCHDOG_USEC": "1000000", "WATCHDOG_PID": "1"}
        notifier = Notifier(env)
        try:
            assert env == {}
            # The watchdog belongs to pid 1, not to us.
            assert notifier.watchdog_interval is None
            notifier.ready("testing")
            assert sock.recv(4096) == b"READY=1\nSTATUS=testing"
        finally:
            notifier.close()


def test_notifier_without_socket_is_silent() -> None:
    notifier = Notifier({})
    assert not notifier.enabled
    notifier.ready("nobody listens")
    notifier.close()


def verify(unit: Path) -> None:
    result = subprocess.run(
        ["systemd-analyze", "verify", str(unit)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, "SYSTEMD_LOG_LEVEL": "warning"},
    )
    assert result.returncode == 0, result.stderr
    assert unit.name not in result.stderr, result.stderr


def exposure(unit: Path) -> tuple[float, str]:
    """The overall exposure of ``unit`` from `systemd-analyze security`: number and rating."""
    result = subprocess.run(
        ["systemd-analyze", "security", "--offline=true", "--no-pager", str(unit)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    match = re.search(r"Overall exposure level for \S+: ([\d.]+) (\w+)", result.stdout)
    assert match is not None, result.stdout + result.stderr
    return float(match.group(1)), match.group(2)


def settings(unit_text: str, key: str) -> list[str]:
    """The values of ``key=`` in a unit, in order."""
    return [line.split("=", 1)[1] for line in unit_text.splitlines() if line.startswith(f"{key}=")]


def sinagot(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(SINAGOT), *args], capture_output=True, text=True, timeout=120, check=False
    )


def xnat_config(
    base: Path, name: str, store: Mapping[str, str], daemon: Mapping[str, str] | None = None
) -> Path:
    """``base/<name>/sinagot.toml``: an XNAT project with its work tree ``work`` beside it."""
    folder = base / name
    (folder / "scripts").mkdir(parents=True)
    lines = [
        "[path]",
        'dataset = "work"',
        'scripts = "scripts"',
        "[records]",
        'id_pattern = "REC-\\\\d+"',
        "[tasks.RS]",
        'modalities = ["EEG"]',
        "[modalities.EEG]",
        "scripts = []",
        "[store]",
        'type = "xnat"',
        'server = "https://xnat.example.org"',
        'project = "P"',
        'user = "lab"',
        *(f"{key} = {value!r}" for key, value in store.items()),
        "[daemon]",
        *(f"{key} = {value!r}" for key, value in (daemon or {}).items()),
    ]
    config = folder / "sinagot.toml"
    config.write_text("\n".join(lines) + "\n")
    return config


@pytest.fixture
def generated(tmp_path: Path) -> tuple[Path, Path, Path]:
    """The unit `sinagot systemd-unit` writes for two configs, the first in a folder whose
    name needs quoting."""
    cache = tmp_path / "cache"
    cache.mkdir()
    (tmp_path / "state").mkdir()
    first = xnat_config(
        tmp_path,
        "lab one %i",
        {"password_credential": "xnat-lab", "cache_dir": str(cache)},
        # The unit's RuntimeDirectory= holds the socket: nothing to add for it.
        {"state_dir": str(tmp_path / "state"), "socket": "/run/sinagot/lab.sock"},
    )
    # Daemon-wide settings come from the first config: this state_dir is not used.
    second = xnat_config(
        tmp_path,
        "lab2",
        {"password_credential": "xnat-lab"},
        {"state_dir": str(tmp_path / "unused")},
    )
    result = sinagot("systemd-unit", str(first), str(second), "--user", "lab", "--group", "labs")
    assert result.returncode == 0, result.stderr
    unit = tmp_path / "sinagot.service"
    unit.write_text(result.stdout)
    return unit, first, second


def test_systemd_unit_runs_this_installation_on_the_configs(
    generated: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    unit, first, second = generated
    text = unit.read_text()
    assert SINAGOT.is_file() and os.access(SINAGOT, os.X_OK)
    quoted_first = f'"{first}"'.replace("%", "%%")
    assert settings(text, "ExecStart") == [f"{SINAGOT} daemon {quoted_first} {second}"]
    assert settings(text, "ReadWritePaths") == [
        f'"{first.parent / "work"}"'.replace("%", "%%"),
        str(tmp_path / "cache"),
        str(tmp_path / "state"),
        str(second.parent / "work"),
    ]
    # One credential for both configs, and where to put the password.
    assert settings(text, "LoadCredential") == ["xnat-lab:/etc/sinagot/credentials/xnat-lab"]
    assert (
        "put the XNAT password in\n# /etc/sinagot/credentials/xnat-lab (owner root, mode 0600)"
        in text
    )
    assert settings(text, "User") == ["lab"] and settings(text, "Group") == ["labs"]
    assert (first.parent / "work").is_dir() and (second.parent / "work").is_dir()
    # The rest is the example's hardening (adapted only where paths require it).
    example = UNIT.read_text()
    for key in ("ProtectSystem", "NoNewPrivileges", "SystemCallFilter", "RestrictAddressFamilies"):
        assert settings(text, key) == settings(example, key), key


@needs_systemd_analyze
def test_systemd_unit_verifies(generated: tuple[Path, Path, Path]) -> None:
    verify(generated[0])


@needs_systemd_analyze
def test_systemd_unit_is_rated_ok_or_better(generated: tuple[Path, Path, Path]) -> None:
    level, rating = exposure(generated[0])
    assert rating in {"SAFE", "OK"}, (level, rating)


@pytest.mark.parametrize("case", ["missing", "bad value", "missing cache_dir", "bad user"])
def test_systemd_unit_rejects_a_bad_config_in_one_line(tmp_path: Path, case: str) -> None:
    args: list[str]
    if case == "missing":
        args, expected = [str(tmp_path / "nowhere.toml")], "config file not found"
    elif case == "bad value":
        config = xnat_config(tmp_path, "lab", {"password_credential": "no/slash"})
        args, expected = [str(config)], "password_credential"
    elif case == "missing cache_dir":
        config = xnat_config(tmp_path, "lab", {"cache_dir": str(tmp_path / "no-cache")})
        args, expected = [str(config)], f"install -d -o sinagot -g sinagot {tmp_path / 'no-cache'}"
    else:
        config = xnat_config(tmp_path, "lab", {})
        args, expected = [str(config), "--user", "bad name"], "not a valid user or group name"
    result = sinagot("systemd-unit", *args)
    assert result.returncode == 2, result.stderr
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("sinagot: error: "), result.stderr
    assert expected in lines[0]


def example_spec() -> UnitSpec:
    """The arguments of the repository's example unit: the sample config as
    /etc/sinagot/sinagot.toml, run by /usr/local/bin/sinagot."""
    sample = tomllib.loads(SAMPLE_CONFIG.read_text())
    return UnitSpec(
        command=("/usr/local/bin/sinagot",),
        configs=(Path("/etc/sinagot/sinagot.toml"),),
        writable=(Path(sample["path"]["dataset"]),),
        credentials=(sample["store"]["password_credential"],),
    )


def test_repo_unit_is_the_generated_example() -> None:
    assert UNIT.read_text() == render_unit(example_spec()), (
        "systemd/sinagot.service differs from the generator's output: rewrite it with "
        "render_unit(example_spec()) from tests/test_daemon_systemd.py"
    )


def test_home_paths_make_protect_home_read_only() -> None:
    spec = UnitSpec(
        command=("/opt/sinagot/bin/sinagot",),
        configs=(Path("/home/alice/lab/sinagot.toml"),),
        writable=(Path("/home/alice/lab/work"),),
    )
    text = render_unit(spec)
    assert settings(text, "ProtectHome") == ["read-only"]
    assert "# /run/user: /home/alice/lab/sinagot.toml (and 1 more)\n" in text
    assert settings(text, "ReadWritePaths") == ["/home/alice/lab/work"]
    example = render_unit(example_spec())
    assert settings(example, "ProtectHome") == ["yes"]
    changed = {"ExecStart", "ReadWritePaths", "LoadCredential", "ProtectHome"}
    kept = {line for line in example.splitlines() if line.split("=", 1)[0] not in changed}
    kept -= {line for line in kept if line.startswith("#")}
    assert kept <= set(text.splitlines())


@needs_systemd_analyze
def test_odd_paths_and_home_paths_verify_and_rate_ok(tmp_path: Path) -> None:
    # verify opens the executable: a stand-in in a folder whose name systemd would mangle
    # (specifier, variable, space) unless quoted right.
    folder = tmp_path / "odd %n $HOME dir"
    folder.mkdir()
    executable = folder / "sinagot"
    executable.write_text("#!/bin/sh\n")
    executable.chmod(0o755)
    spec = UnitSpec(
        command=(str(executable),),
        configs=(Path("/home/alice/lab/sinagot.toml"), Path('/srv/"q" \\ %n $X/lab.toml')),
        writable=(Path("/home/alice/lab/work"), Path("/srv/it's here")),
        credentials=("xnat-lab",),
    )
    unit = tmp_path / "sinagot.service"
    text = render_unit(spec)
    unit.write_text(text)
    assert settings(text, "ExecStart") == [
        f'"{str(executable).replace("%", "%%")}" daemon /home/alice/lab/sinagot.toml'
        ' "/srv/\\"q\\" \\\\ %%n $$X/lab.toml"'
    ]
    verify(unit)
    level, rating = exposure(unit)
    assert rating in {"SAFE", "OK"}, (level, rating)


def test_an_executable_systemd_refuses_is_a_clear_error() -> None:
    spec = UnitSpec(command=('/opt/it"s/bin/sinagot',), configs=(Path("/etc/sinagot/a.toml"),))
    with pytest.raises(DaemonError, match="quote or a backslash"):
        render_unit(spec)


def test_own_command_is_this_environments_script(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    python = tmp_path / "bin" / "python3"
    python.parent.mkdir()
    python.write_text("")
    monkeypatch.setattr(sys, "executable", str(python))
    script = python.with_name("sinagot")
    # Another interpreter's script beside ours is not ours: python -m sinagot instead.
    script.write_text("#!/usr/bin/python3\n")
    script.chmod(0o755)
    assert own_command() == (str(python), "-m", "sinagot")
    script.write_text(f"#!{python}\n")
    assert own_command() == (str(script),)


def test_python_m_sinagot_is_the_cli() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "sinagot", "--version"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"sinagot {__version__}"


@needs_systemd_analyze
def test_unit_file_verifies(tmp_path: Path) -> None:
    # verify wants the ExecStart binary to exist; point it at a stand-in.
    unit = tmp_path / "sinagot.service"
    fake = tmp_path / "sinagot"
    fake.write_text("#!/bin/sh\n")
    fake.chmod(0o755)
    unit.write_text(UNIT.read_text().replace("/usr/local/bin/sinagot", str(fake)))
    verify(unit)


@needs_systemd_analyze
def test_unit_hardening_is_rated_ok_or_better() -> None:
    level, rating = exposure(UNIT)
    assert rating in {"SAFE", "OK"}, (level, rating)
