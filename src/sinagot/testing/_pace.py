"""Applies a :class:`Profile` to requests: latency, time to first byte, bandwidth.

Delays are drawn from one ``random.Random(seed)``, apart from the fault
injector's, so the same seed and the same request order give the same delays
and adding latency never changes which faults fire. Bandwidth is a virtual
clock per link: each chunk is reserved on its transfer's link and on the
server's link for its direction, and waits until both would have carried it.
Everything here runs on the server's event loop, so nothing is locked.
"""

from __future__ import annotations

import asyncio
import random
import time

from aiohttp import web

from ._profile import Profile, Span

__all__ = ["Pace"]


class _Link:
    """A link of ``rate`` bytes/s: when a new chunk will have crossed it."""

    def __init__(self, rate: float | None) -> None:
        self._rate = rate
        self._free_at = 0.0

    def reserve(self, size: int, now: float) -> float:
        """Seconds from ``now`` until ``size`` more bytes have crossed (0 if unlimited)."""
        if self._rate is None:
            return 0.0
        self._free_at = max(now, self._free_at) + size / self._rate
        return self._free_at - now


_LINKS: web.RequestKey[tuple[_Link, _Link]] = web.RequestKey("sinagot_links", tuple)


class Pace:
    """The profile in force and what it needs between requests (draws, shared links)."""

    def __init__(self, profile: Profile, seed: int = 0) -> None:
        self._random = random.Random(seed)
        self.profile = profile

    @property
    def profile(self) -> Profile:
        return self._profile

    @profile.setter
    def profile(self, profile: Profile) -> None:
        self._profile = profile
        self._server_out = _Link(profile.server_bandwidth)
        self._server_in = _Link(profile.server_bandwidth)

    def _draw(self, span: Span) -> float:
        low, high = span
        return low if high == low else self._random.uniform(low, high)

    async def request_started(self) -> None:
        """Wait as long as the server takes to handle a request."""
        delay = self._draw(self._profile.request_latency)
        if delay > 0:
            await asyncio.sleep(delay)

    async def body_starting(self, *, archive_bytes: int | None) -> None:
        """Wait before the first byte of a file (``archive_bytes`` None) or of a zip."""
        profile = self._profile
        if archive_bytes is None:
            delay = self._draw(profile.first_byte)
        else:
            delay = self._draw(profile.archive_start)
            if profile.archive_rate is not None:
                delay += archive_bytes / profile.archive_rate
        if delay > 0:
            await asyncio.sleep(delay)

    async def sent(self, request: web.Request, size: int) -> None:
        """Wait until ``size`` more bytes of the response could have left the server."""
        await self._cross(request, size, outgoing=True)

    async def received(self, request: web.Request, size: int) -> None:
        """Wait until ``size`` more bytes of the request body could have arrived."""
        await self._cross(request, size, outgoing=False)

    async def _cross(self, request: web.Request, size: int, *, outgoing: bool) -> None:
        profile = self._profile
        if not profile.limits_bandwidth:
            return
        links = request.get(_LINKS)
        if links is None:
            rate = profile.connection_bandwidth
            links = request[_LINKS] = (_Link(rate), _Link(rate))
        now = time.monotonic()
        own = links[0] if outgoing else links[1]
        shared = self._server_out if outgoing else self._server_in
        delay = max(own.reserve(size, now), shared.reserve(size, now))
        if delay > 0:
            await asyncio.sleep(delay)
