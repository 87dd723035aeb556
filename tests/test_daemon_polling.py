"""The poller's memory of a project: new, changed and deleted sessions."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path

from sinagot.config import load_settings
from sinagot.daemon import JobState, ProcessResult, SessionInfo
from sinagot.daemon._datasets import ServedDataset
from sinagot.daemon._journal import Journal
from sinagot.daemon._polling import Poller

CONFIG = """\
[path]
dataset = "data"
scripts = "scripts"
[records]
id_pattern = "REC-\\\\d{6}-A"
[tasks.RS]
modalities = ["EEG"]
[modalities.EEG]
scripts = ["copy"]
"""


class ListedBackend:
    """A server whose listing is whatever the test sets."""

    name = "lab"

    def __init__(self) -> None:
        self.listing: list[SessionInfo] = []

    async def list_sessions(self) -> Sequence[SessionInfo]:
        return list(self.listing)

    async def process_session(self, label: str, enter_phase: object) -> ProcessResult:
        raise AssertionError("the poller runs no job")

    async def aclose(self) -> None:
        return None


def _listing(*labels: str, stamp: str = "1") -> list[SessionInfo]:
    return [SessionInfo(label, stamp) for label in labels]


async def test_sessions_gone_from_the_server_are_forgotten_and_not_rerun_when_back(
    tmp_path: Path,
) -> None:
    (tmp_path / "data").mkdir()
    (tmp_path / "scripts" / "EEG").mkdir(parents=True)
    (tmp_path / "scripts" / "EEG" / "copy.py").write_text("")
    config = tmp_path / "lab.toml"
    config.write_text(CONFIG)
    settings = load_settings(config)
    backend = ListedBackend()
    dataset = ServedDataset(settings, backend)  # type: ignore[arg-type]
    journal = await Journal.open(tmp_path / "journal.sqlite3")
    wake = asyncio.Event()
    poller = Poller(
        dataset, journal, settings=lambda: settings.daemon, wake=wake, listing_failed=lambda: None
    )
    try:
        backend.listing = _listing("REC-000001-A", "REC-000002-A", "phantom-1")
        await poller._poll()
        assert dataset.known == {"REC-000001-A": "1", "REC-000002-A": "1"}
        assert dataset.ids.ignored == {"phantom-1"}
        first = {job.session: job for job in await journal.jobs()}
        assert set(first) == {"REC-000001-A", "REC-000002-A"}

        # Archived on the server: forgotten by the poller (the status counts what is
        # listed), kept by the journal.
        backend.listing = _listing("REC-000002-A")
        await poller._poll()
        assert dataset.known == {"REC-000002-A": "1"}
        assert dataset.ids.ignored == set()
        assert dataset.status({}).sessions == 1
        assert len(await journal.jobs()) == 2

        # Back unchanged: the journal knows it, no job is queued again.
        wake.clear()
        backend.listing = _listing("REC-000001-A", "REC-000002-A")
        await poller._poll()
        assert dataset.known == {"REC-000001-A": "1", "REC-000002-A": "1"}
        again = {job.session: job for job in await journal.jobs()}
        assert again["REC-000001-A"].updated == first["REC-000001-A"].updated
        assert again["REC-000001-A"].state is JobState.DISCOVERED
        assert not wake.is_set()

        # Back changed: the journal's job takes the change.
        backend.listing = _listing("REC-000001-A", stamp="2")
        await poller._poll()
        assert dataset.known == {"REC-000001-A": "2"}
        changed = {job.session: job for job in await journal.jobs()}
        assert changed["REC-000001-A"].last_modified == "2"
    finally:
        await journal.aclose()
