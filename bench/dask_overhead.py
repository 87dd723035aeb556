"""Overhead of the Dask runner: 500 trivial script runs on Dask vs. the serial runner.

Run: python bench/dask_overhead.py [--steps N]; the last line printed is one JSON object
with every figure.

Target: Dask <= 2x serial on a LocalCluster(processes=False). Both runs do the
same work on identical fresh datasets; the Dask figure is given with the
cluster already running and with the cluster started by the run itself.
"""

from __future__ import annotations

import argparse
import json
import logging
import tempfile
import time
import warnings
from pathlib import Path

from distributed import LocalCluster

from sinagot import Dataset
from sinagot.config import DaskSettings
from sinagot.engine.internals import local_cluster_options

CONFIG = """\
[path]
dataset = "data"
scripts = "scripts"
[records]
id_pattern = "REC-\\\\d{{6}}-[A-Z]"
[tasks.RS]
modalities = ["clinical"]
[modalities.clinical]
scripts = ["copy"]
[run]
mode = "{mode}"
[dask]
{dask}
[log]
level = "WARNING"
"""

SCRIPT = """
from sinagot import ScriptTemplate

class Script(ScriptTemplate):
    PATH_IN = ("{id}", "{task}", "clinical", "answers.json")
    PATH_OUT = ("{id}", "derivatives", "{task}", "copy.json")

    def run(self):
        self.path.output.write_bytes(self.path.input.read_bytes())
"""


def _dataset(root: Path, records: int, mode: str, dask: str) -> Dataset:
    script = root / "scripts" / "clinical" / "copy.py"
    script.parent.mkdir(parents=True)
    script.write_text(SCRIPT)
    for index in range(records):
        record = f"REC-{200000 + index:06d}-A"
        answers = root / "data" / record / "RS" / "clinical" / "answers.json"
        answers.parent.mkdir(parents=True)
        answers.write_text(f'{{"record": "{record}"}}\n')
    config = root / "sinagot.toml"
    config.write_text(CONFIG.format(mode=mode, dask=dask))
    return Dataset(config)


def _timed(dataset: Dataset, steps: int) -> float:
    start = time.perf_counter()
    report = dataset.run()
    seconds = time.perf_counter() - start
    assert report.ran == steps, str(report)
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=500)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("distributed").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", message="Port 8787 is already in use")
    local_options = "n_workers = 2\nthreads_per_worker = 1\nprocesses = false"

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        serial = _timed(_dataset(root / "serial", args.steps, "main_process", ""), args.steps)
        own_cluster = _timed(_dataset(root / "own", args.steps, "dask", local_options), args.steps)
        with LocalCluster(
            **local_cluster_options(
                DaskSettings(n_workers=2, threads_per_worker=1, processes=False)
            )
        ) as cluster:
            address = f'address = "{cluster.scheduler_address}"'
            running = _timed(_dataset(root / "running", args.steps, "dask", address), args.steps)

    print(f"{args.steps} trivial steps")
    print(f"serial runner:                            {serial:6.2f} s")
    print(
        f"dask, running LocalCluster(processes=False): {running:6.2f} s  ratio {running / serial:.2f}x"
    )
    print(
        f"dask, LocalCluster started by the run:    {own_cluster:6.2f} s  ratio {own_cluster / serial:.2f}x"
    )
    print(f"target dask <= 2x serial -> {'OK' if running <= 2 * serial else 'MISSED'}")
    figures = {
        "steps": args.steps,
        "serial_s": round(serial, 3),
        "dask_running_cluster_s": round(running, 3),
        "dask_own_cluster_s": round(own_cluster, 3),
        "ratio_running": round(running / serial, 3),
        "ratio_own": round(own_cluster / serial, 3),
        "target_met": running <= 2 * serial,
    }
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
