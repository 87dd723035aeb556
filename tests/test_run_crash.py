"""A run SIGKILLed mid-step leaves nothing that looks complete, and the next run finishes it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

from foundation_support import TWO_RECORDS, config_for, kill_when_started, write_project
from sinagot import Dataset, StepStatus

SLOW = """
import os
import time
from pathlib import Path

from sinagot import ScriptTemplate

class Script(ScriptTemplate):
    PATH_IN = ("{id}", "{task}", "clinical", "answers.json")
    PATH_OUT = ("{id}", "derivatives", "{task}", "clinical", "copy.json")

    def run(self):
        self.path.output.write_text("half-")
        if os.environ.get("CRASH_MARKER"):
            Path(os.environ["CRASH_MARKER"]).write_text("started")
            time.sleep(60)
        self.path.output.write_bytes(self.path.input.read_bytes())
"""


def test_sigkill_mid_step_then_rerun(tmp_path: Path) -> None:
    config = write_project(
        tmp_path,
        config=config_for({"clinical": ["copy"]}, {"RS": ["clinical"]}),
        scripts={"clinical/copy.py": SLOW},
    )
    marker = tmp_path / "started"
    child = kill_when_started(
        [sys.executable, "-c", f"from sinagot import Dataset; Dataset({str(config)!r}).run()"],
        marker,
        env={**os.environ, "CRASH_MARKER": str(marker)},
    )
    assert child.returncode == -signal.SIGKILL
    derivatives = tmp_path / "data" / TWO_RECORDS[0] / "derivatives"
    assert not (derivatives / "RS").exists()
    assert not (derivatives / ".provenance").exists()
    left_over = [p for p in (derivatives / ".staging").iterdir() if p.is_dir()]
    assert len(left_over) == 1 and str(child.pid) in left_over[0].name

    report = Dataset(config).run()
    assert not [p for p in (derivatives / ".staging").iterdir() if p.is_dir()]
    assert [r.status for r in report.results] == [StepStatus.RAN, StepStatus.RAN]
    source = tmp_path / "data" / TWO_RECORDS[0] / "RS" / "clinical" / "answers.json"
    assert (derivatives / "RS" / "clinical" / "copy.json").read_bytes() == source.read_bytes()
    provenance = json.loads(
        (derivatives / ".provenance" / "RS_clinical_copy@sinagot.json").read_text()
    )
    assert provenance["status"] == "success"
    assert Dataset(config).run().skipped == 2


def test_two_processes_running_the_same_dataset_at_once(tmp_path: Path) -> None:
    config = write_project(tmp_path)
    code = f"import sys; from sinagot import Dataset; sys.exit(0 if Dataset({str(config)!r}).run().ok else 1)"
    children = [
        subprocess.Popen([sys.executable, "-c", code], stderr=subprocess.PIPE) for _ in range(2)
    ]
    for child in children:
        _, stderr = child.communicate(timeout=120)
        assert child.returncode == 0, stderr.decode()
    report = Dataset(config).run()
    assert report.skipped == 20 and report.ran == 0
