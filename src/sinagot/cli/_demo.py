"""Output of ``sinagot demo --daemon`` (the flag is registered with the ``demo`` command)."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit

__all__ = ["demo_daemon"]


def _say(line: str) -> None:
    sys.stderr.write(f"demo: {line}\n")
    sys.stderr.flush()


def demo_daemon(
    args: argparse.Namespace, sessions: Callable[[int, int], None] | None = None
) -> int:
    """Run the daemon demo (see :mod:`sinagot.cli._demo_daemon`) and print what it did;
    ``sessions(done, total)`` counts the sessions processed (default: a line each)."""
    from ._demo_daemon import PASSWORD, PROJECT, USER, run_daemon_demo
    from ._format import format_jobs, format_status

    if args.log_level is None:
        # The daemon's one line per event would bury the result: only problems show.
        logging.getLogger().setLevel(logging.WARNING)
    directory = Path(args.dir).resolve()
    demo = run_daemon_demo(directory, progress=_say, sessions=sessions)
    failed = sum(1 for job in demo.jobs if job["state"] != "done")
    if args.json:
        body = {
            "config": str(demo.config),
            "server": demo.server,
            "project": PROJECT,
            "seconds": round(demo.seconds, 3),
            "worked": demo.worked,
            "status": demo.status,
            "jobs": demo.jobs,
            "derivatives": demo.resources,
        }
        sys.stdout.write(json.dumps(body, indent=2, sort_keys=True) + "\n")
        return 1 if failed else 0
    first, labels = next(iter(demo.resources.items()))
    base = f"{demo.server}/data/projects/{PROJECT}/experiments"
    port = urlsplit(demo.server).port
    xnat_dir = directory / "daemon" / "xnat"
    summary = (
        f"The daemon processed the demo project {PROJECT} in {demo.seconds:.1f} s."
        if demo.worked
        else f"Nothing new in the demo project {PROJECT}: every session was already processed"
        " and its derivatives are up to date on the server."
    )
    lines = [
        summary,
        "",
        format_status(demo.status),
        "",
        format_jobs(demo.jobs),
        "",
        f"Derivatives were uploaded to {demo.server} as session resources name___at___pipeline"
        f" (as FrameTree reads them), their provenance in the resource PROVENANCE; for {first}:",
        *(f"  {base}/{first}/resources/{label}/files" for label in labels),
        f"  {base}/{first}/resources/PROVENANCE/files",
        "",
        f"The server stopped with the demo; its data stays in {xnat_dir}. To look around:",
        f"  sinagot emulator --data {xnat_dir} --user {USER}:{PASSWORD} --port {port} &",
        f"  sinagot daemon {demo.config}",
    ]
    if failed:
        lines.append(f"{failed} session(s) failed: see `sinagot jobs` output above.")
    sys.stdout.write("\n".join(lines) + "\n")
    return 1 if failed else 0
