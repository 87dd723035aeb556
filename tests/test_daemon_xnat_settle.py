"""A processed session stays processed: the daemon's own uploads are not taken for a change.

After its uploads a job learns the session's stamp and proves the scan files
it processed unchanged (``XnatStore.asettled_stamp``); the job is done for that
stamp. A change of primary data while the job uploads still makes it run again.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import subprocess
from pathlib import Path
from typing import Any

import aiohttp

from daemon_support import wait_for
from daemon_xnat_support import (
    PROJECT,
    SINAGOT,
    XnatDaemon,
    add_session,
    complete,
    derivatives,
    raw_signal,
    write_project,
)
from sinagot.connectors import AsyncXnatStore, DataRow, XnatStore
from sinagot.daemon.internals import Journal
from sinagot.testing import EmulatorServer, FaultRule
from sinagot.testing.pytest_plugin import XNAT_PASSWORD, XNAT_USER

LABEL = "REC-200101-A"
LISTING_ROUTE = "GET /data/projects/{project}/experiments"


def _store(server: EmulatorServer, tmp: Path) -> XnatStore:
    return XnatStore(
        server.url,
        tmp / "cache",
        user=XNAT_USER,
        password=XNAT_PASSWORD,
        project=PROJECT,
        local_root=tmp / "work",
        race_condition_delay=0.5,
    )


def _poll(daemon: XnatDaemon) -> None:
    """One poll cycle, asked for over the socket, waited for until it has listed."""
    before = daemon.call("status")["datasets"][0]["last_poll"]
    daemon.call("poll")
    wait_for(
        lambda: daemon.call("status")["datasets"][0]["last_poll"] != before, what="a poll cycle"
    )


def _job(daemon: XnatDaemon) -> dict[str, Any]:
    (job,) = daemon.jobs()
    return job


def _attempts_started(daemon: XnatDaemon, job_id: int) -> int:
    detail = daemon.call("job", job_id)
    return sum(1 for step in detail["history"] if "started" in step["detail"])


def test_own_uploads_do_not_make_the_session_run_again(
    tmp_path: Path, lab: EmulatorServer, daemons: list[XnatDaemon]
) -> None:
    add_session(lab, LABEL)
    # Polls only when asked: each cycle below is one known listing.
    config, _ = write_project(tmp_path, lab.url, {"poll_interval": 600.0})
    daemon = XnatDaemon(tmp_path, config)
    daemons.append(daemon)
    daemon.start()
    daemon.wait_settled({LABEL})
    assert complete(lab, LABEL)
    lab.reset_counters()

    for _ in range(3):
        _poll(daemon)
    assert lab.request_counts() == {LISTING_ROUTE: 3}  # no new job, nothing downloaded
    job = _job(daemon)
    assert (job["state"], job["attempts"]) == ("done", 1)
    assert _attempts_started(daemon, job["id"]) == 1
    listed = subprocess.run(
        [SINAGOT, "jobs", "--json", "--socket", str(daemon.socket)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    (shown,) = json.loads(listed.stdout)["jobs"]
    assert (shown["state"], shown["attempts"]) == ("done", 1)
    assert "processed up to" in daemon.log_text()
    assert daemon.stop() == 0


def test_short_poll_interval_still_one_job_per_session(
    tmp_path: Path, lab: EmulatorServer, daemons: list[XnatDaemon]
) -> None:
    labels = {"REC-200101-A", "REC-200101-B", "REC-200101-C"}
    for label in labels:
        add_session(lab, label)
    config, _ = write_project(tmp_path, lab.url, {"poll_interval": 0.1})
    daemon = XnatDaemon(tmp_path, config)
    daemons.append(daemon)
    daemon.start()
    daemon.wait_settled(labels)
    lab.reset_counters()
    # Many poll cycles (every 0.1 s) while nothing changes on the server.
    wait_for(lambda: lab.request_counts().get(LISTING_ROUTE, 0) >= 10, what="ten poll cycles")
    assert set(lab.request_counts()) == {LISTING_ROUTE}
    jobs = daemon.wait_settled(labels)
    assert all(job["attempts"] == 1 for job in jobs)
    assert daemon.stop() == 0


def test_primary_data_changed_during_the_upload_is_processed_again(
    tmp_path: Path, lab: EmulatorServer, daemons: list[XnatDaemon]
) -> None:
    add_session(lab, LABEL)
    config, control = write_project(tmp_path, lab.url, {"poll_interval": 600.0})
    (control / "slow").write_text("2")
    daemon = XnatDaemon(tmp_path, config)
    daemons.append(daemon)
    daemon.start()
    wait_for(lambda: (control / "started").exists(), what="the script running")
    (control / "slow").unlink()
    # The next project listing is the job's own, after its uploads: hold it while the
    # user changes the raw data, so that the stamp it answers already has the change.
    lab.set_faults(
        [FaultRule("latency", path=r"/projects/LAB/experiments$", method="GET", delay=3.0)]
    )
    wait_for(lambda: lab.fault_counts().get("latency", 0) >= 1, what="the stamp asked for")
    changed = raw_signal(LABEL, lines=80)
    lab.add_scan_file(PROJECT, LABEL, scan_type="RS", resource="EEG", name="raw.csv", data=changed)
    lab.set_faults([])
    daemon.wait_settled({LABEL})
    assert "changed since the fetch" in daemon.log_text()

    _poll(daemon)  # sees the user's change: the session runs again on the new data
    expected = hashlib.md5(changed.upper()).hexdigest()
    wait_for(
        lambda: (
            derivatives(lab, LABEL)["RS_EEG_filter___at___sinagot"].get("filtered.csv") == expected
        ),
        what="the filter rerun on the changed data",
    )
    job = daemon.wait_settled({LABEL})[0]
    assert _attempts_started(daemon, job["id"]) == 2
    assert daemon.stop() == 0


def test_settled_stamp_proves_the_scan_files_unchanged(tmp_path: Path, lab: EmulatorServer) -> None:
    add_session(lab, LABEL)
    with _store(lab, tmp_path) as blocking:

        async def scenario() -> None:
            store = AsyncXnatStore.connect(
                lab.url,
                project=PROJECT,
                user=XNAT_USER,
                password=XNAT_PASSWORD,
                cache=blocking.cache,
                local_root=tmp_path / "work",
            )
            row = DataRow(id=LABEL)
            await store.populate_row(row)
            lab.set_fields(PROJECT, LABEL, {"note": "not a scan file"})
            stamp = await store.settled_stamp(LABEL)
            (listed,) = [s for s in await store.list_sessions() if s.label == LABEL]
            assert stamp == listed.last_modified  # the field moved it; the files did not

            lab.add_scan_file(
                PROJECT, LABEL, scan_type="T1", resource="MRI", name="t1.nii", data=b"new"
            )
            assert await store.settled_stamp(LABEL) is None  # a scan added
            await store.populate_row(row)
            assert await store.settled_stamp(LABEL) is not None
            lab.add_scan_file(
                PROJECT, LABEL, scan_type="RS", resource="EEG", name="raw.csv", data=b"other"
            )
            assert await store.settled_stamp(LABEL) is None  # a file changed

            # Forgotten: nothing to prove against, and downloads list the files again.
            await store.populate_row(row)
            store.forget_session(LABEL)
            assert await store.settled_stamp(LABEL) is None
            lab.reset_counters()
            await store.get_fileset(row.entries["RS/EEG"])
            counts = lab.request_counts()
            files_listing = (
                "GET /data/projects/{project}/experiments/{experiment}"
                "/scans/{scan}/resources/{resource}/files"
            )
            assert counts.get(files_listing) == 1, counts
            await store.aclose()

        asyncio.run(scenario())


def test_emulator_filters_the_experiment_listing_by_label(lab: EmulatorServer) -> None:
    for label in ("REC-1_A", "REC-1XA", "REC-2_A"):
        lab.create_session(PROJECT, label)

    async def labels(pattern: str) -> list[str]:
        token = base64.b64encode(f"{XNAT_USER}:{XNAT_PASSWORD}".encode()).decode()
        async with (
            aiohttp.ClientSession(headers={"Authorization": f"Basic {token}"}) as http,
            http.get(
                f"{lab.url}/data/projects/{PROJECT}/experiments",
                params={"format": "json", "columns": "label,last_modified", "label": pattern},
            ) as response,
        ):
            assert response.status == 200
            rows = (await response.json())["ResultSet"]["Result"]
        assert all(row["last_modified"] for row in rows)
        return sorted(row["label"] for row in rows)

    async def scenario() -> None:
        assert await labels("REC-1_A") == ["REC-1_A"]
        assert await labels("REC-*_A") == ["REC-1_A", "REC-2_A"]
        assert await labels("REC-1*") == ["REC-1XA", "REC-1_A"]
        assert await labels("nothing") == []

    asyncio.run(scenario())


def test_journal_finishes_a_job_for_its_settled_stamp(tmp_path: Path) -> None:
    async def scenario() -> None:
        journal = await Journal.open(tmp_path / "journal.sqlite3")
        try:
            (job_id,) = await journal.apply_listing("lab", [(LABEL, "t1")])
            await journal.begin(job_id)
            # Listed mid-upload with an intermediate stamp of our own uploads.
            assert await journal.apply_listing("lab", [(LABEL, "t2")]) == []
            state = await journal.finish(job_id, "t1", "ran 1", (), settled="t3")
            assert state == "done"
            assert await journal.known_sessions("lab") == {LABEL: "t3"}
            assert await journal.apply_listing("lab", [(LABEL, "t3")]) == []
            # Without a proof the job goes round again, as the listing moved.
            assert await journal.apply_listing("lab", [(LABEL, "t4")]) == [job_id]
            await journal.begin(job_id)
            assert await journal.apply_listing("lab", [(LABEL, "t5")]) == []
            assert await journal.finish(job_id, "t4", "ran 0", ()) == "discovered"
        finally:
            await journal.aclose()

    asyncio.run(scenario())
