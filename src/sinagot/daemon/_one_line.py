"""An exception as one line, the way the daemon logs it and records it on a job."""

from __future__ import annotations

from ..errors import SinagotError

__all__ = ["one_line"]


def one_line(exc: BaseException) -> str:
    """The message on one line; other than our own errors, after the exception's type."""
    text = " ".join(str(exc).split())
    if isinstance(exc, SinagotError):
        return text or type(exc).__name__
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
