"""A daemon job asks the server nothing whose answer it already knows.

A new session with one input entry (one scan resource, one file) and one output:
the session's listing shows that the derivative has no resource and no provenance
yet, so nothing is asked about them, and the output's one PUT creates its
resource. Counted through the emulator's request counters, under both of its
profiles (the production one answers slowly, which must not add requests).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from daemon_xnat_support import PROJECT, XnatDaemon, add_session, committed, write_project
from sinagot.testing import EmulatorServer

LABEL = "REC-200101-A"
SESSION = "/data/projects/{project}/experiments/{experiment}"
# What the daemon asks before any job: a login (a session, then an alias token) and
# the project's listing.
START = [
    ("GET /data/JSESSION", 1),
    ("GET /data/services/tokens/issue", 1),
    ("GET /data/projects/{project}/experiments", 1),
]
# One job, for a new session with one input entry and one output.
JOB = [
    # populate_row: the scans, the session's resources, every scan file in one listing.
    (f"GET {SESSION}/scans", 1),
    (f"GET {SESSION}/resources", 1),
    (f"GET {SESSION}/scans/ALL/files", 1),
    # The input file, into the cache.
    (f"GET {SESSION}/scans/{{scan}}/resources/{{resource}}/files/{{path}}", 1),
    # The output, then its provenance (the commit marker, into PROVENANCE).
    (f"PUT {SESSION}/resources/{{resource}}/files/{{path}}", 2),
    # The server's digest of the output, checked.
    (f"GET {SESSION}/resources/{{resource}}/files", 1),
    # The session's stamp after the uploads, and proof that its scan files did not
    # change since the fetch (settle).
    ("GET /data/projects/{project}/experiments", 1),
    (f"GET {SESSION}/scans/ALL/files", 1),
]
# Each further output: its PUT, its digest checked, its provenance.
PER_OUTPUT = [
    (f"PUT {SESSION}/resources/{{resource}}/files/{{path}}", 2),
    (f"GET {SESSION}/resources/{{resource}}/files", 1),
]

Requests = list[tuple[str, int]]


def _table(*parts: Requests) -> dict[str, int]:
    """The requests of ``parts`` by route, as the emulator counts them."""
    total: dict[str, int] = {}
    for part in parts:
        for route, count in part:
            total[route] = total.get(route, 0) + count
    return total


def _count(part: Requests) -> int:
    return sum(count for _, count in part)


def _job_requests(
    tmp_path: Path,
    factory: Callable[..., EmulatorServer],
    daemons: list[XnatDaemon],
    profile: str,
    scripts: str,
) -> tuple[dict[str, int], int]:
    """Every request of a daemon started on a project with one new session, until its
    one job is done, and the number of outputs committed; ``scripts``: those of the EEG
    modality (each writes one output)."""
    lab = factory(profile=profile)
    lab.create_project(PROJECT)
    add_session(lab, LABEL)
    config, _ = write_project(tmp_path, lab.url, {"poll_interval": 600.0})
    text = config.read_text()
    assert 'scripts = ["filter", "stats"]' in text
    config.write_text(text.replace('scripts = ["filter", "stats"]', f"scripts = {scripts}"))
    lab.reset_counters()
    daemon = XnatDaemon(tmp_path, config)
    daemons.append(daemon)
    daemon.start()
    (job,) = daemon.wait_settled({LABEL})
    assert job["attempts"] == 1
    counts = lab.request_counts()
    assert daemon.stop() == 0
    return counts, len(committed(lab, LABEL))


@pytest.mark.parametrize("profile", ["fast", "production"])
def test_a_new_session_with_one_output_takes_nine_requests(
    tmp_path: Path,
    xnat_server_factory: Callable[..., EmulatorServer],
    daemons: list[XnatDaemon],
    profile: str,
) -> None:
    counts, outputs = _job_requests(tmp_path, xnat_server_factory, daemons, profile, '["filter"]')
    assert outputs == 1
    assert counts == _table(START, JOB), counts
    assert sum(counts.values()) - _count(START) == _count(JOB) <= 9


@pytest.mark.parametrize("profile", ["fast", "production"])
def test_each_further_output_takes_three_requests(
    tmp_path: Path,
    xnat_server_factory: Callable[..., EmulatorServer],
    daemons: list[XnatDaemon],
    profile: str,
) -> None:
    counts, outputs = _job_requests(
        tmp_path, xnat_server_factory, daemons, profile, '["filter", "stats"]'
    )
    assert outputs == 2
    assert counts == _table(START, JOB, PER_OUTPUT), counts
    assert _count(PER_OUTPUT) == 3
