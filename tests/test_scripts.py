from __future__ import annotations

import logging
import textwrap
from pathlib import Path

import pytest

from sinagot.errors import ScriptError
from sinagot.scripts import ScriptPaths, ScriptTemplate, format_paths, load_script, shape_paths

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
        (
            GOOD.replace(
                '("{id}", "derivatives", "{task}", "EEG", "out.csv")',
                '("{id}", "{task}", "EEG", "raw.csv")',
            ),
            "must start with ('{id}', 'derivatives', ...)",
        ),
        (GOOD.replace("{task}", "{subject}", 1), "only {id} and {task} exist"),
        (
            GOOD.replace('"{id}", "{task}", "EEG", "raw.csv"', '"data", "EEG"'),
            "must start with '{id}'",
        ),
        (GOOD.replace('"EEG", "raw.csv"', '"..", "raw.csv"'), "give one plain name per part"),
        (GOOD.replace("def run(self):", "def run(self) :::"), "importing failed with SyntaxError"),
        ("import does_not_exist_anywhere\n", "importing failed with ModuleNotFoundError"),
        ("x = 1\n", "defines no 'class Script(ScriptTemplate)'"),
        (
            GOOD.replace(
                "    def run(self):\n        self.path.output.write_text(self.id + self.task)\n", ""
            ),
            "does not implement run()",
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
