"""``sinagot daemon``, its systemd unit, and the clients of its socket: status, jobs, retry, plan,
poll, pause, resume, reload."""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import sys
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any

from ..daemon import JobState
from ._unit import DEFAULT_ACCOUNT, installed_unit

if TYPE_CHECKING:
    from ._control import ControlClient

__all__ = ["register"]


def _run_daemon(args: argparse.Namespace) -> int:
    from ..daemon import backend_for, serve

    return serve(args.configs, backend_factory=backend_for, log_level=args.log_level)


def _systemd_unit(args: argparse.Namespace) -> int:
    sys.stdout.write(installed_unit(args.configs, user=args.user, group=args.group))
    return 0


def _client(args: argparse.Namespace) -> ControlClient:
    from ._control import ControlClient

    return ControlClient(args.socket)


def _emit(args: argparse.Namespace, body: Any, text: Callable[[Any], str]) -> int:
    if args.json:
        sys.stdout.write(json.dumps(body, indent=2, sort_keys=True) + "\n")
    else:
        sys.stdout.write(text(body) + "\n")
    return 0


def _call(coroutine: Coroutine[Any, Any, Any]) -> Any:
    return asyncio.run(coroutine)


def _status(args: argparse.Namespace) -> int:
    from ._format import format_status

    return _emit(args, _call(_client(args).status()), format_status)


def _jobs(args: argparse.Namespace) -> int:
    from ._format import format_job, format_jobs

    client = _client(args)
    if args.id is not None:
        return _emit(args, _call(client.job(args.id)), format_job)
    jobs = _call(client.jobs(state=args.state, dataset=args.dataset, limit=args.limit))
    # Fitted to a terminal; whole lines for a pipe.
    width = shutil.get_terminal_size().columns if sys.stdout.isatty() else None
    return _emit(args, {"jobs": jobs}, lambda body: format_jobs(body["jobs"], width))


def _retry(args: argparse.Namespace) -> int:
    job = _call(_client(args).retry(args.id))
    return _emit(
        args, job, lambda j: f"job {j['id']} ({j['dataset']}/{j['session']}) will run again"
    )


def _plan(args: argparse.Namespace) -> int:
    from ._format import format_plan

    body = _call(_client(args).plan(args.dataset or ()))
    return _emit(args, body, format_plan)


def _poll(args: argparse.Namespace) -> int:
    body = _call(_client(args).poll(args.dataset or ()))
    return _emit(args, body, lambda b: f"polling now: {', '.join(b['polling']) or 'no datasets'}")


def _pause(args: argparse.Namespace) -> int:
    body = _call(_client(args).pause())
    return _emit(
        args,
        body,
        lambda _: "paused: running jobs finish, no new job starts until `sinagot resume`",
    )


def _resume(args: argparse.Namespace) -> int:
    body = _call(_client(args).resume())
    return _emit(args, body, lambda _: "resumed: jobs start again")


def _reload(args: argparse.Namespace) -> int:
    body = _call(_client(args).reload())
    return _emit(args, body, lambda b: f"reloaded: datasets {', '.join(b['datasets'])}")


def _client_parser(
    subparsers: argparse._SubParsersAction[argparse.ArgumentParser],
    name: str,
    help_text: str,
    handler: Callable[[argparse.Namespace], int],
) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(name, help=help_text, description=help_text)
    parser.add_argument(
        "--socket",
        metavar="PATH",
        help="the daemon's control socket (default: $RUNTIME_DIRECTORY/sinagot.sock, the user "
        "runtime dir, or /run/sinagot/sinagot.sock)",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON document")
    parser.set_defaults(handler=handler)
    return parser


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    daemon = subparsers.add_parser(
        "daemon",
        help="run the sync daemon in the foreground (for systemd)",
        description="Poll the servers of the given dataset configs, process new or changed "
        "sessions and upload the results; daemon-wide settings come from the first config's "
        "[daemon] table.",
    )
    daemon.add_argument("configs", nargs="+", metavar="CONFIG", help="dataset config files (TOML)")
    daemon.set_defaults(handler=_run_daemon)

    unit = subparsers.add_parser(
        "systemd-unit",
        help="print a systemd unit that runs this installation's daemon on the given configs",
        description="Validate the configs and print a hardened unit (Type=notify) that runs "
        "`sinagot daemon CONFIG...` with this installation's own executable, may write the "
        "configs' work trees and caches, and loads their password credentials. Install it with "
        "`sinagot systemd-unit /etc/sinagot/sinagot.toml > /etc/systemd/system/sinagot.service`.",
    )
    unit.add_argument("configs", nargs="+", metavar="CONFIG", help="dataset config files (TOML)")
    unit.add_argument(
        "--user", default=DEFAULT_ACCOUNT, help=f"User= of the service (default: {DEFAULT_ACCOUNT})"
    )
    unit.add_argument(
        "--group",
        default=DEFAULT_ACCOUNT,
        help=f"Group= of the service (default: {DEFAULT_ACCOUNT})",
    )
    unit.set_defaults(handler=_systemd_unit)

    _client_parser(subparsers, "status", "show the daemon's datasets and job counts", _status)
    jobs = _client_parser(subparsers, "jobs", "list the daemon's jobs, or show one job", _jobs)
    jobs.add_argument("id", nargs="?", type=int, metavar="ID", help="show this job in detail")
    jobs.add_argument(
        "--state",
        choices=[str(state) for state in JobState],
        help="only jobs in this state",
    )
    jobs.add_argument("--dataset", help="only jobs of this dataset")
    jobs.add_argument("--limit", type=int, default=None, help="at most this many (newest first)")
    retry = _client_parser(subparsers, "retry", "run a failed job again", _retry)
    retry.add_argument("id", type=int, metavar="ID", help="the job id (see `sinagot jobs`)")
    plan = _client_parser(
        subparsers,
        "plan",
        "show what the pipeline as it is now on disk would process again (runs nothing)",
        _plan,
    )
    plan.add_argument("--dataset", action="append", help="only this dataset (repeatable)")
    poll = _client_parser(subparsers, "poll", "poll the servers now", _poll)
    poll.add_argument("--dataset", action="append", help="only this dataset (repeatable)")
    _client_parser(subparsers, "pause", "stop starting new jobs", _pause)
    _client_parser(subparsers, "resume", "start jobs again after a pause", _resume)
    _client_parser(subparsers, "reload", "re-read the daemon's configs", _reload)
