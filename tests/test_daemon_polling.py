"""Many datasets on a few servers: polls spread over the interval, listings bounded per server,
an unchanged listing not compared again. The service loop in-process, with a real journal."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import itertools
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from pathlib import Path

import pytest

from daemon_support import daemon_table, wait_for_async, write_config
from sinagot.config import Settings, load_settings
from sinagot.daemon import (
    Daemon,
    Fingerprints,
    JobState,
    ListedSession,
    Notifier,
    ProcessResult,
    SessionInfo,
)
from sinagot.daemon.internals import Journal, Poller, ServedDataset, ServerGates, poll_phases

# Dataset name -> the server its config names.
SERVERS = {
    "a1": "https://a.example/xnat",
    "a2": "https://a.example/xnat/",  # the same server, written with a trailing slash
    "a3": "https://a.example/xnat",
    "b1": "https://b.example",
    "b2": "https://b.example",
    "b3": "https://b.example",
}


class InFlight:
    """Listings running now and the most seen at once, per server."""

    def __init__(self) -> None:
        self.now: dict[str, int] = {}
        self.most: dict[str, int] = {}


class SlowListing:
    """A backend whose listing takes a while; the same listing object while nothing changes."""

    def __init__(self, name: str, in_flight: InFlight) -> None:
        self.name = name
        self.server = SERVERS[name].rstrip("/")
        self._in_flight = in_flight
        self.listing: Sequence[ListedSession] = (SessionInfo("REC-1", "t1"),)
        self.listings = 0

    async def list_sessions(self) -> Sequence[ListedSession]:
        flight = self._in_flight
        flight.now[self.server] = flight.now.get(self.server, 0) + 1
        flight.most[self.server] = max(flight.most.get(self.server, 0), flight.now[self.server])
        try:
            await asyncio.sleep(0.2)
        finally:
            flight.now[self.server] -= 1
        self.listings += 1
        return self.listing

    async def still_listed(self, label: str) -> bool:
        return any(session.label == label for session in self.listing)

    async def process_session(
        self, label: str, enter_phase: Callable[[JobState], Awaitable[None]]
    ) -> ProcessResult:
        return ProcessResult()

    async def pipeline(self, settings: Settings | None = None) -> Fingerprints:
        return Fingerprints()

    async def aclose(self) -> None:
        return None


def _settings(path: Path) -> Settings:
    """The config as the daemon reads it, naming its dataset's server."""
    settings = load_settings(path)
    server = SERVERS[settings.config_path.stem]
    return dataclasses.replace(settings, store=dataclasses.replace(settings.store, server=server))


class Lab:
    def __init__(self, daemon: Daemon, backends: dict[str, SlowListing], in_flight: InFlight):
        self.daemon = daemon
        self.backends = backends
        self.in_flight = in_flight

    async def all_polled(self, times: int) -> None:
        await wait_for_async(
            lambda: (
                len(self.backends) == len(SERVERS)
                and all(b.listings >= times for b in self.backends.values())
            ),
            f"every dataset listed {times} time(s)",
        )


@contextlib.asynccontextmanager
async def _lab(tmp_path: Path, listings_per_server: int) -> AsyncIterator[Lab]:
    """The daemon following the datasets of SERVERS; they poll at start, then when asked."""
    in_flight = InFlight()
    backends: dict[str, SlowListing] = {}

    def factory(settings: Settings) -> SlowListing:
        name = settings.config_path.stem
        backend = backends[name] = SlowListing(name, in_flight)
        return backend

    table = daemon_table(tmp_path, poll_interval=3600.0, listings_per_server=listings_per_server)
    configs = [write_config(tmp_path, name, table) for name in SERVERS]
    daemon = Daemon(configs, factory, notifier=Notifier({}), settings_loader=_settings)
    task = asyncio.create_task(daemon.run())
    try:
        yield Lab(daemon, backends, in_flight)
    finally:
        daemon.request_stop()
        async with asyncio.timeout(20):
            await task


@pytest.mark.parametrize(("limit", "most"), [(2, 2), (10, 3)])
async def test_listings_in_flight_are_bounded_per_server(
    tmp_path: Path, limit: int, most: int
) -> None:
    async with _lab(tmp_path, limit) as lab:
        # The first polls, and then every dataset asked to poll at once; each server has
        # three datasets: under a looser bound all three list at once.
        await lab.all_polled(1)
        lab.daemon.poll_now()
        await lab.all_polled(2)
        assert lab.in_flight.most == {"https://a.example/xnat": most, "https://b.example": most}


