"""Progress of `sinagot run`: a bar on a terminal (a real pseudo-terminal), lines in a pipe,
nothing with --quiet."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from foundation_support import config_for, write_project
from terminal_support import run_on_terminal

SINAGOT = str(Path(sys.executable).with_name("sinagot"))

SLOW = """
import time
from sinagot import ScriptTemplate
class Script(ScriptTemplate):
    PATH_IN = ("{id}", "{task}", "clinical")
    PATH_OUT = ("{id}", "derivatives", "{task}", "slow.txt")
    def run(self):
        time.sleep(0.7)
        self.logger.info("%s slept", self.id)
        self.path.output.write_text("done")
"""


@pytest.fixture
def config(tmp_path: Path) -> Path:
    return write_project(
        tmp_path,
        config=config_for({"clinical": ["slow"]}, {"RS": ["clinical"]}),
        scripts={"clinical/slow.py": SLOW},
    )


def test_a_terminal_gets_progress_bars_with_log_lines_above(config: Path) -> None:
    code, screen = run_on_terminal("run", str(config), "--force")
    assert code == 0, screen
    assert "fetch: 100%|" in screen and "2/2 [" in screen and "record" in screen
    assert "run: 100%|" in screen and "step" in screen
    assert "\r" in screen and "\u2588" in screen  # redrawn in place, with block characters
    # Log lines are printed above the bar, whole.
    assert any(line.rstrip().endswith("REC-200331-A slept") for line in screen.splitlines())
    assert "run: 2/2 steps" not in screen  # no plain progress lines on a terminal
    assert "2 steps in" in screen  # the report follows


def test_quiet_turns_the_bars_off(config: Path) -> None:
    code, screen = run_on_terminal("run", str(config), "--force", "--quiet")
    assert code == 0, screen
    assert "%|" not in screen and "\u2588" not in screen
    assert "2 steps in" in screen


def test_a_pipe_gets_plain_log_lines_and_no_bar(config: Path) -> None:
    result = subprocess.run(
        [SINAGOT, "run", str(config), "--force"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "run: 2/2 steps (100%)" in result.stderr
    assert "\r" not in result.stderr and "%|" not in result.stderr
    quiet = subprocess.run(
        [SINAGOT, "run", str(config), "--force", "-q"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert quiet.returncode == 0, quiet.stderr
    assert "steps (" not in quiet.stderr and "slept" in quiet.stderr
