"""A stand-in for SLURM's ``sbatch`` / ``scancel``: jobs run as local process groups.

dask-jobqueue drives a batch system only through these two commands; here they
start the submitted job script as a detached local process (its own process
group, so ``scancel`` stops the whole job) and keep a spool folder of what was
submitted. The Dask workers the jobs start are real processes that connect to the
daemon's scheduler over loopback.
"""

from __future__ import annotations

import contextlib
import os
import signal
import stat
from pathlib import Path

_SBATCH = """#!/usr/bin/env bash
# sbatch JOBSCRIPT: run it detached in its own process group, print the job id.
set -euo pipefail
spool=@SPOOL@
exec 9>"$spool/lock"
flock 9
id=$(( $(cat "$spool/next" 2>/dev/null || echo 1000) + 1 ))
echo "$id" > "$spool/next"
# dask-jobqueue deletes the script once sbatch returns: run a copy.
cp "$1" "$spool/$id.sh"
setsid bash "$spool/$id.sh" > "$spool/$id.log" 2>&1 < /dev/null 9>&- &
echo "$!" > "$spool/$id.pid"
echo "Submitted batch job $id"
"""

_SCANCEL = """#!/usr/bin/env bash
# scancel JOBID: stop the job's process group.
set -uo pipefail
spool=@SPOOL@
for id in "$@"; do
    echo "$id" >> "$spool/cancelled"
    kill -TERM -- "-$(cat "$spool/$id.pid")" 2>/dev/null || true
done
"""


class FakeSlurm:
    """``sbatch`` and ``scancel`` in ``bin``, their jobs recorded in ``spool``."""

    def __init__(self, root: Path) -> None:
        self.bin = root / "bin"
        self.spool = root / "spool"
        self.bin.mkdir(parents=True)
        self.spool.mkdir()
        for name, text in (("sbatch", _SBATCH), ("scancel", _SCANCEL)):
            command = self.bin / name
            command.write_text(text.replace("@SPOOL@", _quote(self.spool)))
            command.chmod(command.stat().st_mode | stat.S_IXUSR)

    def env(self) -> dict[str, str]:
        """Environment for a process whose dask-jobqueue should submit here, on loopback."""
        return {
            "PATH": f"{self.bin}{os.pathsep}{os.environ.get('PATH', '')}",
            "DASK_JOBQUEUE__SLURM__CORES": "1",
            "DASK_JOBQUEUE__SLURM__MEMORY": "1GiB",
            # Scheduler, workers and both dashboards on loopback only.
            "DASK_JOBQUEUE__SLURM__INTERFACE": "lo",
            "DASK_JOBQUEUE__SLURM__SCHEDULER_OPTIONS": '{"dashboard_address": "127.0.0.1:0"}',
            "DASK_JOBQUEUE__SLURM__WORKER_EXTRA_ARGS": '["--dashboard-address", "127.0.0.1:0"]',
            "DASK_JOBQUEUE__SLURM__LOCAL_DIRECTORY": str(self.spool),
            "DASK_JOBQUEUE__SLURM__DEATH_TIMEOUT": "20",
        }

    def submitted(self) -> list[str]:
        return sorted(path.stem for path in self.spool.glob("*.sh"))

    def cancelled(self) -> list[str]:
        path = self.spool / "cancelled"
        return sorted(path.read_text().split()) if path.exists() else []

    def job_script(self, job_id: str) -> str:
        return (self.spool / f"{job_id}.sh").read_text()

    def alive(self) -> list[str]:
        """Jobs whose process group still has a live (not zombie) member."""
        groups = {int(path.read_text()): path.stem for path in self.spool.glob("*.pid")}
        return sorted({groups[group] for group in _live_groups() if group in groups})

    def kill_all(self) -> None:
        """Teardown: no job outlives its test."""
        for path in self.spool.glob("*.pid"):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(int(path.read_text()), signal.SIGKILL)


def _live_groups() -> set[int]:
    """Process groups with a member that is not a zombie (PID 1 here may not reap them)."""
    groups = set()
    for stat_file in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat_file.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[0] != "Z":
            groups.add(int(fields[2]))
    return groups


def _quote(path: Path) -> str:
    return "'" + str(path).replace("'", "'\\''") + "'"
