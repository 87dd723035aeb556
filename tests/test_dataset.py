from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from foundation_support import TWO_RECORDS, config_for, write_project
from sinagot import Dataset, RecordNotFoundError, RunReport, ScopeError, SinagotError, StepStatus
from sinagot.demo import DEMO_SCRIPTS
from sinagot.engine.internals import checksums

A, B = TWO_RECORDS


@pytest.fixture
def ds(tmp_path: Path) -> Dataset:
    return Dataset(write_project(tmp_path))


def _statuses(report: RunReport) -> dict[str, str]:
    return {str(r.key): str(r.status) for r in report.results}


def _ran(report: RunReport) -> set[str]:
    return {str(r.key) for r in report.results if r.status is StepStatus.RAN}


def test_seed_readme_reprs_and_scopes(ds: Dataset, tmp_path: Path) -> None:
    (tmp_path / "data" / "not-a-record").mkdir()
    assert repr(ds) == "<Dataset instance | task: None, modality: None>"
    assert ds.ids() == [A, B]
    rec = ds.get(A)
    assert repr(rec) == f"<Record instance | id: {A}, task: None, modality: None>"
    assert repr(ds.first()) == f"<Record instance | id: {A}, task: None, modality: None>"
    assert repr(ds.RS) == "<Subset instance | task: RS, modality: None>"
    assert repr(rec.EEG) == f"<Record instance | id: {A}, task: None, modality: EEG>"
    assert repr(ds.RS.EEG) == "<Subset instance | task: RS, modality: EEG>"
    assert repr(ds.EEG.RS) == "<Subset instance | task: RS, modality: EEG>"
    assert ds.RS.EEG == ds.EEG.RS and hash(ds.RS.EEG) == hash(ds.EEG.RS)
    assert ds.RS != ds.MMN and rec.EEG == ds.get(A).EEG
    assert repr(ds.HDC.behavior) == "<Subset instance | task: HDC, modality: behavior>"
    assert ds.RS.get(B) == ds.get(B).RS
    assert "RS" in dir(ds) and "behavior" in dir(ds.HDC)


def test_invalid_scopes_and_ids(ds: Dataset) -> None:
    with pytest.raises(AttributeError) as info:
        ds.RS.behavior  # noqa: B018
    assert isinstance(info.value, ScopeError)
    assert "'behavior'" in str(info.value) and "valid scopes: EEG, clinical" in str(info.value)
    with pytest.raises(AttributeError, match="valid scopes: RS, MMN, HDC, EEG, clinical, behavior"):
        ds.XYZ  # noqa: B018
    with pytest.raises(AttributeError, match="none"):
        ds.RS.EEG.MMN  # noqa: B018
    assert not hasattr(ds, "XYZ")
    with pytest.raises(RecordNotFoundError, match="'nope'") as not_found:
        ds.get("nope")
    assert isinstance(not_found.value, SinagotError) and isinstance(not_found.value, KeyError)


def test_run_logs_steps_and_reruns_nothing(ds: Dataset, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="sinagot"):
        report = ds.run()
    assert isinstance(report, RunReport)
    assert (report.ran, report.skipped, report.failed, report.missing_input) == (20, 0, 0, 0)
    messages = [r.getMessage() for r in caplog.records]
    assert sum(m.startswith("Begin step run") for m in messages) == 20
    assert sum(m.startswith("Step run finished") for m in messages) == 20
    assert "HDC/behavior/accuracy" in str(report) and report.to_dict()["ran"] == 20
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="sinagot"):
        again = ds.run()
    assert (again.ran, again.skipped) == (0, 20)
    assert not any(r.getMessage().startswith("Begin step run") for r in caplog.records)
    assert "nothing to do" in str(again)


def test_outputs_and_provenance_on_disk(ds: Dataset, tmp_path: Path) -> None:
    ds.get(A).RS.run()
    derivatives = tmp_path / "data" / A / "derivatives"
    bands = json.loads((derivatives / "RS" / "EEG" / "bands.json").read_text())
    assert set(bands) == {"Fz", "Cz", "Pz", "Oz"} and bands["Cz"]["alpha"] > bands["Cz"]["beta"]
    provenance = json.loads(
        (derivatives / ".provenance" / "RS_EEG_spectrum@sinagot.json").read_text()
    )
    assert provenance["inputs"].keys() == {f"{A}/derivatives/RS/EEG/filtered.csv"}
    assert provenance["outputs"].keys() == {"RS/EEG/bands.json"}
    assert provenance["parameters"]["bands"]["alpha"] == [8, 13]
    assert provenance["status"] == "success" and provenance["script"]["name"] == "spectrum"
    assert not (tmp_path / "data" / B / "derivatives").exists()
    assert not list(derivatives.joinpath(".staging").iterdir())


