"""``sinagot init DIR --xnat URL --project P [--user U]`` or ``--local FOLDER``.

Reads the listing once (one request on a server), then the scans and resources
of a bounded sample of sessions spread over it, and writes a config that works
as it is: the tasks and modalities the sample uses (those whose names cannot be
config names are left out, with a message), an id pattern guessed from the
labels (:mod:`._id_pattern`), and an example script per modality. The password
is never written: the connector finds it as it would for the daemon.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import ConfigError, StoreError
from ._id_pattern import derive_id_pattern
from ._run import add_quiet
from ._scaffold import EXAMPLE_SCRIPT, Layout, example_script, render_config

if TYPE_CHECKING:
    from ..connectors import Store

__all__ = ["register"]

CONFIG_NAME = "sinagot.toml"
DEFAULT_SAMPLE = 20


@dataclass(slots=True)
class _Survey:
    """Tasks (in the order first seen) with their modalities, and what was left out."""

    tasks: dict[str, list[str]] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)

    def add(self, task: str, modality: str) -> None:
        from ..config import name_problem

        for kind, name in (("task", task), ("modality", modality)):
            problem = name_problem(name)
            if problem is not None:
                self.skipped.setdefault(f"{kind} {name!r}", problem)
                return
        modalities = self.tasks.setdefault(task, [])
        if modality not in modalities:
            modalities.append(modality)

    def layout_tasks(self) -> dict[str, tuple[str, ...]]:
        """The tasks, less those named like a modality (a config needs distinct names)."""
        modalities = {m for names in self.tasks.values() for m in names}
        tasks = {}
        for task, names in self.tasks.items():
            if task in modalities:
                self.skipped[f"task {task!r}"] = "it is also the name of a modality"
            else:
                tasks[task] = tuple(names)
        return tasks


def _spread(labels: Sequence[str], size: int) -> list[str]:
    """At most ``size`` labels spread evenly over ``labels`` (old and new sessions alike)."""
    if len(labels) <= size:
        return list(labels)
    return [labels[index * len(labels) // size] for index in range(size)]


def _survey(store: Store, labels: Sequence[str], counter: Callable[[int, int], None]) -> _Survey:
    from ..connectors import DataRow

    survey = _Survey()
    counter(0, len(labels))
    for done, label in enumerate(labels, 1):
        row = DataRow(id=label)
        store.populate_row(row)
        for path, entry in row.entries.items():
            if not entry.is_derivative:
                task, _, modality = path.partition("/")
                survey.add(task, modality)
        counter(done, len(labels))
    return survey


def _list_labels(store: Store) -> list[str]:
    from ..connectors import DataTree

    tree = DataTree()
    store.populate_tree(tree)
    return [row.id for row in tree]


def _check_target(directory: Path) -> Path:
    config = directory / CONFIG_NAME
    if config.exists():
        raise ConfigError(
            f"{config} exists: init never overwrites a config; choose another DIR or remove it"
        )
    return config


def _write(directory: Path, layout: Layout, text: str) -> list[str]:
    """Write the example scripts (an existing one is kept) and then the config."""
    from .._fs import atomic_write_bytes

    written = []
    for modality in layout.modalities:
        script = directory / "scripts" / modality / f"{EXAMPLE_SCRIPT}.py"
        if not script.exists():
            atomic_write_bytes(script, example_script(modality).encode())
            written.append(f"{modality}/{script.name}")
    # Last: a config exists only once everything it names does.
    atomic_write_bytes(directory / CONFIG_NAME, text.encode())
    return written


def _relative(folder: Path, directory: Path) -> str:
    return os.path.relpath(folder, directory) if folder.is_relative_to(directory) else str(folder)


def _survey_store(
    args: argparse.Namespace, store: Store, source: str, noun: str
) -> tuple[Layout, dict[str, str]]:
    from ._progress import ProgressDisplay

    labels = _list_labels(store)
    if not labels:
        raise StoreError(f"{source} has no {noun}s: add data first, init learns from it")
    derived = derive_id_pattern(labels)
    sample = _spread(labels, args.sample)
    with ProgressDisplay(quiet=args.quiet) as display, display.logging_above():
        survey = _survey(store, sample, display.counter("survey", noun))
    tasks = survey.layout_tasks()
    if not tasks:
        raise StoreError(
            f"the {len(sample)} {noun}s of {source} looked into have no data under a usable"
            f" task and modality name ({'; '.join(survey.skipped) or 'none at all'})"
        )
    layout = Layout(
        source, noun, len(labels), len(sample), derived.pattern, derived.unmatched, tasks
    )
    return layout, survey.skipped


def _init(args: argparse.Namespace) -> int:
    directory = Path(args.dir).resolve()
    config = _check_target(directory)
    store_keys: dict[str, str] | None = None
    if args.local is not None:
        from ..connectors import LocalStore

        folder = Path(args.local).resolve()
        if not folder.is_dir():
            raise ConfigError(f"--local {folder}: no such folder; give the dataset's root folder")
        layout, skipped = _survey_store(args, LocalStore(folder), f"folder {folder}", "record")
        dataset = _relative(folder, directory)
    else:
        from ..connectors import XnatStore

        if not args.project:
            raise ConfigError("--xnat needs --project: the XNAT project to follow")
        source = f"project {args.project} on {args.xnat}"
        with XnatStore(
            args.xnat,
            user=args.user,
            project=args.project,
            password_credential=args.password_credential,
            local_root=directory / "work",
        ) as store:
            layout, skipped = _survey_store(args, store, source, "session")
            user = store.aio.user
        dataset = "work"
        store_keys = {"server": args.xnat, "project": args.project, "user": user}
        if args.password_credential:
            store_keys["password_credential"] = args.password_credential
    text = render_config(layout, dataset=dataset, store=store_keys)
    scripts = _write(directory, layout, text)
    _report(config, layout, skipped, scripts)
    return 0


def _report(config: Path, layout: Layout, skipped: dict[str, str], scripts: list[str]) -> None:
    matched = layout.sessions - len(layout.unmatched)
    lines = [
        f"Looked into {layout.sampled} of the {layout.sessions} {layout.noun}s of {layout.source}.",
        f"  id_pattern  {layout.id_pattern}  (matches {matched} of {layout.sessions} labels)",
    ]
    for index, (task, modalities) in enumerate(layout.tasks.items()):
        lines.append(f"  {'tasks' if index == 0 else '':10}  {task}: {', '.join(modalities)}")
    if layout.unmatched:
        shown = ", ".join(repr(label) for label in layout.unmatched[:10])
        more = f" and {len(layout.unmatched) - 10} more" if len(layout.unmatched) > 10 else ""
        lines.append(f"  ignored     {len(layout.unmatched)} label(s) not matching: {shown}{more}")
    lines += [f"  skipped     {what}: {why}" for what, why in skipped.items()]
    where = config.parent / "scripts"
    made = (
        f"{len(scripts)} example script(s) in {where}/ ({', '.join(scripts)})"
        if scripts
        else "no script (those there are kept)"
    )
    lines += [
        f"Wrote {config} and {made}.",
        "Next: check the config, make the scripts yours, then",
        f"  sinagot ids {config}",
        f"  sinagot run {config}",
    ]
    sys.stdout.write("\n".join(lines) + "\n")


def _positive(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive number")
    return int(text)


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    init = subparsers.add_parser(
        "init",
        help="write a config and example scripts for an XNAT project or a local dataset",
        description="Look at a project's sessions (or a local dataset's folders) and write"
        f" DIR/{CONFIG_NAME}, with the tasks, modalities and id pattern they use, and an example"
        " script per modality in DIR/scripts/. An existing config is never overwritten.",
    )
    init.add_argument("dir", type=Path, metavar="DIR", help="where to write the config")
    source = init.add_mutually_exclusive_group(required=True)
    source.add_argument("--xnat", metavar="URL", help="the XNAT server, e.g. https://xnat.lab.org")
    source.add_argument(
        "--local", metavar="FOLDER", help="a dataset folder: FOLDER/<record>/<task>/<modality>/"
    )
    init.add_argument("--project", metavar="P", help="the XNAT project (with --xnat)")
    init.add_argument(
        "--user",
        metavar="U",
        help="the XNAT user (default: the login of the server in ~/.netrc); the password comes"
        " from --password-credential, $SINAGOT_XNAT_PASSWORD or ~/.netrc",
    )
    init.add_argument(
        "--password-credential",
        metavar="NAME",
        help="read the password from the systemd credential NAME ($CREDENTIALS_DIRECTORY/NAME),"
        " and name it in the config",
    )
    init.add_argument(
        "--sample",
        type=_positive,
        default=DEFAULT_SAMPLE,
        metavar="N",
        help=f"sessions looked into for tasks and modalities (default: {DEFAULT_SAMPLE})",
    )
    add_quiet(init)
    init.set_defaults(handler=_init)
