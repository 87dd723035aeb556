"""Sinagot 0.1's free-form layout runs: records found in file names, outputs where PATH_OUT
says (beside the raw data), existing outputs adopted as done, acquired data never written."""

from __future__ import annotations

import json
import logging
import signal
import sys
import textwrap
from pathlib import Path

import pytest

from foundation_support import kill_when_started
from sinagot import Dataset, StepStatus
from v01_support import A, B, write_v01_dataset


def _provenance(root: Path, record: str, step: str) -> dict[str, object]:
    file = root / "data" / ".sinagot" / "records" / record / "derivatives" / ".provenance"
    document: dict[str, object] = json.loads((file / f"{step}@sinagot.json").read_text())
    return document


def _statuses(report: object) -> dict[str, str]:
    return {str(r.key): str(r.status) for r in report.results}  # type: ignore[attr-defined]


def test_records_are_found_in_file_names_as_01_did(tmp_path: Path) -> None:
    ds = Dataset(write_v01_dataset(tmp_path))
    assert ds.ids() == [A, B]  # phantom-RS.eeg does not match id_pattern; .trash is hidden
    assert ds.MMN.ids() == [A]  # EEG matches folders ([true, false])
    assert ds.survey.ids() == [A, B]  # survey matches files
    # [true, true] would look for files: the .eeg folders are not records then.
    config = (tmp_path / "dataset.toml").read_text()
    (tmp_path / "dataset.toml").write_text(config.replace("file_match = [true, false]", ""))
    assert Dataset(tmp_path).MMN.ids() == []


def test_outputs_go_where_path_out_says_and_raw_data_is_untouched(tmp_path: Path) -> None:
    root = write_v01_dataset(tmp_path)
    raw = root / "data" / "RAW" / f"{A}-RS.eeg" / "signal.txt"
    before = raw.read_bytes()
    ds = Dataset(root)
    report = ds.run()
    assert report.ok, report.errors
    data = root / "data"
    assert (data / "CLEAN" / f"{A}-RS.txt").read_text() == f"SIGNAL OF {A} RS\n"
    assert (data / "OUT" / A / "RS-power.txt").read_text() == str(len(f"SIGNAL OF {A} RS\n"))
    assert (data / "OUT" / A / "survey-score.txt").read_text() == "6"
    assert raw.read_bytes() == before
    # No record folders appear in the dataset: the bookkeeping is hidden in .sinagot/.
    assert not (data / A).exists()
    provenance = _provenance(root, A, "RS_EEG_power")
    assert provenance["status"] == "success"
    assert provenance["inputs"] == {
        f"CLEAN/{A}-RS.txt": provenance["inputs"][f"CLEAN/{A}-RS.txt"]  # type: ignore[index]
    }
    assert list(provenance["outputs"]) == [f"OUT/{A}/RS-power.txt"]  # type: ignore[arg-type]
    assert provenance["folder"] == f"OUT/{A}"
    # A second run: everything up to date by provenance.
    assert Dataset(root).run().ran == 0


def test_an_output_sinagot_did_not_write_is_adopted_until_forced(tmp_path: Path) -> None:
    root = write_v01_dataset(tmp_path)
    hand = root / "data" / "OUT" / B / "survey-score.txt"
    ds = Dataset(root)
    report = ds.survey.get(B).run()
    statuses = _statuses(report)
    assert statuses[f"{B}/Q/survey/score"] == str(StepStatus.UP_TO_DATE)
    assert hand.read_text() == "by hand\n"  # kept
    assert (root / "data" / "OUT" / B / "survey-norm.txt").read_text() == "norm by hand\n"
    adopted = _provenance(root, B, "Q_survey_score")
    assert adopted["status"] == "adopted"
    assert list(adopted["outputs"]) == [f"OUT/{B}/survey-score.txt"]  # type: ignore[arg-type]
    # From then on provenance decides: unchanged -> up to date; input changed -> rerun.
    assert ds.survey.get(B).run().ran == 0
    (root / "data" / "SURVEY" / B / "answers.txt").write_text("4 5 6\n")
    assert ds.survey.get(B).run().ran == 2
    assert hand.read_text() == "15"


