"""``sinagot systemd-unit``: a hardened systemd unit for this installation and its configs.

:func:`render_unit` is pure: the repository's example ``systemd/sinagot.service`` is its
output for ``/usr/local/bin/sinagot`` and ``/etc/sinagot/sinagot.toml``. :func:`installed_unit`
finds what it needs on this machine: the running installation's own command, and what the
configs read and write.
"""

from __future__ import annotations

import os
import re
import shlex
import sys
import sysconfig
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from ..config import load_settings
from ..errors import ConfigError, DaemonError

__all__ = ["DEFAULT_ACCOUNT", "UnitSpec", "installed_unit", "own_command", "render_unit"]

DEFAULT_ACCOUNT = "sinagot"
CREDENTIALS_DIR = Path("/etc/sinagot/credentials")
# Folders that ProtectHome=yes makes inaccessible, and that PrivateTmp=yes replaces with
# empty private ones.
HOME_ROOTS = (Path("/home"), Path("/root"), Path("/run/user"))
TMP_ROOTS = (Path("/tmp"), Path("/var/tmp"))
# StateDirectory=, CacheDirectory=, RuntimeDirectory=, LogsDirectory= of the unit: systemd
# creates them at start, writable by the service, so they need no ReadWritePaths=.
SERVICE_DIRS = tuple(
    Path(root, "sinagot") for root in ("/var/lib", "/var/cache", "/run", "/var/log")
)

# Quoted for systemd when a word holds anything but these.
_PLAIN_WORD = re.compile(r"[\w@%$+=:,./~-]+")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
# systemd rejects these in an executable's path ("contains special characters"), quoted or not.
_UNRUNNABLE = re.compile(r"[\"'\\]")
# systemd's strict user and group names, or a numeric id.
_ACCOUNT = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]{0,31}|\d+")


@dataclass(frozen=True, slots=True)
class UnitSpec:
    """What a unit starts and which paths it must reach; every path is absolute."""

    command: tuple[str, ...]
    configs: tuple[Path, ...]
    writable: tuple[Path, ...] = ()
    # Read, never written: the Python installation, the scripts folders.
    readable: tuple[Path, ...] = ()
    credentials: tuple[str, ...] = ()
    user: str = DEFAULT_ACCOUNT
    group: str = DEFAULT_ACCOUNT


def _word(text: str, *, expands_env: bool) -> str:
    """``text`` as one word of a unit setting, read back by systemd exactly as given."""
    # Specifiers (%n, %h...) are expanded in every setting; $VAR only in the arguments of an
    # Exec line, not in its executable.
    text = text.replace("%", "%%")
    if expands_env:
        text = text.replace("$", "$$")
    if _PLAIN_WORD.fullmatch(text):
        return text
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _header(spec: UnitSpec) -> list[str]:
    invocation = ["sinagot", "systemd-unit", *map(str, spec.configs)]
    if spec.user != DEFAULT_ACCOUNT:
        invocation += ["--user", spec.user]
    if spec.group != DEFAULT_ACCOUNT:
        invocation += ["--group", spec.group]
    return [
        f"# Sinagot sync daemon, written by `{shlex.join(invocation)}`.",
        '# Install it as root (README.md, "Daemon", has every step):',
        "#   cp systemd/sinagot.sysusers /etc/sysusers.d/sinagot.conf && systemd-sysusers",
        "#   sinagot systemd-unit CONFIG... > /etc/systemd/system/sinagot.service",
        "#   systemctl daemon-reload && systemctl enable --now sinagot",
        "# Write it again after moving the installation or changing the configs' paths or",
        "# credentials; keep local changes in `systemctl edit sinagot`.",
        "# Control it with `sinagot status|jobs|retry|poll|pause|resume|reload` as root or as a",
        f"# member of the `{spec.group}` group (the socket is /run/sinagot/sinagot.sock, mode 0660).",
    ]


def _access(spec: UnitSpec) -> list[str]:
    lines: list[str] = []
    if spec.writable:
        lines += [
            "# Where the configs write besides the unit's own directories ([path] dataset, [store]",
            "# cache_dir, [daemon] state_dir and socket); the service user must own these folders",
            f"# (install -d -o {spec.user} -g {spec.group} DIR).",
            *(f"ReadWritePaths={_word(str(path), expands_env=False)}" for path in spec.writable),
        ]
    for name in spec.credentials:
        lines += [
            f'# [store] password_credential = "{name}": put the XNAT password in',
            f"# {CREDENTIALS_DIR / name} (owner root, mode 0600); the daemon reads it from",
            f"# $CREDENTIALS_DIRECTORY/{name}.",
            f"LoadCredential={name}:{CREDENTIALS_DIR / name}",
        ]
    return lines


