"""The tables of the services around a dataset: [store], [dask] and [daemon]."""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from ._reader import Reader
from ._settings import JOBQUEUE_CLUSTERS, DaemonSettings, DaskSettings, StoreSettings

__all__ = ["daemon_settings", "dask_settings", "store_settings"]

_STORE_TYPES = ("local", "xnat")
# What systemd accepts as a credential name, without a path separator.
_CREDENTIAL_NAME = re.compile(r"[A-Za-z0-9_\-][A-Za-z0-9_.\-]{0,254}")
# [daemon] min_poll_interval unless set (or poll_interval, if that is shorter).
_MIN_POLL_INTERVAL = 10.0
_LOOPBACK_NAMES = frozenset({"localhost", "localhost.localdomain", "ip6-localhost"})


def store_settings(reader: Reader, table: Mapping[str, Any]) -> StoreSettings:
    store_type = reader.typed(
        table,
        "store",
        "type",
        str,
        "local",
        lambda v: v in _STORE_TYPES,
        " or ".join(f'"{t}"' for t in _STORE_TYPES),
    )
    settings = StoreSettings(
        type=store_type,
        server=reader.text(table, "store", "server"),
        project=reader.text(table, "store", "project"),
        user=reader.text(table, "store", "user"),
        password=reader.typed(table, "store", "password", str, None),
        password_credential=reader.typed(
            table,
            "store",
            "password_credential",
            str,
            None,
            lambda v: bool(_CREDENTIAL_NAME.fullmatch(v)),
            "a systemd credential name (letters, digits, '_', '-', '.')",
        ),
        cache_dir=reader.path(table, "store", "cache_dir"),
        race_condition_delay=reader.number(table, "store", "race_condition_delay", 5.0),
        max_connections=reader.count(table, "store", "max_connections", 8),
        concurrent_files=reader.count(table, "store", "concurrent_files", 8),
        pipeline=reader.typed(
            table,
            "store",
            "pipeline",
            str,
            "sinagot",
            lambda v: bool(re.fullmatch(r"[A-Za-z0-9_\-][A-Za-z0-9_.\-]*", v)),
            "a name of letters, digits, '_', '-' or '.'",
        ),
    )
    if settings.password is not None and settings.password_credential is not None:
        raise reader.error(
            "store.password_credential",
            "conflicts with store.password",
            "remove the password from the config and keep the credential",
        )
    if store_type == "xnat":
        for name in ("server", "project", "user"):
            if getattr(settings, name) is None:
                raise reader.error(
                    f"store.{name}", "is required for type 'xnat'", f'add {name} = "..." to [store]'
                )
        server = settings.server or ""
        if not re.match(r"https?://", server):
            raise reader.error(
                "store.server", f"{server!r} is not an http(s) URL", 'use "https://host[:port]"'
            )
    return settings


def dask_settings(reader: Reader, table: Mapping[str, Any]) -> DaskSettings:
    address = reader.text(table, "dask", "address")
    options = [name for name in ("n_workers", "threads_per_worker", "processes") if name in table]
    if address is not None and options:
        raise reader.error(
            f"dask.{options[0]}",
            "LocalCluster options conflict with dask.address",
            "remove one of them",
        )
    jobqueue = reader.typed(
        table,
        "dask",
        "jobqueue",
        str,
        None,
        lambda v: v in JOBQUEUE_CLUSTERS,
        " or ".join(f'"{name}"' for name in JOBQUEUE_CLUSTERS),
    )
    if jobqueue is not None and address is not None:
        raise reader.error("dask.jobqueue", "conflicts with dask.address", "remove one of them")
    local_only = [name for name in ("threads_per_worker", "processes") if name in table]
    if jobqueue is not None and local_only:
        raise reader.error(
            f"dask.{local_only[0]}",
            "is a LocalCluster option, not used with dask.jobqueue",
            "remove it and set cores/processes per job in Dask's jobqueue.yaml",
        )
    tls = _dask_tls(reader, table, address)
    allow_plaintext = reader.typed(table, "dask", "allow_plaintext", bool, False)
    if address is None and "allow_plaintext" in table:
        raise reader.error(
            "dask.allow_plaintext",
            "only applies to dask.address",
            "remove it: clusters Sinagot starts always authenticate their comms",
        )
    if (
        address is not None
        and not address.startswith(("tls://", "wss://", "inproc://"))
        and not _is_loopback_address(address)
        and not allow_plaintext
    ):
        raise reader.error(
            "dask.address",
            f"{address!r} is plaintext to another host: whoever can reach it runs code in the"
            " cluster, and the traffic can be read",
            "use tls:// with tls_ca_file, tls_cert and tls_key (or Dask's TLS settings), or set"
            " allow_plaintext = true if the network is trusted",
        )
    return DaskSettings(
        address=address,
        n_workers=reader.count(table, "dask", "n_workers", 0) or None,
        threads_per_worker=reader.count(table, "dask", "threads_per_worker", 0) or None,
        processes=reader.typed(table, "dask", "processes", bool, None),
        jobqueue=jobqueue,
        tls_ca_file=tls[0],
        tls_cert=tls[1],
        tls_key=tls[2],
        allow_plaintext=allow_plaintext,
    )