async def test_an_unchanged_listing_is_compared_with_the_journal_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    compared: list[str] = []
    original = Journal.compare_listing

    async def counting(
        self: Journal, dataset: str, listing: Sequence[ListedSession]
    ) -> list[tuple[str, str, bool]]:
        compared.append(dataset)
        return await original(self, dataset, listing)

    monkeypatch.setattr(Journal, "compare_listing", counting)
    async with _lab(tmp_path, 2) as lab:
        await lab.all_polled(1)
        for times in (2, 3):
            lab.daemon.poll_now()
            await lab.all_polled(times)
        assert sorted(compared) == sorted(SERVERS)

        # A new listing object: compared again, and its new session gets a job.
        backend = lab.backends["b2"]
        backend.listing = (*backend.listing, SessionInfo("REC-2", "t1"))
        lab.daemon.poll_now(["b2"])
        await wait_for_async(lambda: compared.count("b2") == 2, "b2's new listing compared")
        jobs = await lab.daemon.journal.known_sessions("b2")
        assert jobs == {"REC-1": "t1", "REC-2": "t1"}


async def test_each_server_spread_over_the_interval_and_the_servers_interleaved(
    tmp_path: Path,
) -> None:
    table = daemon_table(tmp_path)
    datasets = [
        ServedDataset(_settings(write_config(tmp_path, name, table)), SlowListing(name, InFlight()))
        for name in SERVERS
    ]
    phases = poll_phases(datasets)
    assert sorted(phases.values()) == [n / 6 for n in range(6)]
    for server in ("a", "b"):
        mine = sorted(phase for name, phase in phases.items() if name.startswith(server))
        assert [b - a for a, b in itertools.pairwise(mine)] == pytest.approx([1 / 3, 1 / 3])


async def test_a_poll_keeps_its_place_in_the_interval(tmp_path: Path) -> None:
    settings = _settings(write_config(tmp_path, "a1", daemon_table(tmp_path, poll_interval=10.0)))
    dataset = ServedDataset(settings, SlowListing("a1", InFlight()))
    journal = await Journal.open(tmp_path / "journal.sqlite3")
    try:
        poller = Poller(
            dataset,
            journal,
            settings=lambda: settings.daemon,
            wake=asyncio.Event(),
            health_changed=lambda: None,
            phase=0.25,
            gates=ServerGates(),
        )
        # The first poll, ended at t = 100.4: the next at the dataset's first turn at
        # least half an interval later, 112.5; from there on one interval apart,
        # however long a listing took.
        assert poller.delay(100.4) == pytest.approx(12.1)
        assert poller.delay(112.6) == pytest.approx(9.9)
        assert poller.delay(126.0) == pytest.approx(6.5)
        # One that waited for its server and ended late skips a turn.
        assert poller.delay(139.0) == pytest.approx(13.5)
        # A listing failing: back off instead, whatever the turn.
        dataset.failures = 3
        assert poller.delay(152.5) == pytest.approx(40.0)
    finally:
        await journal.aclose()


async def test_sessions_gone_from_the_server_are_forgotten_and_not_rerun_when_back(
    tmp_path: Path,
) -> None:
    settings = _settings(write_config(tmp_path, "a1", daemon_table(tmp_path)))
    backend = SlowListing("a1", InFlight())
    dataset = ServedDataset(settings, backend)
    journal = await Journal.open(tmp_path / "journal.sqlite3")
    wake = asyncio.Event()
    poller = Poller(
        dataset,
        journal,
        settings=lambda: settings.daemon,
        wake=wake,
        health_changed=lambda: None,
        phase=0.0,
        gates=ServerGates(),
    )

    def listing(*labels: str, stamp: str = "1") -> tuple[SessionInfo, ...]:
        return tuple(SessionInfo(label, stamp) for label in labels)

    try:
        backend.listing = listing("REC-1", "REC-2", "phantom-1")
        await poller._poll()
        assert dataset.ids.ignored == {"phantom-1"}
        first = {job.session: job for job in await journal.jobs()}
        assert set(first) == {"REC-1", "REC-2"}

        # Archived on the server: the ignored label is forgotten, the journal keeps its job.
        backend.listing = listing("REC-2")
        await poller._poll()
        assert dataset.ids.ignored == set()
        assert dataset.status({}).sessions == 1
        assert len(await journal.jobs()) == 2

        # Back unchanged: the journal knows it, nothing is queued again.
        wake.clear()
        backend.listing = listing("REC-1", "REC-2")
        await poller._poll()
        again = {job.session: job for job in await journal.jobs()}
        assert again["REC-1"].updated == first["REC-1"].updated
        assert not wake.is_set()

        # Back changed: the journal's job takes the change.
        backend.listing = listing("REC-1", stamp="2")
        await poller._poll()
        changed = {job.session: job for job in await journal.jobs()}
        assert changed["REC-1"].last_modified == "2"
        assert changed["REC-1"].state is JobState.DISCOVERED
    finally:
        await journal.aclose()