def _hidden(spec: UnitSpec, roots: tuple[Path, ...]) -> str | None:
    """The first path the service needs under ``roots``, with a count of the others."""
    paths = (Path(spec.command[0]), *spec.configs, *spec.writable, *spec.readable)
    hidden = [path for path in paths if any(path.is_relative_to(root) for root in roots)]
    if not hidden:
        return None
    return f"{hidden[0]} (and {len(hidden) - 1} more)" if len(hidden) > 1 else str(hidden[0])


def _protect_home(spec: UnitSpec) -> list[str]:
    hidden = _hidden(spec, HOME_ROOTS)
    if hidden is None:
        return ["ProtectHome=yes"]
    return [
        "# ProtectHome=yes would hide what the service reads or writes under /home, /root or",
        f"# /run/user: {hidden}",
        "# so read-only instead, and ReadWritePaths= still bound the writes. Not tmpfs with",
        "# BindReadOnlyPaths=: Python reads more than the paths named here (.pth files, its",
        "# standard library). The service user needs search access to those home folders.",
        "ProtectHome=read-only",
    ]


def _private_tmp(spec: UnitSpec) -> list[str]:
    hidden = _hidden(spec, TMP_ROOTS)
    if hidden is None:
        return ["PrivateTmp=yes"]
    return [
        "# PrivateTmp=yes would give the service its own empty /tmp and /var/tmp, without",
        f"# {hidden}",
        "# Move the installation and the configs' folders out of them to get it back.",
        "PrivateTmp=no",
    ]


def render_unit(spec: UnitSpec) -> str:
    """The text of a unit that runs ``spec.command daemon spec.configs`` as ``spec.user``."""
    for account in (spec.user, spec.group):
        if not _ACCOUNT.fullmatch(account):
            raise ConfigError(
                f"{account!r} is not a valid user or group name for a unit; use letters, digits,"
                " '_', '-' or '.' (not first), or a number"
            )
    for path in (*spec.command, *map(str, (*spec.configs, *spec.writable, *spec.readable))):
        # A newline would end the setting and let the rest of the path inject another one.
        if _CONTROL.search(path):
            raise ConfigError(
                f"{path!r}: a path with a control character cannot go in a unit; rename it"
            )
    executable = spec.command[0]
    arguments = [*spec.command[1:], "daemon", *map(str, spec.configs)]
    if _UNRUNNABLE.search(executable):
        raise DaemonError(
            f"systemd refuses to run an executable whose path holds a quote or a backslash:"
            f" {executable}; install sinagot elsewhere"
        )
    exec_start = " ".join(
        [_word(executable, expands_env=False)]
        + [_word(argument, expands_env=True) for argument in arguments]
    )
    lines = [
        *_header(spec),
        "",
        "[Unit]",
        "Description=Sinagot sync daemon (processing in step with XNAT servers)",
        "Documentation=file:///usr/share/doc/sinagot/README.md",
        "Wants=network-online.target",
        "After=network-online.target",
        "",
        "[Service]",
        "Type=notify",
        "NotifyAccess=main",
        f"ExecStart={exec_start}",
        "ExecReload=/bin/kill -HUP $MAINPID",
        "Restart=on-failure",
        "RestartSec=5s",
        "WatchdogSec=120s",
        "# Longer than [daemon] shutdown_timeout so that running jobs can finish first.",
        "TimeoutStopSec=90s",
        f"User={spec.user}",
        f"Group={spec.group}",
        "UMask=0027",
        "StateDirectory=sinagot",
        "StateDirectoryMode=0750",
        "CacheDirectory=sinagot",
        "CacheDirectoryMode=0750",
        "RuntimeDirectory=sinagot",
        "RuntimeDirectoryMode=0750",
        "LogsDirectory=sinagot",
        "LogsDirectoryMode=0750",
        "ConfigurationDirectory=sinagot",
        "LimitNOFILE=65536",
        "Environment=PYTHONUNBUFFERED=1",
        *_access(spec),
        "",
        "# Hardening (`systemd-analyze security sinagot`).",
        "NoNewPrivileges=yes",
        "CapabilityBoundingSet=",
        "AmbientCapabilities=",
        "ProtectSystem=strict",
        *_protect_home(spec),
        *_private_tmp(spec),
        "PrivateDevices=yes",
        "DevicePolicy=closed",
        "ProtectKernelTunables=yes",
        "ProtectKernelModules=yes",
        "ProtectKernelLogs=yes",
        "ProtectControlGroups=yes",
        "ProtectClock=yes",
        "ProtectHostname=yes",
        "ProtectProc=invisible",
        "KeyringMode=private",
        "RestrictNamespaces=yes",
        "RestrictRealtime=yes",
        "RestrictSUIDSGID=yes",
        "LockPersonality=yes",
        "RemoveIPC=yes",
        "# AF_UNIX: control socket, sd_notify, Dask; AF_INET/AF_INET6: XNAT servers, Dask scheduler.",
        "RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6",
        "SystemCallArchitectures=native",
        "SystemCallFilter=@system-service",
        "SystemCallErrorNumber=EPERM",
        "# Not set on purpose:",
        "# - PrivateUsers=yes would map every other uid to nobody inside the service, so the",
        "#   SO_PEERCRED check of the control socket could no longer tell root or group members.",
        "# - ProcSubset=pid hides /proc/meminfo and friends, which Dask's memory monitor reads.",
        "# - MemoryDenyWriteExecute=yes breaks JIT compilers (numba) that lab scripts may use.",
        "PrivateUsers=no",
        "",
        "[Install]",
        "WantedBy=multi-user.target",
    ]
    return "\n".join(lines) + "\n"


