"""A small dataset written as Sinagot 0.1 users wrote theirs: its layout, config and models.

Records are found in file names (``RAW/REC-210101-A-RS.eeg/`` folders, survey files),
outputs go beside the raw data, one output exists already (written by hand, as 0.1
left it), and the survey modality has custom Subset and Record classes.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

A, B = "REC-210101-A", "REC-210102-B"

CONFIG = """
[path]
    data = './data'
    scripts = './scripts'

[log]
    name = "lab"
    format = "%(asctime)s : %(message)s"
    level = 'INFO'

[records]
    id_pattern = "REC-[\\\\d]{6}-[A-Z]"
    file_match = [true, true]

[run]
    mode = "main_process"

[dask]
    scheduler.mode = "local"
    scheduler.n_workers = 1
    scheduler.processes = false
    scheduler.threads_per_worker = 2
    asynchronous = false

[modalities]
    [modalities.EEG]
        file_match = [true, false]
        scripts = ['clean']
        tasks_scripts.RS = ['power']
    [modalities.survey]
        models.subset = 'SurveySubset'
        models.record = 'SurveyRecord'
        scripts = ['score', 'norm']
    [modalities.notes]

[tasks]
    [tasks.RS]
        modalities = ["notes", "EEG"]
    [tasks.MMN]
        modalities = ["notes", "EEG"]
    [tasks.Q]
        modalities = ["notes", "survey"]
"""

SCRIPTS = {
    "EEG/clean.py": """
        from sinagot import ScriptTemplate

        class Script(ScriptTemplate):
            PATH_IN = ("RAW", "{id}-{task}.eeg")
            PATH_OUT = ("CLEAN", "{id}-{task}.txt")

            def run(self):
                signal = (self.path.input / "signal.txt").read_text()
                self.path.output.write_text(signal.upper())
    """,
    "EEG/power.py": """
        from sinagot import ScriptTemplate

        class Script(ScriptTemplate):
            PATH_IN = ("CLEAN", "{id}-{task}.txt")
            PATH_OUT = ("OUT", "{id}", "{task}-power.txt")

            def run(self):
                self.path.output.write_text(str(len(self.path.input.read_text())))
    """,
    "survey/score.py": """
        from sinagot import ScriptTemplate

        class Script(ScriptTemplate):
            PATH_IN = ("SURVEY", "{id}", "answers.txt")
            PATH_OUT = ("OUT", "{id}", "survey-score.txt")

            def run(self):
                answers = self.path.input.read_text().split()
                self.path.output.write_text(str(sum(int(a) for a in answers)))

            def version(self):
                return "score v1"
    """,
    "survey/norm.py": """
        from sinagot import ScriptTemplate

        class Script(ScriptTemplate):
            PATH_IN = ("OUT", "{id}", "survey-score.txt")
            PATH_OUT = ("OUT", "{id}", "survey-norm.txt")

            def run(self):
                self.path.output.write_text("norm " + self.path.input.read_text())
    """,
    "survey/models/subset.py": """
        from sinagot.models import Subset

        class SurveySubset(Subset):
            task = "Q"

            def hello(self):
                return "subset of " + ", ".join(self.ids())
    """,
    "survey/models/record.py": """
        from sinagot.models import Record

        class SurveyRecord(Record):
            task = "Q"

            def hello(self):
                return "record " + self.id
    """,
}


def write_v01_dataset(root: Path, *, config: str = CONFIG) -> Path:
    """Write the dataset under ``root``; returns its folder (which holds ``dataset.toml``)."""
    data = root / "data"
    for record, tasks in ((A, ("RS", "MMN")), (B, ("RS",))):
        for task in tasks:
            folder = data / "RAW" / f"{record}-{task}.eeg"
            folder.mkdir(parents=True)
            (folder / "signal.txt").write_text(f"signal of {record} {task}\n")
    (data / "SURVEY" / A).mkdir(parents=True)
    (data / "SURVEY" / A / "answers.txt").write_text("1 2 3\n")
    (data / "SURVEY" / B).mkdir(parents=True)
    (data / "SURVEY" / B / "answers.txt").write_text("4 5\n")
    # Scored by hand before Sinagot: Sinagot 0.1 showed it as DONE.
    (data / "OUT" / B).mkdir(parents=True)
    (data / "OUT" / B / "survey-score.txt").write_text("by hand\n")
    # Not records: wrong names, and a hidden folder.
    (data / "RAW" / "phantom-RS.eeg").mkdir()
    (data / "RAW" / ".trash").mkdir()
    for name, source in SCRIPTS.items():
        path = root / "scripts" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(source))
    (root / "dataset.toml").write_text(config)
    return root
