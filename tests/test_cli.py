"""The `sinagot run | ids | demo` commands, as real subprocesses."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from foundation_support import TWO_RECORDS, config_for, write_project
from sinagot.demo import DEMO_CONFIG


def sinagot(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", "import sys; from sinagot.cli import main; sys.exit(main())", *args],
        capture_output=True,
        text=True,
        timeout=240,
        cwd=cwd,
        check=False,
    )


def test_demo_runs_then_does_no_work(tmp_path: Path) -> None:
    first = sinagot("demo", cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    assert "50 steps" in first.stdout and "50 ran" in first.stdout
    assert "HDC/behavior/accuracy" in first.stdout
    assert "Begin step run" in first.stderr and "Step run finished" in first.stderr
    demo = tmp_path / "sinagot-demo"
    assert (demo / "sinagot.toml").is_file() and (
        demo / "scripts" / "EEG" / "spectrum.py"
    ).is_file()
    accuracy = json.loads(
        (
            demo / "data" / "REC-200401-B" / "derivatives" / "HDC" / "behavior" / "accuracy.json"
        ).read_text()
    )
    assert 0.5 < accuracy["accuracy"] <= 1 and accuracy["trials"] == 40
    second = sinagot("demo", cwd=tmp_path)
    assert second.returncode == 0
    assert "0 ran, 50 up to date" in second.stdout and "nothing to do" in second.stdout
    assert "Begin step run" not in second.stderr


def test_demo_on_dask_with_json(tmp_path: Path) -> None:
    result = sinagot("demo", "--dir", str(tmp_path / "d"), "--dask", "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["mode"] == "dask" and report["ran"] == 50 and report["failed"] == 0
    assert len(report["steps"]) == 50


def test_run_scopes_json_force_and_ids(tmp_path: Path) -> None:
    config = write_project(tmp_path)
    ids = sinagot("ids", str(config))
    assert ids.stdout.split() == list(TWO_RECORDS)
    assert json.loads(sinagot("ids", str(config), "--json").stdout) == list(TWO_RECORDS)
    scoped = sinagot(
        "run",
        str(config),
        "--record",
        TWO_RECORDS[1],
        "--task",
        "HDC",
        "--modality",
        "EEG",
        "--json",
    )
    assert scoped.returncode == 0, scoped.stderr
    report = json.loads(scoped.stdout)
    assert [(s["record"], s["task"], s["script"], s["status"]) for s in report["steps"]] == [
        (TWO_RECORDS[1], "HDC", "preprocess", "ran"),
        (TWO_RECORDS[1], "HDC", "spectrum", "ran"),
    ]
    everything = json.loads(sinagot("run", str(config), "--json").stdout)
    assert (everything["ran"], everything["up_to_date"]) == (18, 2)
    forced = json.loads(sinagot("run", str(config), "--task", "RS", "--force", "--json").stdout)
    assert forced["ran"] == 6


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (("--record", "REC-999999-Z"), "no record 'REC-999999-Z'"),
        (
            ("--task", "XYZ"),
            "has no scope 'XYZ'; valid scopes: RS, MMN, HDC, EEG, clinical, behavior",
        ),
        (("--task", "RS", "--modality", "behavior"), "valid scopes: EEG, clinical"),
    ],
)
def test_bad_scopes_are_one_line_errors(
    tmp_path: Path, args: tuple[str, ...], expected: str
) -> None:
    result = sinagot("run", str(write_project(tmp_path)), *args)
    assert result.returncode == 1
    assert result.stderr.startswith("sinagot: error: ") and expected in result.stderr
    assert result.stderr.count("\n") == 1


def test_bad_config_exits_2_with_one_line(tmp_path: Path) -> None:
    config = write_project(
        tmp_path, config=DEMO_CONFIG.replace("[modalities.behavior]", "[modalites.behavior]")
    )
    for command in ("run", "ids"):
        result = sinagot(command, str(config))
        assert result.returncode == 2
        assert (
            result.stderr
            == f"sinagot: error: {config}: modalites: unknown key; did you mean 'modalities'?\n"
        )
        assert result.stdout == ""


def test_failed_steps_exit_1(tmp_path: Path) -> None:
    failing = "from sinagot import ScriptTemplate\nclass Script(ScriptTemplate):\n    PATH_IN = ('{id}', '{task}', 'clinical')\n    PATH_OUT = ('{id}', 'derivatives', 'x')\n    def run(self):\n        1 / 0\n"
    config = write_project(
        tmp_path,
        config=config_for({"clinical": ["bad"]}, {"RS": ["clinical"]}),
        scripts={"clinical/bad.py": failing},
    )
    result = sinagot("run", str(config))
    assert result.returncode == 1
    assert (
        "ZeroDivisionError: division by zero" in result.stdout and "Traceback" not in result.stderr
    )


SLOW = """
import time
from sinagot import ScriptTemplate
class Script(ScriptTemplate):
    PATH_IN = ("{id}", "{task}", "clinical")
    PATH_OUT = ("{id}", "derivatives", "{task}", "slow.txt")
    def run(self):
        time.sleep(0.7)
        self.path.output.write_text("done")
"""


def test_progress_on_stderr_for_longer_runs(tmp_path: Path) -> None:
    config = write_project(
        tmp_path,
        config=config_for({"clinical": ["slow"]}, {"RS": ["clinical"]}),
        scripts={"clinical/slow.py": SLOW},
    )
    result = sinagot("run", str(config), "--json")
    assert result.returncode == 0, result.stderr
    assert "run: 2/2 steps (100%)" in result.stderr
    assert json.loads(result.stdout)["ran"] == 2


@pytest.mark.parametrize("command", [(), ("run",), ("ids",), ("demo",)])
def test_help_everywhere(command: tuple[str, ...]) -> None:
    result = sinagot(*command, "--help")
    assert result.returncode == 0 and "usage: sinagot" in result.stdout