def test_scoped_runs(ds: Dataset) -> None:
    assert _ran(ds.RS.EEG.run()) == {
        f"{r}/RS/EEG/{s}" for r in TWO_RECORDS for s in ("preprocess", "spectrum")
    }
    assert _ran(ds.get(B).HDC.behavior.run()) == {f"{B}/HDC/behavior/accuracy"}
    assert _ran(ds.get(A).clinical.run()) == {
        f"{A}/{t}/clinical/score" for t in ("RS", "MMN", "HDC")
    }


def test_one_changed_byte_reruns_exactly_downstream(ds: Dataset, tmp_path: Path) -> None:
    ds.run()
    raw = tmp_path / "data" / A / "MMN" / "EEG" / "raw.csv"
    lines = raw.read_text().splitlines()
    lines[10] = lines[10][:-1] + ("1" if lines[10][-1] != "1" else "2")
    raw.write_text("\n".join(lines) + "\n")
    assert _ran(ds.run()) == {f"{A}/MMN/EEG/preprocess", f"{A}/MMN/EEG/spectrum"}


def test_script_edit_and_force(ds: Dataset, tmp_path: Path) -> None:
    ds.run()
    spectrum = tmp_path / "scripts" / "EEG" / "spectrum.py"
    spectrum.write_text(spectrum.read_text().replace('"beta": [13, 30]', '"beta": [13, 25]'))
    assert _ran(ds.run()) == {
        f"{r}/{t}/EEG/spectrum" for r in TWO_RECORDS for t in ("RS", "MMN", "HDC")
    }
    preprocess = tmp_path / "scripts" / "EEG" / "preprocess.py"
    preprocess.write_text(preprocess.read_text().replace('{"window": 5}', '{"window": 3}'))
    report = ds.run()
    assert _ran(report) == {
        f"{r}/{t}/EEG/{s}"
        for r in TWO_RECORDS
        for t in ("RS", "MMN", "HDC")
        for s in ("preprocess", "spectrum")
    }
    assert ds.run(force=True).ran == 20


