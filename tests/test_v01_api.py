"""Sinagot 0.1's API and import names: model files, scopes, steps, statuses and counts."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pandas as pd
import pytest

import sinagot
from sinagot import Dataset
from v01_support import A, B, write_v01_dataset


@pytest.fixture
def ds(tmp_path: Path) -> Dataset:
    return Dataset(write_v01_dataset(tmp_path))


def test_the_names_user_code_imports() -> None:
    from sinagot.models import Dataset as ModelsDataset
    from sinagot.models import Record, RecordCollection, Scope, Step, StepCollection, Subset
    from sinagot.models.exceptions import NoModalityError, NotFoundError, NotUnitError
    from sinagot.plugins import DaskRunManager
    from sinagot.utils import LOG_STEP_LABEL, LOG_STEP_STATUS, StepStatus, record_log_file_path

    assert ModelsDataset is sinagot.Dataset and Record is sinagot.Record
    assert Subset is RecordCollection is sinagot.Subset
    assert issubclass(Subset, Scope) and issubclass(Record, Scope)
    assert Step.__name__ == "Step" and StepCollection.__name__ == "StepCollection"
    assert DaskRunManager.mode == "dask"
    assert (StepStatus.INIT, StepStatus.DATA_READY, StepStatus.PROCESSING) == (0, 10, 20)
    assert (StepStatus.DONE, StepStatus.ERROR, StepStatus.DATA_NOT_AVIABLE) == (30, 40, 41)
    assert (LOG_STEP_LABEL, LOG_STEP_STATUS) == ("step_label", "step_status")
    assert record_log_file_path(Path("/d"), "R") == Path("/d/LOG/R.log")
    for error in (NoModalityError, NotFoundError, NotUnitError):
        assert issubclass(error, sinagot.SinagotError)


def test_collections_has_count_all_first(ds: Dataset) -> None:
    assert ds.has(A) and not ds.has("REC-999999-Z")
    assert ds.count() == 2 and ds.MMN.count() == 1
    assert [rec.id for rec in ds.all()] == [A, B]
    assert all(isinstance(rec, sinagot.Record) for rec in ds.MMN.all())
    assert ds.first().id == A and ds.records.get(B).id == B
    assert ds.MMN.EEG.first() == ds.get(A).MMN.EEG


def test_tasks_and_modalities_iterate_sub_scopes(ds: Dataset) -> None:
    assert [s.task for s in ds.tasks()] == ["RS", "MMN", "Q"]
    assert [s.modality for s in ds.modalities()] == ["EEG", "survey", "notes"]
    rec = ds.get(A)
    assert [s.task for s in rec.tasks()] == ["RS", "MMN", "Q"]
    assert [s.modality for s in rec.RS.modalities()] == ["EEG", "notes"]
    assert list(ds.RS.tasks()) == [] and list(ds.EEG.modalities()) == []
    assert list(ds.iter_tasks()) == list(ds.tasks())


def test_custom_models_of_a_modality(ds: Dataset) -> None:
    survey = ds.survey
    assert type(survey).__name__ == "SurveySubset" and isinstance(survey, sinagot.Subset)
    assert survey.task == "Q"  # fixed by the class
    assert survey.hello() == f"subset of {A}, {B}"
    assert repr(survey) == "<SurveySubset instance | task: Q, modality: survey>"
    rec = survey.first()
    assert type(rec).__name__ == "SurveyRecord" and rec.hello() == f"record {A}"
    assert type(ds.get(B).survey).__name__ == "SurveyRecord"
    assert type(ds.EEG).__name__ == "RecordCollection"
    with pytest.raises(AttributeError):
        ds.EEG.survey  # noqa: B018


def test_a_name_neither_scope_nor_method_says_so(ds: Dataset) -> None:
    with pytest.raises(sinagot.ScopeError) as info:
        ds.cout()  # type: ignore[operator]
    message = str(info.value)
    assert "has no scope 'cout'" in message and "nor is it a method" in message
    assert "count" in message and "\n" not in message


def test_steps_get_first_count_and_script(ds: Dataset, tmp_path: Path) -> None:
    unit = ds.get(A).RS.EEG
    assert unit.steps.count() == 2
    step = unit.steps.get("power")
    assert step.label == "power" and step.id == A
    assert step.script.path.output == tmp_path / "data" / "OUT" / A / "RS-power.txt"
    assert unit.steps.first().label == "clean"
    assert [s.label for s in unit.steps.all()] == ["clean", "power"]
    assert [s.label for s in unit.steps.find("pow")] == ["power"]
    by_modality = ds.get(A).RS.steps.count()
    assert by_modality == {"EEG": 2, "notes": 0}
    assert ds.get(A).RS.steps.first()["notes"] is None
    # A subset's step: the script's paths keep {id}.
    assert ds.survey.steps.first().script.version() == "score v1"


def test_step_errors(ds: Dataset) -> None:
    with pytest.raises(sinagot.NoModalityError):
        sinagot.models.Step("score", ds)
    with pytest.raises(sinagot.NotFoundError, match="no step 'nope'"):
        sinagot.models.Step("nope", ds.survey)
    with pytest.raises(sinagot.NotUnitError):
        ds.survey.steps.first().status()
    with pytest.raises(sinagot.ArgumentError, match="run\\(force=True\\)"):
        ds.get(A).run(True)  # type: ignore[arg-type]
    with pytest.raises(sinagot.NotFoundError, match="its steps: clean, power"):
        ds.get(A).RS.run("score")


def test_step_statuses_as_01_showed_them(ds: Dataset, tmp_path: Path) -> None:
    from sinagot.utils import StepStatus

    assert ds.get(A).RS.EEG.steps.get("clean").status() == StepStatus.DATA_READY
    assert ds.get(A).RS.EEG.steps.get("power").status() == StepStatus.INIT
    assert ds.get(B).survey.steps.get("score").status() == StepStatus.DONE  # by hand
    # PROCESSING and ERROR come from the record's log, as 0.1 wrote it.
    log = tmp_path / "data" / "LOG" / f"{A}.log"
    log.parent.mkdir()
    line = {"task": "MMN", "modality": "EEG", "step_label": "clean", "step_status": 20}
    log.write_text(json.dumps({**line, "time": "2020-04-06T11:47:29"}) + "\n")
    step = ds.get(A).MMN.EEG.steps.get("clean")
    assert step.status() == StepStatus.PROCESSING
    step.run()
    assert step.status() == StepStatus.DONE


def test_a_failed_step_shows_error(ds: Dataset, tmp_path: Path) -> None:
    from sinagot.utils import StepStatus

    (tmp_path / "SURVEY_BROKEN").mkdir()
    (tmp_path / "data" / "SURVEY" / A / "answers.txt").write_text("not numbers\n")
    step = ds.get(A).survey.steps.get("score")
    report = step.run()
    assert report.failed == 1
    assert step.status() == StepStatus.ERROR
    logs = ds.get(A).logs()
    assert list(logs["step_status"])[:2] == [40, 20]  # newest first


def test_steps_status_is_a_dataframe(ds: Dataset) -> None:
    table = ds.get(A).steps.status()
    assert list(table.columns) == [
        "record_id",
        "task",
        "modality",
        "step_index",
        "step_label",
        "step_status",
    ]
    rows = [tuple(row) for row in table[["task", "modality", "step_index", "step_label"]].values]
    assert rows == [
        ("RS", "EEG", 1, "clean"),
        ("RS", "EEG", 2, "power"),
        ("MMN", "EEG", 1, "clean"),
        ("Q", "survey", 1, "score"),
        ("Q", "survey", 2, "norm"),
    ]
    assert list(table["step_status"]) == [10, 0, 10, 10, 0]
    everyone = ds.steps.status()
    assert len(everyone) == 5 + 5 and set(everyone["record_id"]) == {A, B}


def test_count_detail(ds: Dataset) -> None:
    record = ds.get(B).count_detail()
    assert [tuple(r) for r in record.values] == [
        ("RS", "EEG", 1),
        ("RS", "notes", 0),
        ("MMN", "EEG", 0),
        ("MMN", "notes", 0),
        ("Q", "survey", 1),
        ("Q", "notes", 0),
    ]
    assert [tuple(r) for r in ds.get(B).count_detail("task", "any").values] == [
        ("MMN", 0),
        ("Q", 1),
        ("RS", 1),
    ]
    everyone = ds.count_detail()
    expected = pd.DataFrame(
        [
            ("MMN", "EEG", 1),
            ("MMN", "notes", 0),
            ("Q", "notes", 0),
            ("Q", "survey", 2),
            ("RS", "EEG", 2),
            ("RS", "notes", 0),
        ],
        columns=["task", "modality", "count"],
    )
    pd.testing.assert_frame_equal(everyone, expected)
    with pytest.raises(ValueError, match="group_mode"):
        ds.get(B).count_detail("task", "some")


def test_an_edited_script_is_reloaded(ds: Dataset, tmp_path: Path) -> None:
    assert ds.survey.steps.first().script.version() == "score v1"
    file = tmp_path / "scripts" / "survey" / "score.py"
    file.write_text(file.read_text().replace("score v1", "score v2"))
    assert ds.survey.steps.first().script.version() == "score v2"


@pytest.mark.parametrize("mode", ["main_process", "dask"])
def test_run_step_label_and_force_on_both_runners(tmp_path: Path, mode: str) -> None:
    ds = Dataset(write_v01_dataset(tmp_path))
    norm = tmp_path / "data" / "OUT" / B / "survey-norm.txt"
    norm.write_text("before force\n")
    rec = ds.survey.get(B)
    rec.run(mode=mode)
    assert norm.read_text() == "before force\n"
    rec.run("score", force=True, mode=mode)
    assert norm.read_text() == "before force\n"
    rec.run(force=True, mode=mode)
    assert norm.read_text() == "norm 9"


def test_debug_raises_the_first_failure(ds: Dataset, tmp_path: Path) -> None:
    (tmp_path / "data" / "SURVEY" / A / "answers.txt").write_text("x\n")
    with pytest.raises(sinagot.ScriptError, match="ValueError"):
        ds.get(A).survey.run(debug=True)


def test_a_broken_model_file_is_a_clear_error(tmp_path: Path) -> None:
    root = write_v01_dataset(tmp_path)
    (root / "scripts" / "survey" / "models" / "subset.py").write_text(
        textwrap.dedent("from sinagot.models import Subset\nclass Other(Subset):\n    pass\n")
    )
    with pytest.raises(sinagot.ScriptError, match="defines no 'class SurveySubset"):
        Dataset(root).survey  # noqa: B018


def test_record_subset_exists_and_status_json(ds: Dataset) -> None:
    assert ds.get(B).MMN.subset == ds.MMN
    assert ds.get(A).MMN.exists() and not ds.get(B).MMN.exists()
    assert json.loads(ds.get(B).Q.status_json()) == {
        "Q": {
            "survey": [
                {"step_index": 1, "step_label": "score", "step_status": 30},
                {"step_index": 2, "step_label": "norm", "step_status": 10},
            ]
        }
    }
