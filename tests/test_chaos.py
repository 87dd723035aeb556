"""The fault campaign in CI: three minutes of bench/chaos.py on a fixed seed, nothing lost.

A failure names the seed: ``python bench/chaos.py --seed 7 --minutes 3`` replays the
same schedule (the interleaving with the daemon's own timing may differ).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

CHAOS = Path(__file__).resolve().parents[1] / "bench" / "chaos.py"
SEED = 7
MINUTES = 3


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_a_three_minute_campaign_loses_nothing(tmp_path: Path) -> None:
    command = [sys.executable, str(CHAOS), "--seed", str(SEED), "--minutes", str(MINUTES)]
    done = subprocess.run(
        [*command, "--quiesce", "600", "--keep", str(tmp_path / "chaos")],
        capture_output=True,
        text=True,
        timeout=1700,
        check=False,
    )
    lines = done.stdout.strip().splitlines()
    assert lines, done.stderr[-4000:]
    figures = json.loads(lines[-1])
    print(lines[-1])  # the figures, for the run's log (pytest -s or -rP)
    assert figures["violations"] == [], done.stdout[-4000:]
    assert done.returncode == 0
    # About 40 faults a minute at the default rates: a campaign that injected far fewer
    # tested little (a fault kind broken in the emulator, a server that never came back).
    assert figures["faults_total"] >= 20 * MINUTES, figures
    assert len(figures["faults"]) >= 5, figures["faults"]
    assert figures["status_requests"] > 100 and figures["status_unanswered"] == 0
    assert figures["sessions"]["final"] >= 12