def _dask_tls(
    reader: Reader, table: Mapping[str, Any], address: str | None
) -> tuple[Path | None, Path | None, Path | None]:
    """The ``[dask]`` TLS files: all for an external ``tls://`` scheduler, or none."""
    names = ("tls_ca_file", "tls_cert", "tls_key")
    files = tuple(reader.path(table, "dask", name) for name in names)
    given = [name for name, file in zip(names, files, strict=True) if file is not None]
    if not given:
        return None, None, None
    if address is None or not address.startswith("tls://"):
        raise reader.error(
            f"dask.{given[0]}",
            "only applies to a tls:// dask.address",
            "remove it: clusters Sinagot starts make their own certificates",
        )
    for name, file in zip(names, files, strict=True):
        if name != "tls_key" and file is None:
            raise reader.error(
                f"dask.{name}", "is missing", "give tls_ca_file and tls_cert (and tls_key)"
            )
        if file is not None and not file.is_file():
            raise reader.error(f"dask.{name}", f"no file {file}", "fix the path")
    return files[0], files[1], files[2]


def _is_loopback_address(address: str) -> bool:
    """Whether a Dask address (``tcp://host:port``, ``host:port``) names this machine's loopback."""
    location = address.split("://", 1)[1] if "://" in address else address
    host = urlsplit(f"//{location}").hostname or ""
    if host in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _metrics_address(reader: Reader, table: Mapping[str, Any]) -> tuple[str, int] | None:
    """``[daemon] metrics_address``: "PORT" or ":PORT" (loopback), or "HOST:PORT"."""
    text = reader.typed(table, "daemon", "metrics_address", str, None)
    allow_remote = reader.typed(table, "daemon", "metrics_allow_remote", bool, False)
    if text is None:
        if "metrics_allow_remote" in table:
            raise reader.error(
                "daemon.metrics_allow_remote",
                "only applies to daemon.metrics_address",
                "remove it, or set metrics_address",
            )
        return None
    host, _, port_text = text.strip().rpartition(":")
    host = host.strip("[]") or "127.0.0.1"
    if not port_text.isdigit() or int(port_text) > 65535:
        raise reader.error(
            "daemon.metrics_address",
            f"{text!r} is not a port or HOST:PORT",
            'use "9464" (on 127.0.0.1), "127.0.0.1:9464" or "[::1]:9464"; 0 picks a free port',
        )
    if not allow_remote and not _is_loopback_address(f"[{host}]" if ":" in host else host):
        raise reader.error(
            "daemon.metrics_address",
            f"{host!r} is not a loopback address: the metrics endpoint has no authentication"
            " or TLS, so anyone who reaches it reads the names of datasets and servers",
            "keep it on 127.0.0.1 and let the Prometheus of this host (or a TLS proxy) scrape"
            " it, or set metrics_allow_remote = true if the network is trusted",
        )
    return host, int(port_text)


def _min_poll_interval(reader: Reader, table: Mapping[str, Any], poll_interval: float) -> float:
    """``[daemon] min_poll_interval``: 10 s by default, never above ``poll_interval``."""
    if "min_poll_interval" not in table:
        return min(_MIN_POLL_INTERVAL, poll_interval)
    minimum = reader.number(table, "daemon", "min_poll_interval", poll_interval)
    if minimum > poll_interval:
        raise reader.error(
            "daemon.min_poll_interval",
            f"{minimum:g} s is longer than poll_interval ({poll_interval:g} s): it is the"
            " shortest interval polling speeds up to after a listing that found new sessions",
            f"set it to at most {poll_interval:g}, or equal to poll_interval to keep a fixed"
            " interval",
        )
    return minimum


def daemon_settings(reader: Reader, table: Mapping[str, Any]) -> DaemonSettings:
    poll_interval = reader.number(table, "daemon", "poll_interval", 60.0)
    return DaemonSettings(
        poll_interval=poll_interval,
        min_poll_interval=_min_poll_interval(reader, table, poll_interval),
        server_recovery=reader.number(table, "daemon", "server_recovery", 40.0),
        listings_per_server=reader.count(table, "daemon", "listings_per_server", 2),
        pipeline_check_interval=reader.number(table, "daemon", "pipeline_check_interval", 10.0),
        max_concurrent_jobs=reader.count(table, "daemon", "max_concurrent_jobs", 4),
        job_timeout=reader.number(table, "daemon", "job_timeout", 3600.0),
        script_timeout=(
            reader.number(table, "daemon", "script_timeout", 1.0)
            if "script_timeout" in table
            else None
        ),
        max_attempts=reader.count(table, "daemon", "max_attempts", 3),
        retry_backoff=reader.number(table, "daemon", "retry_backoff", 30.0),
        shutdown_timeout=reader.number(table, "daemon", "shutdown_timeout", 30.0),
        socket=reader.path(table, "daemon", "socket"),
        state_dir=reader.path(table, "daemon", "state_dir"),
        control_group=reader.text(table, "daemon", "control_group"),
        metrics_address=_metrics_address(reader, table),
    )
