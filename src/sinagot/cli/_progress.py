"""What a long command shows while it works: bars on a terminal, log lines elsewhere.

On a terminal, tqdm draws one bar per phase on stderr (records fetched, with the
bytes downloaded so far; steps run; sessions processed), and log records go
through tqdm so that a line never cuts a bar in two. Anywhere else (a pipe, a
file, the journal) a bar would be noise: the progress is logged, a line every few
seconds at most, once the work has lasted more than a moment. ``--quiet`` shows
neither.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import threading
import time
from collections.abc import Callable, Iterator
from enum import StrEnum
from typing import Never, TextIO

from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from .._counters import COUNTERS
from ._cache import human_bytes

__all__ = ["Display", "ProgressDisplay"]

logger = logging.getLogger("sinagot.progress")

Counter = Callable[[int, int], None]

# Plain lines: none for work shorter than this, then at most one per interval.
_LINE_DELAY = 1.0
_LINE_INTERVAL = 2.0
# How often the bytes downloaded are refreshed on the fetch bar while a download runs.
_TICK = 0.5


class Display(StrEnum):
    BARS = "bars"
    LINES = "lines"
    OFF = "off"


def _downloaded() -> int:
    return sum(COUNTERS.snapshot().downloaded.values())


class _Lines:
    """``what: done/total units (pct%)`` log lines, throttled (see the module docstring)."""

    def __init__(self, what: str, unit: str) -> None:
        self._what = what
        self._unit = unit
        self._start = time.monotonic()
        self._last = 0.0

    def __call__(self, done: int, total: int) -> None:
        now = time.monotonic()
        if now - self._start < _LINE_DELAY or (now - self._last < _LINE_INTERVAL and done < total):
            return
        self._last = now
        percent = 100 * done // max(total, 1)
        logger.info("%s: %d/%d %ss (%d%%)", self._what, done, total, self._unit, percent)


class _Bar:
    """One tqdm bar, opened at its first count; ``downloads`` shows the bytes fetched."""

    def __init__(self, display: ProgressDisplay, what: str, unit: str, downloads: bool) -> None:
        self._display = display
        self._what = what
        self._unit = unit
        self._downloads = downloads
        self._bar: tqdm[Never] | None = None
        self._since = 0
        self._ticker: threading.Thread | None = None
        self._stop = threading.Event()

    def __call__(self, done: int, total: int) -> None:
        if self._bar is None:
            self._bar = self._display.open_bar(self._what, self._unit, total)
            if self._downloads:
                self._since = _downloaded()
                self._ticker = threading.Thread(
                    target=self._tick, name="sinagot-progress", daemon=True
                )
                self._ticker.start()
        bar = self._bar
        bar.total = total
        bar.update(done - bar.n)
        if self._downloads:
            self._show_downloaded()
        if done >= total:
            self.close()

    def _show_downloaded(self) -> None:
        if self._bar is not None:
            self._bar.set_postfix_str(f"{human_bytes(_downloaded() - self._since)} downloaded")

    def _tick(self) -> None:
        while not self._stop.wait(_TICK):
            self._show_downloaded()

    def close(self) -> None:
        self._stop.set()
        if self._ticker is not None:
            self._ticker.join()
            self._ticker = None
        if self._bar is not None:
            self._bar.close()


class ProgressDisplay:
    """The progress of one command; use it as a context manager around the work.

    ``counter(what, unit)`` gives a ``(done, total)`` callback for one phase.
    """

    def __init__(self, *, quiet: bool = False, stream: TextIO | None = None) -> None:
        self._stream = stream or sys.stderr
        self.mode = (
            Display.OFF if quiet else Display.BARS if self._stream.isatty() else Display.LINES
        )
        if self.mode is Display.LINES:
            # Shown whatever the log level the command chose: --quiet is what hides them.
            logger.setLevel(logging.INFO)
        self._bars: list[_Bar] = []

    def __enter__(self) -> ProgressDisplay:
        return self

    def __exit__(self, *exc: object) -> None:
        for bar in self._bars:
            bar.close()

    @contextlib.contextmanager
    def logging_above(self) -> Iterator[None]:
        """Log records print above the bars meanwhile (plain, when there are no bars)."""
        if self.mode is not Display.BARS:
            yield
            return
        with logging_redirect_tqdm(loggers=[logging.getLogger()]):
            yield

    def open_bar(self, what: str, unit: str, total: int) -> tqdm[Never]:
        return tqdm(
            total=total,
            desc=what,
            unit=unit,
            file=self._stream,
            dynamic_ncols=True,
            leave=True,
            mininterval=0.2,
        )

    def counter(self, what: str, unit: str, *, downloads: bool = False) -> Counter:
        """The callback counting one phase: ``what`` names it, ``unit`` what it counts."""
        if self.mode is Display.OFF:
            return _ignore
        if self.mode is Display.LINES:
            return _Lines(what, unit)
        bar = _Bar(self, what, unit, downloads)
        self._bars.append(bar)
        return bar


def _ignore(done: int, total: int) -> None:
    del done, total
