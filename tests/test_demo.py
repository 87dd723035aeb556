from __future__ import annotations

from pathlib import Path

from sinagot import Dataset
from sinagot.demo import DEMO_RECORDS, DEMO_SCRIPTS, write_demo


def test_write_demo_once_and_keep_user_edits(tmp_path: Path) -> None:
    config = write_demo(tmp_path)
    assert config == tmp_path / "sinagot.toml"
    for name in DEMO_SCRIPTS:
        assert (tmp_path / "scripts" / name).is_file()
    assert sorted(p.name for p in (tmp_path / "data").iterdir()) == sorted(DEMO_RECORDS)
    assert (tmp_path / "data" / "REC-200331-A" / "HDC" / "behavior" / "responses.csv").is_file()
    assert not (tmp_path / "data" / "REC-200331-A" / "RS" / "behavior").exists()
    edited = tmp_path / "scripts" / "clinical" / "score.py"
    edited.write_text(edited.read_text() + "\n# edited\n")
    assert write_demo(tmp_path) == config
    assert edited.read_text().endswith("# edited\n")


def test_demo_dataset_matches_the_seed_readme(tmp_path: Path) -> None:
    ds = Dataset(write_demo(tmp_path))
    assert ds.ids() == list(DEMO_RECORDS)
    assert repr(ds.first()) == "<Record instance | id: REC-200331-A, task: None, modality: None>"
    report = ds.get("REC-200331-B").run()
    assert (report.ran, report.failed) == (10, 0)
    assert ds.HDC.behavior.run().ran == len(DEMO_RECORDS) - 1
