"""The ``sinagot`` command: the top layer, where the packages below meet.

This module only builds the argument parser and turns errors into one-line
messages. The daemon registers its own sub-commands (they drive its control
socket); the commands that bring several packages together (a dataset config
with the engine or the cache, the demo with the emulator) live beside this
module. Imports of heavy dependencies stay inside handlers, so ``sinagot
--help`` is fast.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence

from .._version import __version__
from ..connectors import take_environment_password
from ..errors import ConfigError, SinagotError
from ._cache import register as register_cache
from ._control import ControlClient
from ._daemon import register as register_daemon
from ._emulator import register as register_emulator
from ._format import format_job, format_jobs, format_plan, format_status
from ._init import register as register_init
from ._run import register as register_foundation

__all__ = [
    "ControlClient",
    "build_parser",
    "daemon_main",
    "format_job",
    "format_jobs",
    "format_plan",
    "format_status",
    "main",
]

Registrar = Callable[["argparse._SubParsersAction[argparse.ArgumentParser]"], None]

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


def _registrars() -> list[Registrar]:
    return [
        register_foundation,
        register_init,
        register_daemon,
        register_emulator,
        register_cache,
    ]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sinagot",
        description="Run processing scripts on a dataset, locally or in step with XNAT servers.",
    )
    parser.add_argument("--version", action="version", version=f"sinagot {__version__}")
    parser.add_argument(
        "--log-level",
        default=None,
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        help="log level on stderr (default: INFO, or the config's [log] level)",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    subparsers.required = True
    for register in _registrars():
        register(subparsers)
    return parser


def _configure_logging(level: str | None) -> None:
    logging.basicConfig(
        level=level or "INFO",
        format="%(asctime)s : %(message)s",
        stream=sys.stderr,
    )


def main(argv: Sequence[str] | None = None) -> int:
    # Before anything can start a child process (Dask workers, lab scripts): none inherits it.
    take_environment_password()
    parser = build_parser()
    args = parser.parse_args(argv)
    _configure_logging(args.log_level)
    handler: Callable[[argparse.Namespace], int] = args.handler
    try:
        return handler(args)
    except ConfigError as exc:
        sys.stderr.write(f"sinagot: error: {exc}\n")
        return EXIT_USAGE
    except SinagotError as exc:
        sys.stderr.write(f"sinagot: error: {exc}\n")
        return EXIT_FAILURE
    except KeyboardInterrupt:
        sys.stderr.write("sinagot: interrupted\n")
        return EXIT_INTERRUPTED


def daemon_main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``sinagotd``: the same as ``sinagot daemon``."""
    return main(["daemon", *(sys.argv[1:] if argv is None else argv)])