def test_unchanged_files_are_not_hashed_again(
    ds: Dataset, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ds.run()
    calls: list[Path] = []
    real = checksums.md5_file

    def counting(path: Path) -> str:
        calls.append(path)
        return real(path)

    monkeypatch.setattr(checksums, "md5_file", counting)
    assert ds.run().skipped == 20
    assert calls == []
    raw = tmp_path / "data" / B / "RS" / "clinical" / "answers.json"
    raw.write_bytes(raw.read_bytes())  # same bytes, new mtime: hashed once, still up to date
    assert ds.run().skipped == 20
    assert calls == [raw.resolve()]


FAILING = """
from sinagot import ScriptTemplate

class Script(ScriptTemplate):
    PATH_IN = ("{id}", "{task}", "clinical", "answers.json")
    PATH_OUT = {"score": ("{id}", "derivatives", "{task}", "clinical", "score.json"),
                "extra": ("{id}", "derivatives", "{task}", "clinical", "extra")}

    def run(self):
        self.path.output["score"].write_text("partial")
        self.logger.info("wrote a partial score")
        if self.id == "REC-200331-A" and self.task == "MMN":
            raise ValueError("questionnaire is incomplete")
        self.path.output["extra"].mkdir()
        (self.path.output["extra"] / "a.txt").write_text("a")
"""


def test_failing_script_is_isolated_and_leaves_nothing_behind(tmp_path: Path) -> None:
    ds = Dataset(write_project(tmp_path, scripts={**DEMO_SCRIPTS, "clinical/score.py": FAILING}))
    report = ds.run()
    assert (report.failed, report.ran) == (1, 19)
    assert not report.ok
    key = f"{A}/MMN/clinical/score"
    assert "ValueError: questionnaire is incomplete" in report.errors[key]
    derivatives = tmp_path / "data" / A / "derivatives"
    log = (derivatives / ".logs" / "MMN_clinical_score.log").read_text()
    assert (
        "wrote a partial score" in log
        and "Traceback" in log
        and "questionnaire is incomplete" in log
    )
    assert not (derivatives / "MMN" / "clinical").exists()
    assert not (derivatives / ".provenance" / "MMN_clinical_score@sinagot.json").exists()
    assert (derivatives / "RS" / "clinical" / "extra" / "a.txt").read_text() == "a"
    assert not list((derivatives / ".staging").iterdir())
    assert f"error: {key}" in str(report)
    again = ds.run()
    assert _statuses(again)[key] == "failed" and again.ran == 0


def test_missing_input_and_upstream_failure(tmp_path: Path) -> None:
    broken_preprocess = DEMO_SCRIPTS["EEG/preprocess.py"].replace(
        "    def run(self):\n",
        "    def run(self):\n        if self.task == 'HDC':\n            raise RuntimeError('boom')\n",
    )
    ds = Dataset(
        write_project(tmp_path, scripts={**DEMO_SCRIPTS, "EEG/preprocess.py": broken_preprocess})
    )
    for path in (tmp_path / "data" / B / "MMN" / "clinical").iterdir():
        path.unlink()
    statuses = _statuses(ds.run())
    assert statuses[f"{B}/MMN/clinical/score"] == "missing input"
    assert statuses[f"{A}/HDC/EEG/preprocess"] == "failed"
    assert statuses[f"{A}/HDC/EEG/spectrum"] == "skipped: upstream failed"
    assert statuses[f"{A}/RS/EEG/spectrum"] == "ran"
    (tmp_path / "data" / B / "MMN" / "clinical").rmdir()
    assert _statuses(ds.get(B).MMN.run())[f"{B}/MMN/clinical/score"] == "missing input"


def test_broken_script_file_fails_its_steps_only(tmp_path: Path) -> None:
    ds = Dataset(
        write_project(tmp_path, scripts={**DEMO_SCRIPTS, "behavior/accuracy.py": "def oops(:\n"})
    )
    report = ds.run()
    assert report.failed == 2 and report.ran == 18
    assert (
        "accuracy.py: importing failed with SyntaxError"
        in report.errors[f"{A}/HDC/behavior/accuracy"]
    )


def test_dependency_order_not_config_order_and_cycles(tmp_path: Path) -> None:
    config = config_for({"EEG": ["spectrum", "preprocess"]}, {"RS": ["EEG"]})
    ds = Dataset(
        write_project(
            tmp_path,
            config=config,
            scripts={k: v for k, v in DEMO_SCRIPTS.items() if k.startswith("EEG")},
        )
    )
    order = [str(r.key) for r in ds.run().results]
    assert order == [
        f"{A}/RS/EEG/preprocess",
        f"{A}/RS/EEG/spectrum",
        f"{B}/RS/EEG/preprocess",
        f"{B}/RS/EEG/spectrum",
    ]

    ping = """
from sinagot import ScriptTemplate
class Script(ScriptTemplate):
    PATH_IN = ("{id}", "derivatives", "{task}", "%s")
    PATH_OUT = ("{id}", "derivatives", "{task}", "%s")
    def run(self):
        self.path.output.write_text("x")
"""
    cyclic = tmp_path / "cyclic"
    config = config_for({"EEG": ["ping", "pong"]}, {"RS": ["EEG"]})
    ds = Dataset(
        write_project(
            cyclic,
            config=config,
            scripts={"EEG/ping.py": ping % ("b", "a"), "EEG/pong.py": ping % ("a", "b")},
        )
    )
    report = ds.run()
    assert report.failed == 4
    assert "dependency cycle between RS/EEG/ping, RS/EEG/pong" in report.errors[f"{A}/RS/EEG/ping"]


def test_deleted_upstream_output_is_recomputed(ds: Dataset, tmp_path: Path) -> None:
    ds.run()
    (tmp_path / "data" / A / "derivatives" / "RS" / "EEG" / "filtered.csv").unlink()
    report = ds.run()
    assert _ran(report) == {f"{A}/RS/EEG/preprocess"}
    assert report.results[0].reason == "outputs missing"
