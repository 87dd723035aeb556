"""The daemon's Prometheus metrics: scraped over TCP and the socket, parsed by prometheus_client."""

from __future__ import annotations

import asyncio
import json
import subprocess
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from daemon_support import write_config
from daemon_xnat_support import (
    PROJECT,
    SINAGOT,
    STEPS,
    XnatDaemon,
    add_session,
    write_project,
)
from sinagot.config import load_settings
from sinagot.errors import ConfigError
from sinagot.testing import EmulatorServer, FaultRule

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def _samples(text: str) -> Samples:
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def _value(samples: Samples, name: str, **labels: str) -> float:
    return samples[(name, frozenset(labels.items()))]


def _scrape(url: str) -> tuple[str, str]:
    with urllib.request.urlopen(url, timeout=10) as response:
        return response.headers["Content-Type"], response.read().decode()


@pytest.fixture
def daemon(tmp_path: Path, xnat_server: EmulatorServer) -> Iterator[XnatDaemon]:
    xnat_server.create_project(PROJECT)
    for label in ("REC-200101-A", "REC-200101-B"):
        add_session(xnat_server, label)
    xnat_server.create_session(PROJECT, "phantom-1")
    # One error answer (retried): a job asks nothing that is bound to be a 404.
    xnat_server.set_faults(
        [FaultRule("status", path=r"/scans$", method="GET", status=503, retry_after=0, times=1)]
    )
    config, _ = write_project(tmp_path, xnat_server.url, {"metrics_address": "0"})
    process = XnatDaemon(tmp_path, config).start()
    try:
        yield process
    finally:
        process.ensure_stopped()


def test_prometheus_scrapes_jobs_transfers_cache_and_durations_over_tcp(
    tmp_path: Path, xnat_server: EmulatorServer, daemon: XnatDaemon
) -> None:
    daemon.wait_settled({"REC-200101-A", "REC-200101-B"})
    status = subprocess.run(
        [SINAGOT, "status", "--json", "--socket", str(daemon.socket)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    url = json.loads(status.stdout)["metrics_url"]
    assert url.startswith("http://127.0.0.1:") and url.endswith("/metrics")

    content_type, text = _scrape(url)
    assert content_type.startswith("text/plain")
    samples = _samples(text)
    assert _value(samples, "sinagot_jobs", dataset="lab", state="done") == 2
    assert _value(samples, "sinagot_jobs", dataset="lab", state="failed") == 0
    assert _value(samples, "sinagot_polls_total", dataset="lab", outcome="ok") >= 1
    assert _value(samples, "sinagot_dataset_up", dataset="lab") == 1
    server = xnat_server.url
    assert _value(samples, "sinagot_http_requests_total", server=server) > 10
    assert _value(samples, "sinagot_http_request_errors_total", server=server) == 1
    assert _value(samples, "sinagot_downloaded_bytes_total", server=server) > 2 * 1000
    assert _value(samples, "sinagot_uploaded_bytes_total", server=server) > 0
    assert _value(samples, "sinagot_cache_lookups_total", result="miss") >= 2
    assert 0 <= _value(samples, "sinagot_cache_hit_ratio") <= 1
    cache = str(tmp_path / "cache")
    assert _value(samples, "sinagot_cache_size_bytes", cache=cache) > 0
    # Per session: its scan resource (downloaded), and each step's derivative and
    # provenance (entered by the uploads).
    assert _value(samples, "sinagot_cache_entries", cache=cache) == 2 * (1 + 2 * len(STEPS))
    assert _value(samples, "sinagot_job_duration_seconds_count", dataset="lab", outcome="done") == 2
    assert _value(samples, "sinagot_job_duration_seconds_sum", dataset="lab", outcome="done") > 0
    # Two scripts per session.
    assert _value(samples, "sinagot_step_duration_seconds_count", dataset="lab", status="ran") == 4
    assert _value(samples, "sinagot_info", version=_value_label(samples, "sinagot_info")) == 1

    # The socket endpoint serves the same families.
    socket_text = asyncio.run(daemon.client.metrics())
    assert {name for name, _ in _samples(socket_text)} == {name for name, _ in samples}

    # Only /metrics, read-only.
    with pytest.raises(urllib.error.HTTPError) as missing:
        _scrape(url.removesuffix("metrics") + "v1/status")
    assert missing.value.code == 404

    table = subprocess.run(
        [SINAGOT, "status", "--socket", str(daemon.socket)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert f"metrics: {url}" in table.stdout


def _value_label(samples: Samples, name: str) -> str:
    ((_, labels),) = [key for key in samples if key[0] == name]
    return dict(labels)["version"]


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("9464", ("127.0.0.1", 9464)),
        (":0", ("127.0.0.1", 0)),
        ("localhost:9100", ("localhost", 9100)),
        ("[::1]:9464", ("::1", 9464)),
    ],
)
def test_metrics_address_defaults_to_loopback(
    tmp_path: Path, given: str, expected: tuple[str, int]
) -> None:
    config = write_config(tmp_path, "lab", {"metrics_address": given})
    assert load_settings(config).daemon.metrics_address == expected


def test_a_non_loopback_metrics_address_needs_an_explicit_allow(tmp_path: Path) -> None:
    config = write_config(tmp_path, "lab", {"metrics_address": "0.0.0.0:9464"})
    with pytest.raises(ConfigError, match="metrics_allow_remote = true"):
        load_settings(config)
    allowed = write_config(
        tmp_path, "open", {"metrics_address": "0.0.0.0:9464", "metrics_allow_remote": True}
    )
    assert load_settings(allowed).daemon.metrics_address == ("0.0.0.0", 9464)
    with pytest.raises(ConfigError, match="not a port or HOST:PORT"):
        load_settings(write_config(tmp_path, "bad", {"metrics_address": "host:http"}))
