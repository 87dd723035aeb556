"""The real daemon against the XNAT emulator when the pipeline changes: a parameter, a script
added or removed, a config edit that computes nothing new, a kill in the middle of the drain.

Each script appends a line to ``runs.log`` when it runs, so the tests count invocations; the
emulator counts the requests, so they count the downloads of input files.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from daemon_support import wait_for
from daemon_xnat_support import (
    PIPELINE,
    XnatDaemon,
    add_session,
    derivatives,
    provenances,
    write_project,
)
from sinagot.testing import EmulatorServer

SESSIONS = {"REC-200101-A", "REC-200101-B", "REC-200101-C"}

_LOGGED = """
from pathlib import Path

from sinagot import ScriptTemplate

RUNS = Path(@RUNS@)


def ran(name, record):
    with RUNS.open("a") as log:
        log.write(f"{name} {record}\\n")
"""

FILTER = (
    _LOGGED
    + """
SLOW = RUNS.with_name("slow")


class Script(ScriptTemplate):
    PATH_IN = ("{id}", "{task}", "EEG", "raw.csv")
    PATH_OUT = ("{id}", "derivatives", "{task}", "EEG", "filtered.csv")
    PARAMETERS = {"gain": 1}

    def run(self):
        if SLOW.exists():
            import time

            time.sleep(float(SLOW.read_text()))
        ran("filter", self.id)
        gain = self.PARAMETERS["gain"]
        rows = self.path.input.read_text().splitlines()
        self.path.output.write_text("".join(f"{row},{gain}\\n" for row in rows))
"""
)

STATS = (
    _LOGGED
    + """

class Script(ScriptTemplate):
    PATH_IN = ("{id}", "derivatives", "{task}", "EEG", "filtered.csv")
    PATH_OUT = ("{id}", "derivatives", "{task}", "EEG", "stats.txt")

    def run(self):
        ran("stats", self.id)
        last = self.path.input.read_text().splitlines()[-1]
        self.path.output.write_text(last.rsplit(",", 1)[-1])
"""
)

PEAK = (
    _LOGGED
    + """

class Script(ScriptTemplate):
    PATH_IN = ("{id}", "{task}", "EEG", "raw.csv")
    PATH_OUT = ("{id}", "derivatives", "{task}", "EEG", "@NAME@.txt")

    def run(self):
        ran("@NAME@", self.id)
        self.path.output.write_text(str(len(self.path.input.read_text())))
"""
)


class Lab:
    """The project, its config and scripts, the daemon following it."""

    def __init__(self, tmp: Path, server: EmulatorServer, **daemon: object) -> None:
        self.server = server
        self.config, control = write_project(
            tmp, server.url, daemon={"pipeline_check_interval": 0.2, **daemon}
        )
        self.runs = control / "runs.log"
        self.slow = control / "slow"
        self.scripts = self.config.parent / "scripts" / "EEG"
        self.write_script("filter", FILTER)
        self.write_script("stats", STATS)
        self.write_script("peak", PEAK.replace("@NAME@", "peak"))
        self.set_scripts("filter", "stats", "peak")
        self.tmp = tmp
        self.daemons: list[XnatDaemon] = []

    def write_script(self, name: str, source: str) -> None:
        (self.scripts / f"{name}.py").write_text(source.replace("@RUNS@", repr(str(self.runs))))

    def set_scripts(self, *names: str, comment: str = "") -> None:
        text = self.config.read_text()
        start = text.index("[modalities.EEG]\n") + len("[modalities.EEG]\n")
        end = text.index("\n", start)
        listed = ", ".join(f'"{name}"' for name in names)
        self.config.write_text(f"{text[:start]}scripts = [{listed}]{comment}{text[end:]}")

    def start(self) -> XnatDaemon:
        daemon = XnatDaemon(self.tmp, self.config)
        self.daemons.append(daemon)
        return daemon.start()

    def ran(self) -> Counter[str]:
        """How many times each script ran since the last call (``name`` -> count)."""
        lines = self.runs.read_text().splitlines() if self.runs.exists() else []
        self.runs.unlink(missing_ok=True)
        return Counter(line.split()[0] for line in lines)

    def input_downloads(self) -> int:
        """Downloads of scan files (the sessions' inputs, a file or a resource's archive) since
        the last counter reset; listings (``scans/ALL/files``) are not downloads."""
        return sum(
            count
            for route, count in self.server.request_counts().items()
            if route.startswith("GET ") and "/scans/{scan}/resources/{resource}/files" in route
        )


@pytest.fixture
def project(tmp_path: Path, lab: EmulatorServer) -> Iterator[Lab]:
    for label in sorted(SESSIONS):
        add_session(lab, label)
    # A job in flight when its daemon is killed counts that attempt: room for one more.
    made = Lab(tmp_path, lab, max_attempts=2)
    yield made
    for daemon in made.daemons:
        daemon.ensure_stopped()


def _gain(server: EmulatorServer, label: str) -> int | None:
    """The gain the session's filtered signal was made with (None: being replaced)."""
    marker = provenances(server, label).get(f"RS_EEG_filter___at___{PIPELINE}")
    return None if marker is None else int(marker["parameters"]["gain"])


