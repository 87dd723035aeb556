from __future__ import annotations

import logging
import textwrap
from pathlib import Path

import pytest

from sinagot.engine.internals import (
    ScriptPaths,
    ScriptTemplate,
    format_paths,
    load_script,
    records_layout_problem,
    shape_paths,
)
from sinagot.errors import ScriptError

GOOD = """
from sinagot import ScriptTemplate

class Script(ScriptTemplate):
    PATH_IN = {"eeg": ("{id}", "{task}", "EEG", "raw.csv"), "clinical": ("{id}", "{task}", "clinical")}
    PATH_OUT = ("{id}", "derivatives", "{task}", "EEG", "out.csv")
    PARAMETERS = {"window": 5, "bands": (1, 4)}

    def run(self):
        self.path.output.write_text(self.id + self.task)
"""


def _write(tmp_path: Path, source: str, name: str = "script") -> Path:
    path = tmp_path / "EEG" / f"{name}.py"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(source))
    return path


def test_load_valid_script_and_shape_paths(tmp_path: Path) -> None:
    loaded = load_script(_write(tmp_path, GOOD), "EEG", "script")
    assert loaded.parameters == {"window": 5, "bands": [1, 4]}
    assert len(loaded.source_md5) == 32
    assert format_paths(loaded.path_in, "REC-1", "RS") == (
        "REC-1/RS/EEG/raw.csv",
        "REC-1/RS/clinical",
    )
    inputs = shape_paths(loaded.path_in, "REC-1", "RS", tmp_path)
    assert inputs == {
        "eeg": tmp_path / "REC-1/RS/EEG/raw.csv",
        "clinical": tmp_path / "REC-1/RS/clinical",
    }
    output = shape_paths(loaded.path_out, "REC-1", "RS", tmp_path / "staging", skip=2)
    assert output == tmp_path / "staging/RS/EEG/out.csv"
    output.parent.mkdir(parents=True)
    script = loaded.cls(
        id="REC-1",
        task="RS",
        path=ScriptPaths(input=inputs, output=output),
        logger=logging.getLogger("t"),
    )
    assert isinstance(script, ScriptTemplate)
    script.run()
    assert output.read_text() == "REC-1RS"


def test_edited_script_is_reimported(tmp_path: Path) -> None:
    path = _write(tmp_path, GOOD)
    first = load_script(path, "EEG", "script")
    path.write_text(textwrap.dedent(GOOD).replace('"window": 5', '"window": 7'))
    second = load_script(path, "EEG", "script")
    assert first.source_md5 != second.source_md5
    assert second.parameters["window"] == 7


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        (GOOD.replace("{task}", "{subject}", 1), "only {id} and {task} exist"),
        (
            GOOD.replace('"EEG", "raw.csv"', '"..", "raw.csv"'),
            "give one plain name per part (paths are relative to the dataset, with {id} and"
            " {task} anywhere)",
        ),
        (GOOD.replace("def run(self):", "def run(self) :::"), "importing failed with SyntaxError"),
        ("import does_not_exist_anywhere\n", "importing failed with ModuleNotFoundError"),
        ("x = 1\n", "defines no 'class Script(ScriptTemplate)'"),
        (
            GOOD.replace('"derivatives", "{task}"', '"derivatives", ".hidden"'),
            "must not use a hidden name",
        ),
        (
            GOOD.replace('"bands": (1, 4)', '"bands": object()'),
            "PARAMETERS must be a JSON-compatible dict",
        ),
        (GOOD.replace("    PATH_IN = ", "    PATH_INN = "), "Script has no PATH_IN"),
    ],
)
def test_broken_scripts_raise_script_error_naming_the_file(
    tmp_path: Path, source: str, expected: str
) -> None:
    path = _write(tmp_path, source)
    with pytest.raises(ScriptError) as info:
        load_script(path, "EEG", "script")
    assert str(path) in str(info.value)
    assert expected in str(info.value)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    ("replace", "problem"),
    [
        (("", ""), None),
        (('"{id}", "{task}", "EEG", "raw.csv"', '"MFF", "{id}-{task}.mff"'), "PATH_IN"),
        (
            ('("{id}", "derivatives", "{task}", "EEG", "out.csv")', '("OUT", "{id}.csv")'),
            "PATH_OUT",
        ),
    ],
)
def test_paths_are_free_and_the_records_layout_is_told_apart(
    tmp_path: Path, replace: tuple[str, str], problem: str | None
) -> None:
    # Paths are relative to the dataset with {id} and {task} anywhere (Sinagot 0.1's
    # layout); those that do not fit the records layout say which.
    loaded = load_script(_write(tmp_path, GOOD.replace(*replace)), "EEG", "script")
    found = records_layout_problem(loaded)
    if problem is None:
        assert found is None
    else:
        assert found is not None and found.startswith(problem)


def test_a_script_without_run_keeps_sinagot_01s_template(tmp_path: Path) -> None:
    source = GOOD.replace(
        "    def run(self):\n        self.path.output.write_text(self.id + self.task)\n", ""
    )
    loaded = load_script(_write(tmp_path, source), "EEG", "script")
    assert not loaded.implements_run
    script = loaded.cls(
        id="R",
        task="RS",
        path=ScriptPaths(input=tmp_path, output=tmp_path / "o"),
        logger=logging.getLogger("t"),
    )
    script.run()  # 0.1's template: says "Running ..." and writes nothing
    assert not (tmp_path / "o").exists()
