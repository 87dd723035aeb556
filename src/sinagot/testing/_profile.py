"""How fast the emulator answers: the ``fast`` profile of the test suite, and ``production``.

The emulator itself answers in microseconds. A production XNAT does not: each
REST call goes through Tomcat, Hibernate and PostgreSQL, a file download first
resolves the resource's catalog on the archive file system, a zip of a session
is built before its first byte, and bytes go over a LAN shared with every other
client. A client that works against ``fast`` can still time out, flood the
server or assume instant answers; ``production`` shows it. The figures, and why
they were chosen, are in the README's Emulator section.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

__all__ = ["PROFILES", "Profile", "as_profile", "parse_profile_spec"]

Span = tuple[float, float]


@dataclass(frozen=True, slots=True)
class Profile:
    """Delays (seconds, drawn uniformly from ``(low, high)``) and bandwidths (bytes/s).

    ``request_latency`` delays every XNAT request before it is handled;
    ``first_byte`` delays the body of a file download further, and ``archive_start``
    plus ``archive bytes / archive_rate`` that of a zip (``format=zip``).
    ``connection_bandwidth`` paces each transfer (HTTP/1.1 carries one at a time per
    connection), ``server_bandwidth`` all of them together, each way. None: no limit.
    """

    name: str = "fast"
    request_latency: Span = (0.0, 0.0)
    first_byte: Span = (0.0, 0.0)
    archive_start: Span = (0.0, 0.0)
    archive_rate: float | None = None
    connection_bandwidth: float | None = None
    server_bandwidth: float | None = None

    def __post_init__(self) -> None:
        for name in ("request_latency", "first_byte", "archive_start"):
            low, high = getattr(self, name)
            if not 0.0 <= low <= high or not math.isfinite(high):
                raise ValueError(f"profile {name} ({low}, {high}): use 0 <= low <= high seconds")
        for name in ("archive_rate", "connection_bandwidth", "server_bandwidth"):
            rate = getattr(self, name)
            if rate is not None and not rate > 0:
                raise ValueError(f"profile {name} {rate}: use a positive bytes/s or None")

    @property
    def limits_bandwidth(self) -> bool:
        return self.connection_bandwidth is not None or self.server_bandwidth is not None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Profile:
        """A profile from ``{"base": NAME, field: value, ...}``: the named one, overridden."""
        data = dict(data)
        base = profile_named(str(data.pop("base", "fast")))
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(
                f"unknown profile keys {sorted(unknown)}: use base and {sorted(known)}"
            )
        for name, value in data.items():
            if isinstance(value, list):
                data[name] = tuple(value)
        return replace(base, **data)


PROFILES: dict[str, Profile] = {
    "fast": Profile(),
    "production": Profile(
        name="production",
        request_latency=(0.02, 0.12),
        first_byte=(0.05, 0.4),
        archive_start=(0.5, 2.0),
        archive_rate=200e6,
        connection_bandwidth=50e6,
        server_bandwidth=117e6,
    ),
}


def profile_named(name: str) -> Profile:
    try:
        return PROFILES[name]
    except KeyError:
        raise ValueError(f"unknown profile {name!r}: use one of {sorted(PROFILES)}") from None


def as_profile(profile: str | Profile | dict[str, Any]) -> Profile:
    """``profile`` itself, the one of that name, or one from JSON (:meth:`Profile.from_json`)."""
    if isinstance(profile, Profile):
        return profile
    if isinstance(profile, str):
        return profile_named(profile)
    return Profile.from_json(profile)


def parse_profile_spec(spec: str) -> Profile:
    """A profile from its name, a JSON object (see :meth:`Profile.from_json`) or ``@file.json``."""
    text = Path(spec[1:]).read_text() if spec.startswith("@") else spec
    # A JSON text that starts with a brace is an object.
    return as_profile(json.loads(text) if text.lstrip().startswith("{") else text.strip())
