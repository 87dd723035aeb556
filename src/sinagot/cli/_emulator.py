"""``sinagot emulator``: run the XNAT-compatible server standalone."""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import ConfigError

if TYPE_CHECKING:
    from ..testing import EmulatorServer

__all__ = ["register"]


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "emulator",
        help="run an XNAT-compatible server for tests and the demo",
        description=(
            "Serve the XNAT REST subset used by xnatpy and pyxnat from a data directory. "
            "Prints 'listening on URL' once ready; stops cleanly on SIGINT/SIGTERM. "
            "Admin endpoints: GET/POST /_emulator/faults, GET /_emulator/counters, "
            "POST /_emulator/counters/reset, GET/POST /_emulator/profile, "
            "GET/POST /_emulator/checksums (no auth)."
        ),
    )
    parser.add_argument("--data", required=True, type=Path, help="data directory (created)")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default loopback)")
    parser.add_argument("--port", default=0, type=int, help="port (default 0: any free port)")
    parser.add_argument(
        "--user",
        action="append",
        default=[],
        metavar="NAME:PASSWORD[:PROJECTS]",
        help="a user, optionally limited to comma-separated projects; repeatable "
        "(default admin:admin)",
    )
    parser.add_argument("--demo", action="store_true", help="load the demo dataset as SONETAA")
    parser.add_argument(
        "--faults",
        metavar="SPEC",
        help='fault rules as JSON (e.g. \'[{"kind": "status", "status": 503, "times": 2}]\') '
        "or @FILE.json",
    )
    parser.add_argument(
        "--session-expiry", type=float, default=None, metavar="S", help="idle session expiry"
    )
    parser.add_argument(
        "--alias-token-timeout",
        type=float,
        default=None,
        metavar="S",
        help="seconds an alias token lives (XNAT's aliasTokenTimeout; default 2 days)",
    )
    parser.add_argument(
        "--no-alias-tokens",
        action="store_true",
        help="no alias token service (/data/services/tokens answers 404, as an old XNAT)",
    )
    parser.add_argument(
        "--seed", type=int, default=0, help="seed of probabilistic faults and profile delays"
    )
    parser.add_argument(
        "--profile",
        default="fast",
        metavar="SPEC",
        help="how fast it answers: fast (default), production (latency, time to first byte, "
        'slow archives, a 1 Gb/s LAN), a JSON object (\'{"base": "production", '
        '"connection_bandwidth": 10e6}\') or @FILE.json',
    )
    parser.add_argument(
        "--no-checksums",
        action="store_true",
        help="list files stored meanwhile without a digest (XNAT with checksums off)",
    )
    parser.set_defaults(handler=_run)


def _run(args: argparse.Namespace) -> int:
    from ..demo import load_demo
    from ..testing import EmulatorServer, parse_fault_spec, parse_profile_spec, parse_user_spec

    users: dict[str, str] = {}
    access: dict[str, frozenset[str] | None] = {}
    for spec in args.user:
        try:
            name, password, projects = parse_user_spec(spec)
        except ValueError as exc:
            raise ConfigError(f"--user: {exc}") from exc
        users[name] = password
        access[name] = projects
    faults = []
    if args.faults:
        try:
            faults = parse_fault_spec(args.faults)
        except (OSError, ValueError, TypeError) as exc:
            raise ConfigError(f"--faults: {exc}: give a JSON list of rules or @file") from exc
    try:
        profile = parse_profile_spec(args.profile)
    except (OSError, ValueError, TypeError) as exc:
        raise ConfigError(
            f"--profile: {exc}: give fast, production, a JSON object or @file"
        ) from exc
    if args.alias_token_timeout is not None and not args.alias_token_timeout > 0:
        raise ConfigError(
            f"--alias-token-timeout {args.alias_token_timeout}: give a positive number of seconds"
        )
    token_timeout = {}
    if args.alias_token_timeout is not None:
        token_timeout["alias_token_timeout"] = args.alias_token_timeout
    server = EmulatorServer(
        args.data,
        users=users or None,
        project_access=access,
        faults=faults,
        seed=args.seed,
        session_expiry=args.session_expiry,
        host=args.host,
        port=args.port,
        profile=profile,
        checksums=not args.no_checksums,
        alias_tokens=not args.no_alias_tokens,
        **token_timeout,
    )
    try:
        if args.demo:
            load_demo(server)
        asyncio.run(_serve(server))
    finally:
        server.close()
    return 0


async def _serve(server: EmulatorServer) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    async with server:
        sys.stdout.write(f"listening on {server.url}\n")
        sys.stdout.flush()
        await stop.wait()
