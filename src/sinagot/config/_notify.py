"""The [notify] table: where the daemon sends its notifications, and how often."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .._apprise import url_problem
from ._reader import Reader
from ._settings import NotifySettings

__all__ = ["notify_settings"]


def _urls(reader: Reader, table: Mapping[str, Any]) -> tuple[str, ...]:
    value = table.get("urls", [])
    if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value):
        raise reader.error(
            "notify.urls",
            "must be a list of notification URLs",
            'write urls = ["mailto://user:password@smtp.lab.org?to=ops@lab.org", ...]',
        )
    for index, url in enumerate(value):
        problem = url_problem(url.strip())
        if problem is not None:
            # The URL is not repeated: it may hold a password.
            raise reader.error(
                f"notify.urls[{index}]",
                f"Apprise cannot notify it ({problem})",
                "fix it as Apprise documents that kind of URL (mailto://, slack://, json://, ...)",
            )
    if len(set(value)) != len(value):
        raise reader.error("notify.urls", "lists a URL twice", "remove the duplicate")
    return tuple(url.strip() for url in value)


def notify_settings(reader: Reader, table: Mapping[str, Any]) -> NotifySettings:
    return NotifySettings(
        urls=_urls(reader, table),
        unhealthy_after=reader.number(table, "notify", "unhealthy_after", 600.0),
        group_window=reader.number(table, "notify", "group_window", 60.0),
        max_per_hour=reader.count(table, "notify", "max_per_hour", 20),
    )
