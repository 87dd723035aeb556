"""Every bench runs end to end at tiny sizes and ends with its figures as one JSON line.

The benches are not run by anything else: without this, one could break (a renamed
import, a metric's format changing under a regex) and nobody would know until the next
person measured. The sizes here make each run a smoke run whose figures mean nothing;
only the bench's working is checked.
"""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"


@dataclass(frozen=True)
class Tiny:
    args: str  # split on spaces
    slow: bool = False
    # Importable modules the bench needs beyond sinagot's own dependencies.
    needs: tuple[str, ...] = ()


# Each bench with the arguments that make it take seconds. The ones that still take
# ten seconds or more (child processes, poll intervals, the emulator's production
# profile) run with the slow tests.
TINY = {
    "cache_hit": Tiny("--entries 20"),
    "cache_race": Tiny("--mib 2 --rounds 1"),
    "chaos": Tiny("--minutes 0.2 --initial 2 --quiesce 120", slow=True),
    "daemon_poll": Tiny("--sessions 5 --cycles 2"),
    "daemon_scale": Tiny("--servers 1 --projects 2 --sessions 5 --interval 2 --cycles 1"),
    "daemon_soak": Tiny("--seconds 6 --rate 2 --window 5", slow=True),
    "dask_overhead": Tiny("--steps 5", needs=("distributed",)),
    "download": Tiny("--big-mib 2 --files 5 --rounds 1", slow=True, needs=("xnat",)),
    "emulator_throughput": Tiny("--big-mib 8 --small-count 8"),
    "latency": Tiny(
        "--sessions 2 --span 1 --poll-interval 0.5 --burst 2 --burst-jobs 1 --burst-limit 60"
        " --profile fast",
        slow=True,
    ),
    "pipeline_change": Tiny(
        "--sessions 2 --new 1 --jobs 2 --poll-interval 0.5 --limit 60", slow=True
    ),
    "rerun_unchanged": Tiny("--records 5"),
    "server_load": Tiny(
        "--minutes 0.3 --studies 1 --sessions-per-study 2 --phase 3 --server-recovery 2"
        " --profile fast",
        slow=True,
    ),
    "rerun_xnat": Tiny("--sessions 3 --repeats 1"),
    "upload": Tiny("--big-mib 2 --files 5 --rounds 1", needs=("xnat",)),
}

TIMEOUT = 240.0


def _benches() -> list[str]:
    return sorted(p.stem for p in BENCH.glob("*.py") if not p.name.startswith("_"))


def _has_figure(value: Any) -> bool:
    if isinstance(value, dict):
        return any(_has_figure(v) for v in value.values())
    if isinstance(value, list):
        return any(_has_figure(v) for v in value)
    return isinstance(value, int | float) and not isinstance(value, bool)


def test_every_bench_has_tiny_sizes() -> None:
    assert sorted(TINY) == _benches()


@pytest.mark.parametrize(
    "name",
    [pytest.param(n, marks=[pytest.mark.slow] if TINY[n].slow else []) for n in sorted(TINY)],
)
def test_bench_runs_tiny_and_ends_with_json(name: str, tmp_path: Path) -> None:
    tiny = TINY[name]
    for module in tiny.needs:
        if importlib.util.find_spec(module) is None:
            pytest.skip(f"bench/{name}.py needs {module}, which is not installed")
    # Its own session: a bench that overruns is killed with the daemons and emulators
    # it started, not just its own process.
    process = subprocess.Popen(
        [sys.executable, str(BENCH / f"{name}.py"), *tiny.args.split()],
        cwd=ROOT,
        env={**os.environ, "TMPDIR": str(tmp_path)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        out, err = process.communicate(timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        out, err = process.communicate()
        pytest.fail(f"bench/{name}.py ran over {TIMEOUT:g} s\n{out[-2000:]}\n{err[-4000:]}")
    assert process.returncode == 0, f"exit {process.returncode}\n{out[-2000:]}\n{err[-4000:]}"
    lines = out.strip().splitlines()
    assert lines, f"bench/{name}.py printed nothing\n{err[-4000:]}"
    figures = json.loads(lines[-1])
    assert isinstance(figures, dict), lines[-1]
    assert _has_figure(figures), lines[-1]
