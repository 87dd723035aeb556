"""Run the daemon in the foreground, the way systemd (or a terminal) starts it."""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Sequence

from ._backend import BackendFactory
from ._service import Daemon
from ._systemd import Notifier, configure_logging

__all__ = ["serve"]

logger = logging.getLogger(__name__)


def serve(
    config_paths: Sequence[str | os.PathLike[str]],
    *,
    backend_factory: BackendFactory,
    log_level: str | None = None,
) -> int:
    """Serve the datasets of ``config_paths`` until SIGTERM/SIGINT; return the exit code.

    ``log_level`` (e.g. from ``--log-level``) wins over the first config's ``[log] level``.
    Raises :class:`~sinagot.errors.ConfigError` / :class:`~sinagot.errors.DaemonError`
    when the daemon cannot start.
    """
    configure_logging(log_level or "INFO")
    daemon = Daemon(
        config_paths,
        backend_factory,
        notifier=Notifier(),
        log_level_forced=log_level is not None,
    )
    asyncio.run(daemon.run())
    return 0
