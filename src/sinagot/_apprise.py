"""Apprise, the notification library, as Sinagot uses it: URLs checked, sends quiet.

Apprise logs each problem itself, on the ``apprise`` logger, every time it meets
it. Sinagot says each problem once in its own words (a bad URL in the config, a
notification that failed), so what Apprise logs while :func:`capture` is active
is collected for that message instead of reaching the log. Nothing else Apprise
logs is touched: the filter only takes records emitted under a capture
(Apprise copies the context into the threads it sends from).
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import threading
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import apprise

__all__ = ["Captured", "capture", "load", "url_problem"]

_APPRISE_LOGGER = "apprise"

_captured: contextvars.ContextVar[list[str] | None] = contextvars.ContextVar(
    "sinagot_apprise_captured", default=None
)
_install_lock = threading.Lock()
_installed = False


class Captured:
    """The warnings and errors Apprise logged under one :func:`capture`."""

    def __init__(self, lines: list[str]) -> None:
        self.lines = lines

    def reason(self, fallback: str) -> str:
        """The first problem Apprise logged (the cause; later lines say what it led to),
        on one line, or ``fallback``."""
        return " ".join(self.lines[0].split()) if self.lines else fallback


def _keep_uncaptured(record: logging.LogRecord) -> bool:
    lines = _captured.get()
    if lines is None:
        return True
    if record.levelno >= logging.WARNING:
        lines.append(record.getMessage())
    return False


def _install() -> None:
    global _installed
    with _install_lock:
        if not _installed:
            logging.getLogger(_APPRISE_LOGGER).addFilter(_keep_uncaptured)
            _installed = True


@contextlib.contextmanager
def capture() -> Iterator[Captured]:
    """Collect what Apprise logs in this context (and the threads it sends from) meanwhile."""
    _install()
    lines: list[str] = []
    token = _captured.set(lines)
    try:
        yield Captured(lines)
    finally:
        _captured.reset(token)


def _asset() -> apprise.AppriseAsset:
    import apprise

    # Memory only: Apprise writes nothing to disk (the daemon's unit lets it write
    # nowhere but its own directories).
    return apprise.AppriseAsset(app_id="Sinagot", app_desc="Sinagot", storage_mode="memory")


def url_problem(url: str) -> str | None:
    """Why Apprise cannot notify ``url`` (its own words), or None when it can."""
    import apprise

    with capture() as captured:
        loaded = apprise.Apprise.instantiate(url, asset=_asset(), suppress_exceptions=True)
    if loaded is None:
        return captured.reason("Apprise does not know this kind of URL")
    return None


def load(urls: Sequence[str]) -> apprise.Apprise:
    """An Apprise object that notifies every one of ``urls`` (checked with :func:`url_problem`)."""
    import apprise

    with capture():
        notifier = apprise.Apprise(asset=_asset())
        for url in urls:
            notifier.add(url)
    return notifier
