"""The engine with a store whose files live elsewhere (as a remote store's cache does)."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import pytest

from foundation_support import TWO_RECORDS, write_project
from sinagot import Dataset, StepStatus
from sinagot.connectors import DataRow, LocalStore
from sinagot.engine.internals import checksums

A, _ = TWO_RECORDS


class MirrorStore(LocalStore):
    """Data and derivatives in ``remote``; scripts work in ``work``; digests come from the "server"."""

    def __init__(self, remote: Path, work: Path) -> None:
        super().__init__(remote)
        self._work = work

    @property
    def local_root(self) -> Path:
        return self._work

    def populate_row(self, row: DataRow) -> None:
        super().populate_row(row)
        for path, entry in list(row.entries.items()):
            if not entry.is_derivative:
                folder = self._primary_dir(entry)
                digests = {
                    f.name: hashlib.md5(f.read_bytes()).hexdigest() for f in folder.iterdir()
                }
                row.add_entry(path, uri=entry.uri, checksums=digests)


def test_inputs_are_linked_in_and_server_digests_used(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = write_project(tmp_path)
    remote, work = tmp_path / "data", tmp_path / "work"
    ds = Dataset(config, store=MirrorStore(remote, work))
    hashed: list[Path] = []
    real = checksums.md5_file
    monkeypatch.setattr(checksums, "md5_file", lambda path: hashed.append(path) or real(path))

    report = ds.run()
    assert report.ran == 20 and report.ok
    assert hashed == []  # every input digest came from the store
    raw = work / A / "RS" / "EEG" / "raw.csv"
    assert raw.read_bytes() == (remote / A / "RS" / "EEG" / "raw.csv").read_bytes()
    assert raw.stat().st_ino == (remote / A / "RS" / "EEG" / "raw.csv").stat().st_ino
    assert (remote / A / "derivatives" / "RS" / "EEG" / "bands.json").is_file()
    assert (
        remote / A / "derivatives" / ".provenance" / "RS_EEG_bands@sinagot.json"
    ).exists() is False
    assert (remote / A / "derivatives" / ".provenance" / "RS_EEG_spectrum@sinagot.json").is_file()

    # A fresh work tree: everything is up to date; upstream outputs come back from the store.
    shutil.rmtree(work)
    again = ds.run()
    assert {r.status for r in again.results} == {StepStatus.UP_TO_DATE}
    assert (work / A / "derivatives" / "RS" / "EEG" / "filtered.csv").is_file()
    assert not (work / A / "derivatives" / "RS" / "EEG" / "bands.json").exists()
