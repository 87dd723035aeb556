"""Reading a parsed config: typed values, names, and one-line errors naming file and key."""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar, cast

from .._names import length_problem
from ..errors import ConfigError

__all__ = ["KNOWN_TABLES", "NAME", "Reader", "close_names", "printable"]

NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")

_T = TypeVar("_T")


KNOWN_TABLES: dict[str, tuple[str, ...]] = {
    "path": ("dataset", "scripts"),
    "records": ("id_pattern", "file_match"),
    "tasks": (),
    "modalities": (),
    "run": ("mode",),
    "dask": (
        "address",
        "n_workers",
        "threads_per_worker",
        "processes",
        "jobqueue",
        "tls_ca_file",
        "tls_cert",
        "tls_key",
        "allow_plaintext",
    ),
    "log": ("level", "name", "format"),
    "store": (
        "type",
        "server",
        "project",
        "user",
        "password",
        "password_credential",
        "cache_dir",
        "race_condition_delay",
        "max_connections",
        "concurrent_files",
        "pipeline",
    ),
    "daemon": (
        "poll_interval",
        "min_poll_interval",
        "server_recovery",
        "listings_per_server",
        "pipeline_check_interval",
        "max_concurrent_jobs",
        "job_timeout",
        "script_timeout",
        "max_attempts",
        "retry_backoff",
        "shutdown_timeout",
        "socket",
        "state_dir",
        "control_group",
        "metrics_address",
        "metrics_allow_remote",
    ),
    "notify": ("urls", "unhealthy_after", "group_window", "max_per_hour"),
}


def printable(text: str) -> str:
    """``text`` with its unprintable characters (newlines among them) escaped."""
    return "".join(c if c.isprintable() else ascii(c)[1:-1] for c in text)


def close_names(name: str, choices: Sequence[str]) -> list[str]:
    # Names here are short ("RS", "EEG"): one wrong letter already halves the ratio.
    return difflib.get_close_matches(name, choices, n=1, cutoff=0.5)


class Reader:
    """Reads one parsed config, raising ConfigErrors that name the file and key."""

    def __init__(self, path: Path) -> None:
        self.config_file = path
        self.base = path.parent

    def error(self, key: str, problem: str, fix: str) -> ConfigError:
        # Keys and paths come from the file: a newline in one must not break the line.
        return ConfigError(printable(f"{self.config_file}: {key}: {problem}; {fix}"))

    def check_length(self, key: str, name: str, what: str) -> None:
        """Raise unless ``name`` fits as a file or folder name (names become both, and XNAT labels)."""
        if problem := length_problem(name, what):
            raise self.error(key, problem, "use a shorter name")

    def check_keys(self, key: str, table: Mapping[str, Any], allowed: tuple[str, ...]) -> None:
        for name in table:
            if name not in allowed:
                close = close_names(name, allowed)
                hint = (
                    f"did you mean {close[0]!r}?" if close else f"valid keys: {', '.join(allowed)}"
                )
                raise self.error(f"{key}.{name}" if key else name, "unknown key", hint)

    def table(self, parent: Mapping[str, Any], key: str, name: str) -> Mapping[str, Any]:
        value = parent.get(name, {})
        if not isinstance(value, dict):
            raise self.error(key, "must be a table", f"write it as [{key}]")
        return value

    def typed(
        self,
        table: Mapping[str, Any],
        key: str,
        name: str,
        kind: type[_T] | tuple[type, ...],
        default: _T,
        check: Callable[[Any], bool] = lambda _value: True,
        expected: str = "",
    ) -> _T:
        if name not in table:
            return default
        value = table[name]
        kinds = kind if isinstance(kind, tuple) else (kind,)
        # TOML booleans are ints to Python; never accept one for a number.
        valid = isinstance(value, kinds) and not (isinstance(value, bool) and bool not in kinds)
        if not valid or not check(value):
            what = expected or " or ".join(k.__name__ for k in kinds)
            raise self.error(f"{key}.{name}", f"got {value!r}", f"set it to {what}")
        return cast(_T, value)

    def number(self, table: Mapping[str, Any], key: str, name: str, default: float) -> float:
        value = self.typed(
            table, key, name, (int, float), default, lambda v: v > 0, "a positive number"
        )
        return float(value)

    def count(self, table: Mapping[str, Any], key: str, name: str, default: int) -> int:
        return self.typed(table, key, name, int, default, lambda v: v >= 1, "an integer >= 1")

    def text(self, table: Mapping[str, Any], key: str, name: str) -> str | None:
        return self.typed(table, key, name, str, None, lambda v: bool(v), "a non-empty string")

    def path(self, table: Mapping[str, Any], key: str, name: str) -> Path | None:
        value = self.typed(
            table,
            key,
            name,
            str,
            None,
            lambda v: bool(v) and "\x00" not in v,
            "a folder or file path",
        )
        if value is None:
            return None
        # A part over NAME_MAX would fail later, as an OSError from whatever touches it.
        self.check_length(f"{key}.{name}", value, "path")
        return (self.base / Path(value).expanduser()).resolve()

    def names(
        self, table: Mapping[str, Any], key: str, name: str, file_suffix: str = ""
    ) -> tuple[str, ...]:
        """A list of names; with ``file_suffix`` (scripts are files) each must fit as a file name."""
        if name not in table:
            raise self.error(f"{key}.{name}", "is missing", f'add {name} = ["..."]')
        value = table[name]
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise self.error(f"{key}.{name}", f"got {value!r}", 'use a list of names: ["a", "b"]')
        what = "file name" if file_suffix else "name"
        for item in value:
            self.check_length(f"{key}.{name}", item + file_suffix, what)
            if not NAME.fullmatch(item):
                raise self.error(
                    f"{key}.{name}", f"{item!r} is not a valid name", "use letters, digits and '_'"
                )
        if len(set(value)) != len(value):
            raise self.error(f"{key}.{name}", "lists a name twice", "remove the duplicate")
        return tuple(value)
