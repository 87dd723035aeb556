"""Sinagot 0.1 configs load unchanged: a folder as the config, 0.1's keys, notes for those
ours spells differently, and the same clear errors for what is wrong."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from sinagot import ConfigError, Dataset
from sinagot.config import load_settings
from v01_support import CONFIG, write_v01_dataset


def test_a_folder_is_read_through_its_dataset_toml(tmp_path: Path) -> None:
    root = write_v01_dataset(tmp_path)
    settings = load_settings(root)
    assert settings.config_path == root / "dataset.toml"
    assert settings.dataset_dir == root / "data"
    assert settings.scripts_dir == root / "scripts"


def test_a_folder_without_dataset_toml_names_that_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        Dataset(tmp_path)
    message = str(info.value)
    assert "dataset.toml" in message and "permissions" not in message
    assert str(tmp_path) in message and "\n" not in message


def test_01_keys_are_read_as_ours_with_one_note_each(tmp_path: Path) -> None:
    settings = load_settings(write_v01_dataset(tmp_path))
    eeg, survey, notes = (settings.modalities[m] for m in ("EEG", "survey", "notes"))
    # tasks_scripts appended to the modality's scripts, for that task only
    assert eeg.scripts_for("RS") == ("clean", "power")
    assert eeg.scripts_for("MMN") == ("clean",)
    assert eeg.file_match == (True, False) and settings.file_match == (True, True)
    assert dict(survey.models) == {"subset": "SurveySubset", "record": "SurveyRecord"}
    assert notes.scripts == ()  # an empty [modalities.notes]
    assert settings.log_format == "%(asctime)s : %(message)s"
    dask = settings.dask
    assert (dask.n_workers, dask.processes, dask.threads_per_worker) == (1, False, 2)
    assert len(settings.notes) == 3
    path_note, tasks_note, dask_note = settings.notes
    assert "path.data: Sinagot 0.1's name, read as path.dataset" in path_note
    assert "[modalities.EEG.tasks.RS] scripts = [clean, power]" in tasks_note
    assert "read as [dask] n_workers = 1, threads_per_worker = 2, processes = False" in dask_note
    assert all("\n" not in note for note in settings.notes)


def test_notes_are_logged_when_the_dataset_opens(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="sinagot"):
        ds = Dataset(write_v01_dataset(tmp_path))
    logged = [r.getMessage() for r in caplog.records if r.getMessage().startswith("note: ")]
    assert len(logged) == 3
    # Sinagot 0.1's Dataset.config: the document as written.
    assert ds.config["dask"]["scheduler"]["mode"] == "local"
    assert ds.config["run"]["mode"] == "main_process"
    ds.config["run"]["mode"] = "changed"  # a copy: the dataset is not changed
    assert ds.config["run"]["mode"] == "main_process"


def test_asynchronous_true_is_accepted_with_a_note(tmp_path: Path) -> None:
    config = CONFIG.replace("asynchronous = false", "asynchronous = true")
    settings = load_settings(write_v01_dataset(tmp_path, config=config))
    assert any("dask.asynchronous" in note for note in settings.notes)


def test_data_path_replaces_the_configs_folder(tmp_path: Path) -> None:
    root = write_v01_dataset(tmp_path / "lab")
    other = tmp_path / "copy"
    (root / "data").rename(other)
    ds = Dataset(root, other)
    assert ds.data_path == other
    assert set(ds.ids()) == {"REC-210101-A", "REC-210102-B"}


def test_a_distributed_scheduler_is_our_address(tmp_path: Path) -> None:
    config = CONFIG.replace(
        """    scheduler.mode = "local"
    scheduler.n_workers = 1
    scheduler.processes = false
    scheduler.threads_per_worker = 2""",
        """    scheduler.mode = "distributed"
    scheduler.scheduler_address = "tcp://127.0.0.1:8786\"""",
    )
    settings = load_settings(write_v01_dataset(tmp_path, config=config))
    assert settings.dask.address == "tcp://127.0.0.1:8786"


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        ("file_match = [true, true]", "file_mach = [true, true]", "did you mean 'file_match'?"),
        ("file_match = [true, true]", "file_match = [true]", "records.file_match: got [True]"),
        ("scripts = './scripts'", "scripts = './scripts'\n    dataset = './data'", "conflicts"),
        ('scheduler.mode = "local"', 'scheduler.mode = "cloud"', "dask.scheduler.mode"),
        ("scheduler.n_workers = 1", "scheduler.n_wrokers = 1", "did you mean 'n_workers'?"),
        ("models.record = 'SurveyRecord'", "models.recrod = 'X'", "did you mean 'record'?"),
        ("tasks_scripts.RS = ['power']", "tasks_scripts.RS = 'power'", "tasks_scripts.RS"),
        ("tasks_scripts.RS = ['power']", "taks_scripts.RS = ['power']", "did you mean"),
    ],
)
def test_wrong_01_keys_are_one_line_errors(
    tmp_path: Path, old: str, new: str, expected: str
) -> None:
    assert old in CONFIG
    root = write_v01_dataset(tmp_path, config=CONFIG.replace(old, new))
    with pytest.raises(ConfigError) as info:
        load_settings(root)
    assert expected in str(info.value)
    assert "\n" not in str(info.value)


def test_a_model_class_without_its_file_is_an_error(tmp_path: Path) -> None:
    root = write_v01_dataset(tmp_path)
    (root / "scripts" / "survey" / "models" / "record.py").unlink()
    with pytest.raises(ConfigError, match=r"models\.record: class 'SurveyRecord' has no file"):
        load_settings(root)