def test_a_parameter_change_reruns_its_step_and_dependents_from_the_cache(project: Lab) -> None:
    daemon = project.start()
    daemon.wait_settled(SESSIONS)
    assert project.ran() == {"filter": 3, "stats": 3, "peak": 3}
    stats_before = {label: derivatives(project.server, label) for label in SESSIONS}
    project.server.reset_counters()

    # No reload: the daemon sees the script change on disk.
    source = (project.scripts / "filter.py").read_text()
    (project.scripts / "filter.py").write_text(source.replace('{"gain": 1}', '{"gain": 2}'))
    wait_for(lambda: all(_gain(project.server, s) == 2 for s in SESSIONS), 60, "new derivatives")
    daemon.wait_settled(SESSIONS)
    assert project.ran() == {"filter": 3, "stats": 3}
    assert project.input_downloads() == 0
    for label in SESSIONS:
        after = derivatives(project.server, label)
        marker = provenances(project.server, label)
        # Replaced under their commit marker: the provenance names the files as they are.
        for name in ("RS_EEG_filter", "RS_EEG_stats"):
            resource = f"{name}___at___{PIPELINE}"
            assert after[resource] != stats_before[label][resource]
            assert marker[resource]["outputs"] == {
                f"RS/EEG/{file}": md5 for file, md5 in after[resource].items()
            }
        peak = f"RS_EEG_peak___at___{PIPELINE}"
        assert after[peak] == stats_before[label][peak]
    jobs = daemon.jobs()
    assert all(job["stale_steps"] == [] for job in jobs)
    history = daemon.call("job", jobs[0]["id"])["history"]
    stale = [entry["detail"] for entry in history if "pipeline" in entry["detail"]]
    assert stale == ["the pipeline changed (RS/EEG/filter, RS/EEG/stats): it runs again"]


def test_scripts_added_and_removed_and_a_config_edit_that_changes_nothing(project: Lab) -> None:
    daemon = project.start()
    daemon.wait_settled(SESSIONS)
    project.ran()

    # Comments and spacing: the same pipeline, nothing to do.
    project.set_scripts("filter", "stats", "peak", comment="   # reviewed")
    daemon.call("reload")
    assert daemon.call("plan")["datasets"]["lab"]["sessions"] == 0
    assert {job["state"] for job in daemon.jobs()} == {"done"}

    # A script added: it runs on every done session, alone.
    project.write_script("peak2", PEAK.replace("@NAME@", "peak2"))
    project.set_scripts("filter", "stats", "peak", "peak2")
    plan = daemon.call("plan")["datasets"]["lab"]
    assert plan == {"sessions": 3, "steps": {"RS/EEG/peak2": 3}, "removed": {}, "broken": []}
    daemon.call("reload")
    wait_for(
        lambda: all(
            f"RS_EEG_peak2___at___{PIPELINE}" in derivatives(project.server, s) for s in SESSIONS
        ),
        60,
        "peak2 on every session",
    )
    daemon.wait_settled(SESSIONS)
    assert project.ran() == {"peak2": 3}

    # A script removed: its derivatives stay where they are, and status says so.
    project.set_scripts("filter", "stats", "peak2")
    daemon.call("reload")
    status = daemon.call("status")["datasets"][0]["pipeline"]
    assert status["removed"] == {"RS/EEG/peak": 3} and status["sessions"] == 0
    assert all(f"RS_EEG_peak___at___{PIPELINE}" in derivatives(project.server, s) for s in SESSIONS)
    assert project.ran() == {}


def test_a_daemon_killed_in_the_middle_of_the_drain_loses_nothing(project: Lab) -> None:
    daemon = project.start()
    daemon.wait_settled(SESSIONS)
    project.ran()
    project.slow.write_text("1.0")
    source = (project.scripts / "filter.py").read_text()
    (project.scripts / "filter.py").write_text(source.replace('{"gain": 1}', '{"gain": 3}'))
    wait_for(
        lambda: 1 <= sum(_gain(project.server, s) == 3 for s in SESSIONS) < len(SESSIONS),
        60,
        "some sessions redone, not all",
    )
    daemon.kill()
    project.slow.unlink()
    restarted = project.start()
    wait_for(lambda: all(_gain(project.server, s) == 3 for s in SESSIONS), 60, "all redone")
    restarted.wait_settled(SESSIONS)
    for label in SESSIONS:
        filtered = derivatives(project.server, label)[f"RS_EEG_filter___at___{PIPELINE}"]
        stats = provenances(project.server, label)[f"RS_EEG_stats___at___{PIPELINE}"]
        # The stats were made from the new filtered signal, whichever daemon made them.
        assert stats["inputs"] == {
            f"{label}/derivatives/RS/EEG/{name}": md5 for name, md5 in filtered.items()
        }
    ran = project.ran()
    # Each session's filter ran once more, perhaps twice for the one the kill cut short.
    assert 3 <= ran["filter"] <= 4 and "peak" not in ran