def test_force_replaces_an_adopted_output(tmp_path: Path) -> None:
    root = write_v01_dataset(tmp_path)
    ds = Dataset(root)
    ds.run()
    assert (root / "data" / "OUT" / B / "survey-score.txt").read_text() == "by hand\n"
    report = ds.survey.run(force=True)
    assert report.ran == 4
    assert (root / "data" / "OUT" / B / "survey-score.txt").read_text() == "9"


def test_run_step_label_runs_that_step_alone(tmp_path: Path) -> None:
    root = write_v01_dataset(tmp_path)
    ds = Dataset(root)
    report = ds.get(A).run("power")
    # Only power is reported; clean (its upstream) was checked, not run.
    assert {r.key.script for r in report.results} == {"power"}
    assert _statuses(report)[f"{A}/RS/EEG/power"] == str(StepStatus.MISSING_INPUT)
    assert not (root / "data" / "CLEAN" / f"{A}-RS.txt").exists()
    ds.get(A).run("clean")
    assert not (root / "data" / "OUT" / A / "RS-power.txt").exists()
    assert ds.get(A).run("power").ran == 1
    assert (root / "data" / "OUT" / A / "RS-power.txt").is_file()
    # force applies to the named step only
    assert ds.get(A).run("power", force=True).ran == 1


