"""A project listing polled again: the same answer from the server is not parsed again."""

from __future__ import annotations

from pathlib import Path

from sinagot.connectors import XnatStore
from sinagot.testing import EmulatorServer
from sinagot.testing.pytest_plugin import XNAT_PASSWORD, XNAT_USER

LISTING = "GET /data/projects/{project}/experiments"


def test_an_unchanged_listing_is_the_same_object_and_a_change_a_new_one(
    tmp_path: Path, xnat_server: EmulatorServer
) -> None:
    xnat_server.create_project("P")
    for label in ("REC-1", "REC-2"):
        xnat_server.create_session("P", label)
    with XnatStore(
        xnat_server.url, tmp_path / "cache", user=XNAT_USER, password=XNAT_PASSWORD, project="P"
    ) as store:
        first = store.list_sessions()
        again = store.list_sessions()
        # One request each time: only the parsing is saved.
        assert xnat_server.request_counts()[LISTING] == 2
        assert again is first
        assert [s.label for s in first] == ["REC-1", "REC-2"]

        xnat_server.create_session("P", "REC-3")
        changed = store.list_sessions()
        assert changed is not first
        assert [s.label for s in changed] == ["REC-1", "REC-2", "REC-3"]
        assert store.list_sessions() is changed
