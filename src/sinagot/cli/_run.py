"""The ``run``, ``ids`` and ``demo`` sub-commands."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .._report import RunReport
    from ..engine import Dataset, Record, RunHooks, Subset
    from ._progress import ProgressDisplay

__all__ = ["add_quiet", "register"]


def add_quiet(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "-q",
        "--quiet",
        action="store_true",
        help="no progress bars (on a terminal) or progress lines (elsewhere)",
    )


def _apply_log_level(args: argparse.Namespace, dataset: Dataset) -> None:
    level = args.log_level or dataset.settings.log_level
    logging.getLogger().setLevel(level)
    logging.getLogger("sinagot").setLevel(level)
    if level != "DEBUG":
        # The Dask cluster's own start/stop chatter is noise for a run.
        logging.getLogger("distributed").setLevel(logging.WARNING)


def _hooks(display: ProgressDisplay, remote: bool) -> RunHooks:
    from ..engine import RunHooks

    return RunHooks(
        fetched=display.counter("fetch", "record", downloads=remote),
        progress=display.counter("run", "step"),
    )


def _run_with_progress(
    dataset: Dataset,
    scope: Dataset | Subset | Record,
    quiet: bool,
    *,
    force: bool = False,
    mode: str | None = None,
) -> RunReport:
    from ._progress import ProgressDisplay

    remote = dataset.settings.store.type != "local"
    with ProgressDisplay(quiet=quiet) as display, display.logging_above():
        return scope.run(force=force, mode=mode, hooks=_hooks(display, remote))


def _report_out(report: RunReport, as_json: bool) -> int:
    if as_json:
        sys.stdout.write(json.dumps(report.to_dict(), indent=2) + "\n")
    else:
        sys.stdout.write(f"{report}\n")
    return 0 if report.ok else 1


def _run(args: argparse.Namespace) -> int:
    from ..engine import Dataset

    dataset = Dataset(args.config)
    _apply_log_level(args, dataset)
    scope: Dataset | Subset | Record = dataset
    if args.record is not None:
        scope = dataset.get(args.record)
    if args.task is not None:
        scope = getattr(scope, args.task)
    if args.modality is not None:
        scope = getattr(scope, args.modality)
    report = _run_with_progress(dataset, scope, args.quiet, force=args.force)
    return _report_out(report, args.json)


def _ids(args: argparse.Namespace) -> int:
    from ..engine import Dataset

    ids = Dataset(args.config).ids()
    if args.json:
        sys.stdout.write(json.dumps(ids) + "\n")
    else:
        sys.stdout.write("".join(f"{record}\n" for record in ids))
    return 0


def _demo(args: argparse.Namespace) -> int:
    if args.daemon:
        from ._demo import demo_daemon
        from ._progress import ProgressDisplay

        with ProgressDisplay(quiet=args.quiet) as display, display.logging_above():
            return demo_daemon(args, sessions=display.counter("demo", "session"))
    from ..demo import write_demo
    from ..engine import Dataset

    config = write_demo(Path(args.dir).resolve())
    dataset = Dataset(config)
    _apply_log_level(args, dataset)
    report = _run_with_progress(dataset, dataset, args.quiet, mode="dask" if args.dask else None)
    code = _report_out(report, args.json)
    if not args.json:
        sys.stdout.write(
            f"\nDemo config: {config}\nRun it again with `sinagot run {config}`"
            " or from Python with `sinagot.Dataset(path)`.\n"
        )
    return code


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    run = subparsers.add_parser(
        "run",
        help="run the scripts of a dataset that are not up to date",
        description="Run every script whose outputs are not up to date (by provenance).",
    )
    run.add_argument("config", type=Path, help="path of the dataset's sinagot.toml")
    run.add_argument("--record", metavar="ID", help="only this record")
    run.add_argument("--task", metavar="T", help="only this task")
    run.add_argument("--modality", metavar="M", help="only this modality")
    run.add_argument("--force", action="store_true", help="rerun even up-to-date scripts")
    run.add_argument("--json", action="store_true", help="print the report as one JSON document")
    add_quiet(run)
    run.set_defaults(handler=_run)

    ids = subparsers.add_parser(
        "ids", help="list the record ids of a dataset", description="List the record ids."
    )
    ids.add_argument("config", type=Path, help="path of the dataset's sinagot.toml")
    ids.add_argument("--json", action="store_true", help="print the ids as one JSON list")
    ids.set_defaults(handler=_ids)

    demo = subparsers.add_parser(
        "demo",
        help="write a small demo dataset with scripts and a config, and run it",
        description="Write (once) a SoNeTAA-like demo dataset, scripts and sinagot.toml, then run.",
    )
    demo.add_argument(
        "--dir", default="sinagot-demo", help="where to write the demo (default: ./sinagot-demo)"
    )
    demo.add_argument("--dask", action="store_true", help="run on a local Dask cluster")
    demo.add_argument(
        "--daemon",
        action="store_true",
        help="serve the demo project from an embedded XNAT-compatible server and let the"
        " daemon process it and upload the results",
    )
    demo.add_argument("--json", action="store_true", help="print the report as one JSON document")
    add_quiet(demo)
    demo.set_defaults(handler=_demo)
