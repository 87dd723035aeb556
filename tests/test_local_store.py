from pathlib import Path

import pytest

from sinagot.connectors import DataRow, DataTree, FileSet, LocalStore
from sinagot.demo import DEMO_RECORDS, write_demo_recordings
from sinagot.errors import RemoteNotFoundError, StoreError, UnsafeNameError


@pytest.fixture
def store(tmp_path: Path) -> LocalStore:
    write_demo_recordings(tmp_path / "data", DEMO_RECORDS[:2])
    return LocalStore(tmp_path / "data")


def _row(store: LocalStore, row_id: str) -> DataRow:
    row = DataRow(row_id)
    store.populate_row(row)
    return row


def test_tree_lists_record_folders_in_order_and_skips_hidden(store: LocalStore) -> None:
    (store.local_root / ".sinagot").mkdir()
    tree = DataTree()
    store.populate_tree(tree)
    assert [row.id for row in tree] == list(DEMO_RECORDS[:2])


def test_missing_dataset_folder_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(RemoteNotFoundError, match="does not exist"):
        LocalStore(tmp_path / "nope").populate_tree(DataTree())


def test_row_has_primary_entries_per_task_and_modality(store: LocalStore) -> None:
    row = _row(store, "REC-200331-A")
    assert sorted(row.entries) == [
        "HDC/EEG",
        "HDC/behavior",
        "HDC/clinical",
        "MMN/EEG",
        "MMN/clinical",
        "RS/EEG",
        "RS/clinical",
    ]
    entry = row.entries["RS/EEG"]
    assert not entry.is_derivative
    fileset = store.get_fileset(entry)
    assert fileset.names == ("raw.csv",)
    assert next(fileset.paths()).is_file()


def test_derivative_round_trip_provenance_marks_completion(
    store: LocalStore, tmp_path: Path
) -> None:
    row = _row(store, "REC-200331-A")
    entry = store.create_fileset_entry("RS_EEG_preprocess@sinagot", row)
    outside = tmp_path / "work"
    (outside / "RS" / "EEG").mkdir(parents=True)
    (outside / "RS" / "EEG" / "filtered.csv").write_text("1,2\n")
    stored = store.put_fileset(FileSet(outside, ("RS/EEG/filtered.csv",)), entry)
    assert (stored.root / "RS/EEG/filtered.csv").read_text() == "1,2\n"
    # files without provenance are not a complete derivative
    assert "RS_EEG_preprocess@sinagot" not in _row(store, "REC-200331-A").entries
    with pytest.raises(RemoteNotFoundError, match="not complete"):
        store.get_fileset(entry)
    store.put_fileset_provenance({"outputs": {"RS/EEG/filtered.csv": "x"}}, entry)
    reread = _row(store, "REC-200331-A").entries["RS_EEG_preprocess@sinagot"]
    assert store.get_fileset_provenance(reread) == {"outputs": {"RS/EEG/filtered.csv": "x"}}
    assert store.get_fileset(reread).names == ("RS/EEG/filtered.csv",)
    assert not list(stored.root.rglob("*.tmp"))


def test_primary_data_can_never_be_written(store: LocalStore) -> None:
    row = _row(store, "REC-200331-A")
    with pytest.raises(StoreError, match="not a derivative path"):
        store.create_fileset_entry("RS/EEG", row)
    with pytest.raises(StoreError, match="refusing to write acquired data"):
        store.put_fileset(FileSet(store.local_root, ()), row.entries["RS/EEG"])


@pytest.mark.parametrize("name", ["../evil@x", "a/b@x", ".hidden@x", "ok@../x"])
def test_unsafe_derivative_names_are_refused(store: LocalStore, name: str) -> None:
    with pytest.raises(UnsafeNameError):
        store.create_fileset_entry(name, _row(store, "REC-200331-A"))


@pytest.mark.parametrize("output", ["../escape.csv", "/abs.csv", "a/../../b", "nul\x00"])
def test_unsafe_output_names_are_refused(store: LocalStore, output: str) -> None:
    entry = store.create_fileset_entry("x@p", _row(store, "REC-200331-A"))
    with pytest.raises(UnsafeNameError):
        store.put_fileset(FileSet(store.local_root, (output,)), entry)


def test_fields_and_their_provenance(store: LocalStore) -> None:
    row = _row(store, "REC-200331-A")
    entry = store.create_field_entry("alpha_power@sinagot", row)
    with pytest.raises(RemoteNotFoundError):
        store.get_field(entry)
    store.put_field([1.5, 2.5], entry)
    store.put_field_provenance({"script": "spectrum"}, entry)
    assert store.get_field(entry) == [1.5, 2.5]
    assert store.get_field_provenance(entry) == {"script": "spectrum"}


def test_corrupt_provenance_file_is_a_clear_error(store: LocalStore) -> None:
    row = _row(store, "REC-200331-A")
    entry = store.create_fileset_entry("x@p", row)
    store.put_fileset_provenance({"outputs": {}}, entry)
    provenance_file = store.local_root / "REC-200331-A/derivatives/.provenance/x@p.json"
    provenance_file.write_text("{not json")
    with pytest.raises(StoreError, match="delete it to recompute"):
        store.get_fileset_provenance(entry)


def test_frameset_definitions_round_trip(store: LocalStore) -> None:
    assert store.load_frameset_definition("ds", "main") is None
    store.save_frameset_definition("ds", {"columns": ["RS/EEG"]}, "main")
    assert store.load_frameset_definition("ds", "main") == {"columns": ["RS/EEG"]}
    tree = DataTree()
    store.populate_tree(tree)
    assert len(tree) == 2  # the definitions folder is hidden
