"""Rerun of an up-to-date dataset: 1,000 records x 3 scripts must cost < 1 s and re-hash nothing.

Run: python bench/rerun_unchanged.py [--records N]

The baseline, measured in the same run, is what a naive engine would pay to
decide the same thing: reading and hashing every input file once.
"""

from __future__ import annotations

import argparse
import json
import logging
import tempfile
import time
from pathlib import Path

from sinagot import Dataset
from sinagot.engine.internals import checksums

CONFIG = """\
[path]
dataset = "data"
scripts = "scripts"
[records]
id_pattern = "REC-\\\\d{6}-[A-Z]"
[tasks.RS]
modalities = ["clinical"]
[modalities.clinical]
scripts = ["copy", "count", "summary"]
[log]
level = "WARNING"
"""

SCRIPT = """
from sinagot import ScriptTemplate

class Script(ScriptTemplate):
    PATH_IN = {path_in}
    PATH_OUT = ("{{id}}", "derivatives", "{{task}}", "{name}.txt")

    def run(self):
        self.path.output.write_text(str(len(self.path.input.read_bytes())))
"""


def _write_dataset(root: Path, records: int) -> Path:
    inputs = {
        "copy": '("{id}", "{task}", "clinical", "answers.json")',
        "count": '("{id}", "derivatives", "{task}", "copy.txt")',
        "summary": '("{id}", "derivatives", "{task}", "count.txt")',
    }
    for name, path_in in inputs.items():
        script = root / "scripts" / "clinical" / f"{name}.py"
        script.parent.mkdir(parents=True, exist_ok=True)
        script.write_text(SCRIPT.format(path_in=path_in, name=name))
    for index in range(records):
        record = f"REC-{200000 + index:06d}-A"
        answers = root / "data" / record / "RS" / "clinical" / "answers.json"
        answers.parent.mkdir(parents=True)
        answers.write_text(f'{{"record": "{record}", "score": {index % 10}}}\n' + "x" * 4096)
    config = root / "sinagot.toml"
    config.write_text(CONFIG)
    return config


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=1000)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)

    reads = 0
    real_md5 = checksums.md5_file

    def counting_md5(path: Path) -> str:
        nonlocal reads
        reads += 1
        return real_md5(path)

    # Count every input file the engine hashes.
    checksums.md5_file = counting_md5  # type: ignore[attr-defined]

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        dataset = Dataset(_write_dataset(root, args.records))
        start = time.perf_counter()
        first = dataset.run()
        first_seconds = time.perf_counter() - start
        first_reads, reads = reads, 0
        assert first.ran == 3 * args.records, str(first)

        start = time.perf_counter()
        second = dataset.run()
        rerun_seconds = time.perf_counter() - start
        assert second.skipped == 3 * args.records, str(second)

        inputs = sorted((root / "data").glob("*/RS/clinical/answers.json"))
        start = time.perf_counter()
        for path in inputs:
            real_md5(path)
        baseline_seconds = time.perf_counter() - start

    print(f"records: {args.records}, steps: {3 * args.records}")
    print(f"first run:            {first_seconds:7.2f} s, input files hashed: {first_reads}")
    print(f"unchanged rerun:      {rerun_seconds:7.2f} s, input files hashed: {reads}")
    print(f"baseline (hash every input once, warm cache): {baseline_seconds:7.3f} s")
    print(f"ratio rerun / first run: {rerun_seconds / first_seconds:.3f}")
    print(f"ratio rerun / baseline:  {rerun_seconds / baseline_seconds:.2f}")
    ok = rerun_seconds < 1 and reads == 0
    print(f"target: rerun < 1 s and 0 files hashed -> {'OK' if ok else 'MISSED'}")
    figures = {
        "bench": "rerun_unchanged",
        "records": args.records,
        "steps": 3 * args.records,
        "first_run_s": round(first_seconds, 3),
        "first_run_hashed": first_reads,
        "rerun_s": round(rerun_seconds, 3),
        "rerun_hashed": reads,
        "baseline_hash_all_s": round(baseline_seconds, 3),
        "ok": ok,
    }
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
