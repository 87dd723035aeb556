"""The engine's deferred publication, which the daemon's uploading phase is built on."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import pytest

from foundation_support import TWO_RECORDS, write_project
from sinagot import RunReport, StepResult
from sinagot.config import Settings, load_settings
from sinagot.connectors import DERIVATIVES_DIR, DataRow, LocalStore
from sinagot.engine import RunHooks, Scope, run_scope
from sinagot.engine.internals import (
    PENDING_DIR,
    Commit,
    Progress,
    SerialRunner,
    StepSpec,
    Watch,
    publish_pending,
)

RECORD = TWO_RECORDS[0]
STEPS = 10  # the demo's steps of one record


class _Killed(Exception):
    """The process dies as the run's publishing phase starts."""


def _kill() -> None:
    raise _Killed


class _Recording(SerialRunner):
    def run(
        self, specs: Sequence[StepSpec], commit: Commit, progress: Progress, watch: Watch
    ) -> list[StepResult]:
        self.results = super().run(specs, commit, progress, watch)
        return self.results


def _run_until_publishing(settings: Settings, store: LocalStore, scope: Scope) -> RunReport:
    """A daemon's run killed before its uploads: what its steps did."""
    runner = _Recording()
    with pytest.raises(_Killed):
        run_scope(
            settings,
            store,
            scope,
            runner=runner,
            defer_publication=True,
            hooks=RunHooks(publishing=_kill),
        )
    return RunReport(tuple(runner.results), seconds=0.0, mode=runner.mode)


def _row(store: LocalStore) -> DataRow:
    row = DataRow(id=RECORD)
    store.populate_row(row)
    return row


def test_pending_results_are_kept_then_published_once(tmp_path: Path) -> None:
    settings = load_settings(write_project(tmp_path, records=(RECORD,)))
    assert settings.dataset_dir is not None
    store = LocalStore(settings.dataset_dir)
    derivatives = settings.dataset_dir / RECORD / DERIVATIVES_DIR
    pending = derivatives / PENDING_DIR
    scope = Scope(records=(RECORD,))

    first = _run_until_publishing(settings, store, scope)
    assert first.ran == STEPS and first.ok
    assert len(list(pending.glob("*.json"))) == STEPS
    assert not (derivatives / ".provenance").exists()  # nothing stored yet

    # A restart before the upload: nothing reruns, the pending results stand.
    again = _run_until_publishing(settings, store, scope)
    assert again.ran == 0 and again.skipped == STEPS

    # An output changed behind our back is not published: its step runs again.
    (derivatives / "RS" / "clinical" / "score.json").write_text("{}")
    published = publish_pending(store, _row(store))
    assert len(published.uploaded) == STEPS - 1
    (error,) = published.errors
    assert "RS/clinical/score.json" in error and "changed in the work tree" in error
    assert not any(pending.glob("*.json"))
    assert publish_pending(store, _row(store)).uploaded == ()

    rerun = _run_until_publishing(settings, store, scope)
    assert rerun.ran == 1
    assert publish_pending(store, _row(store)).uploaded == ("RS_clinical_score@sinagot",)

    # Uploaded, then killed before the pending file went: not uploaded a second time.
    stored = json.loads((derivatives / ".provenance" / "RS_EEG_spectrum@sinagot.json").read_text())
    document = {"path": "RS_EEG_spectrum@sinagot", "provenance": stored}
    (pending / "RS_EEG_spectrum@sinagot.json").write_text(json.dumps(document))
    late = publish_pending(store, _row(store))
    assert late.uploaded == () and late.already_stored == ("RS_EEG_spectrum@sinagot",)
    assert not any(pending.glob("*.json"))

    # The library's direct commit supersedes (and removes) a stale pending result.
    (pending / "RS_EEG_spectrum@sinagot.json").write_text(json.dumps(document))
    forced = run_scope(
        settings, store, Scope((RECORD,), "RS", "EEG"), runner=SerialRunner(), force=True
    ).report
    assert forced.ran == 2
    assert not any(pending.glob("*.json"))