def test_a_script_writing_over_its_input_is_refused_in_one_line(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    root = write_v01_dataset(tmp_path)
    (root / "scripts" / "EEG" / "clean.py").write_text(
        textwrap.dedent(
            """
            from sinagot import ScriptTemplate

            class Script(ScriptTemplate):
                PATH_IN = ("RAW", "{id}-{task}.eeg")
                PATH_OUT = ("RAW", "{id}-{task}.eeg", "signal.txt")

                def run(self):
                    self.path.output.write_text("overwritten")
            """
        )
    )
    raw = root / "data" / "RAW" / f"{A}-RS.eeg" / "signal.txt"
    with caplog.at_level(logging.ERROR, logger="sinagot"):
        report = Dataset(root).EEG.run(force=True)
    assert raw.read_text() == f"signal of {A} RS\n"
    assert report.failed == 4  # clean of each record and task, data or not
    assert "would write over its input" in report.errors[f"{A}/RS/EEG/clean"]
    said = [r.getMessage() for r in caplog.records if "would write over" in r.getMessage()]
    assert len(said) == 1 and "\n" not in said[0] and "{id}" in said[0]


def test_dict_patterns_read_and_write_several_paths(tmp_path: Path) -> None:
    root = write_v01_dataset(tmp_path)
    (root / "scripts" / "EEG" / "clean.py").write_text(
        textwrap.dedent(
            """
            from sinagot import ScriptTemplate

            class Script(ScriptTemplate):
                PATH_IN = {"eeg": ("RAW", "{id}-{task}.eeg"), "answers": ("SURVEY", "{id}", "answers.txt")}
                PATH_OUT = {"a": ("CLEAN", "{id}-{task}.txt"), "b": ("CLEAN", "{id}-{task}.json")}

                def run(self):
                    self.path.output["a"].write_text((self.path.input["eeg"] / "signal.txt").read_text())
                    self.path.output["b"].write_text(self.path.input["answers"].read_text())
            """
        )
    )
    report = Dataset(root).MMN.run()
    assert report.ran == 1 and report.ok
    assert (root / "data" / "CLEAN" / f"{A}-MMN.json").read_text() == "1 2 3\n"
    provenance = _provenance(root, A, "MMN_EEG_clean")
    assert sorted(provenance["outputs"]) == [  # type: ignore[arg-type]
        f"CLEAN/{A}-MMN.json",
        f"CLEAN/{A}-MMN.txt",
    ]
    assert provenance["folder"] == "CLEAN"


def test_a_01_script_without_run_keeps_its_output(tmp_path: Path) -> None:
    root = write_v01_dataset(tmp_path)
    score = root / "scripts" / "survey" / "score.py"
    score.write_text(score.read_text().split("    def run(self):")[0])
    report = Dataset(root).survey.run(force=True)
    statuses = _statuses(report)
    # A: nothing written and nothing there: a clear error; B: the hand-made output stays.
    assert "did not write the output" in report.errors[f"{A}/Q/survey/score"]
    assert statuses[f"{B}/Q/survey/score"] == str(StepStatus.RAN)
    assert (root / "data" / "OUT" / B / "survey-norm.txt").read_text() == "norm by hand\n"


def test_01_status_log_lines_are_written(tmp_path: Path) -> None:
    root = write_v01_dataset(tmp_path)
    Dataset(root).get(A).RS.EEG.run()
    lines = [
        json.loads(line) for line in (root / "data" / "LOG" / f"{A}.log").read_text().splitlines()
    ]
    assert [(line["step_label"], line["step_status"]) for line in lines] == [
        ("clean", 20),
        ("clean", 30),
        ("power", 20),
        ("power", 30),
    ]
    assert {line["record_id"] for line in lines} == {A}


def test_running_one_scope_says_nothing_of_other_scopes_scripts(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    root = write_v01_dataset(tmp_path)
    (root / "scripts" / "survey" / "norm.py").write_text("import not_a_module_anywhere\n")
    with caplog.at_level(logging.INFO, logger="sinagot"):
        report = Dataset(root).EEG.run()
    assert report.ok
    assert not [r for r in caplog.records if "norm.py" in r.getMessage()]
    with caplog.at_level(logging.INFO, logger="sinagot"):
        report = Dataset(root).survey.run()
    said = [r for r in caplog.records if "norm.py" in r.getMessage()]
    assert len(said) == 1 and said[0].levelno == logging.ERROR
    assert report.failed == 2


def test_the_records_layout_keeps_working_beside(tmp_path: Path) -> None:
    # A dataset whose scripts follow <id>/<task>/<modality> is not taken for a 0.1 one.
    from foundation_support import TWO_RECORDS, write_project

    ds = Dataset(write_project(tmp_path))
    assert ds.ids() == list(TWO_RECORDS)
    assert ds.run().ok
    assert (tmp_path / "data" / TWO_RECORDS[0] / "derivatives").is_dir()
    assert not (tmp_path / "data" / "LOG").exists()


def test_sigkill_mid_step_leaves_the_01_output_as_it_was(tmp_path: Path) -> None:
    # A 0.1 script writing beside the raw data is killed half-way: the file at its
    # PATH_OUT keeps what it held (staged outputs only replace it whole), and a rerun
    # finishes the step.
    root = write_v01_dataset(tmp_path)
    marker = tmp_path / "started"
    score = root / "scripts" / "survey" / "score.py"
    source = score.read_text()
    assert "        answers = self.path.input.read_text().split()\n" in source
    score.write_text(
        source.replace(
            "        answers = self.path.input.read_text().split()\n",
            "        answers = self.path.input.read_text().split()\n"
            "        self.path.output.write_text('half-')\n"
            f"        __import__('pathlib').Path({str(marker)!r}).write_text('x')\n"
            "        __import__('time').sleep(60)\n",
        )
    )
    out = root / "data" / "OUT" / B / "survey-score.txt"
    code = f"from sinagot import Dataset; Dataset({str(root)!r}).get({B!r}).run(force=True)"
    child = kill_when_started([sys.executable, "-c", code], marker)
    assert child.returncode == -signal.SIGKILL
    assert out.read_text() == "by hand\n"
    assert (root / "data" / "SURVEY" / B / "answers.txt").read_text() == "4 5\n"
    score.write_text(score.read_text().replace("        __import__('time').sleep(60)\n", ""))
    report = Dataset(root).get(B).run(force=True)
    assert report.ok and out.read_text() == "9"
    staging = root / "data" / ".sinagot" / "records" / B / "derivatives" / ".staging"
    assert not [p for p in staging.iterdir() if p.is_dir()]