def _script_runs_with(script: Path, python: str) -> bool:
    """Whether ``script`` is a console script of the environment whose interpreter is ``python``."""
    try:
        with script.open("rb") as file:
            first = file.readline(4096)
        if not first.startswith(b"#!") or not os.access(script, os.X_OK):
            return False
        interpreter = os.fsdecode(first[2:]).split(maxsplit=1)[0]
        # Same folder: a venv's python is a symlink to the base one, and a console script of
        # another venv (or of the base) must not pass for ours.
        return os.path.dirname(interpreter) == os.path.dirname(python) and os.path.samefile(
            interpreter, python
        )
    except (OSError, IndexError):
        return False


def own_command() -> tuple[str, ...]:
    """How systemd starts this installation: its ``sinagot`` console script, else
    ``python -m sinagot`` with the interpreter running now."""
    if not sys.executable:
        raise DaemonError(
            "cannot tell which Python runs sinagot (sys.executable is empty); run "
            "`sinagot systemd-unit` from the installation's own `sinagot` command"
        )
    python = os.path.abspath(sys.executable)
    # A venv's scripts sit beside its python; a Debian system install's in /usr/local/bin.
    for folder in dict.fromkeys((os.path.dirname(python), sysconfig.get_path("scripts"))):
        script = Path(folder, "sinagot")
        if _script_runs_with(script, python):
            return (str(script),)
    return (python, "-m", "sinagot")


def _installation_paths(command: Sequence[str]) -> list[Path]:
    """What the daemon's Python reads besides its command: interpreter, environment, package."""
    package = Path(__file__).resolve().parents[1]
    paths = [
        Path(os.path.realpath(command[0])),
        Path(os.path.realpath(sys.executable)),
        Path(sys.prefix),
        Path(sys.base_prefix),
        package,
    ]
    return list(dict.fromkeys(paths))


def _needed_folder(config: Path, key: str, path: Path, user: str, group: str) -> Path | None:
    """``path`` for ReadWritePaths=, or None when the unit's own directories cover it."""
    if any(path.is_relative_to(own) for own in SERVICE_DIRS):
        return None
    if not path.is_dir():
        # ProtectSystem=strict: the service could not create it, and systemd refuses to
        # start a unit whose ReadWritePaths= do not exist.
        raise ConfigError(
            f"{config}: {key} {path} does not exist and the service cannot create it; "
            f"create it: install -d -o {user} -g {group} {shlex.quote(str(path))}"
        )
    return path


def installed_unit(
    configs: Iterable[str | os.PathLike[str]],
    *,
    user: str = DEFAULT_ACCOUNT,
    group: str = DEFAULT_ACCOUNT,
) -> str:
    """A unit that runs this installation's ``sinagot daemon`` on ``configs``, validated first."""
    settings = [load_settings(config) for config in configs]
    writable: list[Path] = []
    for index, each in enumerate(settings):
        wanted = [("[path] dataset", each.dataset_dir), ("[store] cache_dir", each.store.cache_dir)]
        if index == 0:
            # Daemon-wide settings come from the first config only.
            socket = each.daemon.socket
            wanted += [
                ("[daemon] state_dir", each.daemon.state_dir),
                ("[daemon] socket's folder", socket.parent if socket is not None else None),
            ]
        for key, path in wanted:
            if path is not None:
                folder = _needed_folder(each.config_path, key, path.resolve(), user, group)
                if folder is not None:
                    writable.append(folder)
    command = own_command()
    spec = UnitSpec(
        command=command,
        configs=tuple(each.config_path for each in settings),
        writable=tuple(dict.fromkeys(writable)),
        readable=tuple(
            dict.fromkeys([*_installation_paths(command), *(each.scripts_dir for each in settings)])
        ),
        credentials=tuple(
            dict.fromkeys(
                each.store.password_credential
                for each in settings
                if each.store.password_credential is not None
            )
        ),
        user=user,
        group=group,
    )
    return render_unit(spec)
