"""The daemon's configs: reading them, and the daemon-wide settings in force.

Daemon-wide settings come from the first config's ``[daemon]`` and ``[notify]``
tables, the log level from its ``[log]`` table unless the command line forced one.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import DaemonError

if TYPE_CHECKING:
    from ..config import DaemonSettings, NotifySettings, Settings

__all__ = ["DaemonConfigs", "SettingsLoader", "without_password"]

logger = logging.getLogger(__name__)

SettingsLoader = Callable[[Path], "Settings"]

# What the running daemon has built on (its socket, its journal, its workers, its metrics port).
_RESTART_ONLY = ("socket", "state_dir", "max_concurrent_jobs", "metrics_address")


def _load_settings(path: Path) -> Settings:
    from ..config import load_settings

    settings = load_settings(path)
    for note in settings.notes:
        logger.info("note: %s", note)
    return settings


def without_password(settings: Settings) -> Settings:
    """``settings`` less the config's XNAT password: once the store has traded it for an
    alias token at login, the daemon keeps no copy (a reload reads the config again)."""
    if settings.store.password is None:
        return settings
    return dataclasses.replace(settings, store=dataclasses.replace(settings.store, password=None))


class DaemonConfigs:
    """Reads a daemon's configs and keeps the daemon settings taken from them.

    ``loader`` reads one config (default: :func:`sinagot.config.load_settings`).
    """

    def __init__(
        self, loader: SettingsLoader | None = None, *, log_level_forced: bool = False
    ) -> None:
        self._loader = loader or _load_settings
        self._log_level_forced = log_level_forced
        self._settings: DaemonSettings | None = None
        self._notify: NotifySettings | None = None

    @property
    def settings(self) -> DaemonSettings:
        if self._settings is None:
            raise DaemonError("the daemon has no settings yet: call run() first")
        return self._settings

    @property
    def notify(self) -> NotifySettings:
        if self._notify is None:
            raise DaemonError("the daemon has no settings yet: call run() first")
        return self._notify

    async def read(self, paths: Sequence[Path]) -> list[Settings]:
        """Every config, validated (in a thread: loading reads files and scripts)."""
        return await asyncio.to_thread(lambda: [self._loader(path) for path in paths])

    def adopt(self, all_settings: Sequence[Settings]) -> None:
        """Take the daemon settings and the log level of the first config.

        Taken again after a reload, the settings only a restart can change keep their
        values, with a warning for each that the configs changed.
        """
        first = all_settings[0]
        self._notify = first.notify
        if self._settings is None:
            self._settings = first.daemon
        else:
            old, new = self._settings, first.daemon
            for attr in _RESTART_ONLY:
                if getattr(old, attr) != getattr(new, attr):
                    logger.warning("[daemon] %s changed: it takes effect at the next restart", attr)
            self._settings = dataclasses.replace(
                new, **{attr: getattr(old, attr) for attr in _RESTART_ONLY}
            )
        if not self._log_level_forced:
            logging.getLogger().setLevel(first.log_level)
