"""The library over XNAT: the demo dataset fetched, run and uploaded through XnatStore."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from sinagot import Dataset
from sinagot.connectors import XnatStore
from sinagot.demo import DEMO_CONFIG, DEMO_SCRIPTS, load_demo
from sinagot.testing import EmulatorServer

PROJECT = "SONETAA"
SCAN_FILE_GET = (
    "GET /data/projects/{project}/experiments/{experiment}/scans/{scan}/resources/{resource}"
    "/files/{path}"
)
DERIVED_FILE_GET = (
    "GET /data/projects/{project}/experiments/{experiment}/resources/{resource}/files/{path}"
)
PROJECT_LISTING = "GET /data/projects/{project}/experiments"
# 5 records x (3 tasks x (preprocess + spectrum + score) + accuracy for HDC)
STEPS = 5 * (3 * 3 + 1)


def write_config(tmp_path: Path, server: EmulatorServer, work: str) -> Path:
    for name, source in DEMO_SCRIPTS.items():
        (tmp_path / "scripts" / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "scripts" / name).write_text(source)
    config = DEMO_CONFIG.replace('dataset = "data"', f'dataset = "{work}"')
    config += (
        f'\n[store]\ntype = "xnat"\nserver = "{server.url}"\nproject = "{PROJECT}"\n'
        'user = "alice"\npassword = "secret"\ncache_dir = "cache"\n'
    )
    path = tmp_path / f"{work}.toml"
    path.write_text(config)
    return path


def test_demo_runs_over_xnat_and_xnatpy_reads_the_results(
    xnat_server: EmulatorServer, tmp_path: Path
) -> None:
    xnat = pytest.importorskip("xnat")
    load_demo(xnat_server, PROJECT)
    dataset = Dataset(write_config(tmp_path, xnat_server, "work"))
    assert isinstance(dataset.store, XnatStore)
    assert dataset.ids() == sorted(dataset.ids()) and len(dataset.ids()) == 5

    report = dataset.run()
    assert (report.ran, report.failed, report.missing_input) == (STEPS, 0, 0), str(report)

    work = tmp_path / "work"
    with xnat.connect(xnat_server.url, user="alice", password="secret") as session:
        experiment = session.projects[PROJECT].experiments["REC-200331-A"]
        labels = {r.label for r in experiment.resources.values()}
        assert "RS_EEG_preprocess___at___sinagot" in labels
        # FrameTree's layout: the column's files alone, the provenance in PROVENANCE.
        resource = experiment.resources["RS_EEG_preprocess___at___sinagot"]
        names = {f.path for f in resource.files.values()}
        assert names == {"filtered.csv"}
        local = work / "REC-200331-A" / "derivatives" / "RS" / "EEG" / "filtered.csv"
        resource.files["filtered.csv"].download(str(tmp_path / "got.csv"), verbose=False)
        assert (tmp_path / "got.csv").read_bytes() == local.read_bytes()
        marker = experiment.resources["PROVENANCE"].files["RS_EEG_preprocess___at___sinagot.json"]
        marker.download(str(tmp_path / "prov.json"), verbose=False)
        provenance = json.loads((tmp_path / "prov.json").read_text())
        assert provenance["status"] == "success"
        assert provenance["outputs"] == {
            "RS/EEG/filtered.csv": provenance["outputs"]["RS/EEG/filtered.csv"]
        }
        assert "secret" not in (tmp_path / "prov.json").read_text()

    # Nothing changed: a second run in the same place downloads nothing, runs nothing,
    # and asks only for the project listing (and a login: a session, then an alias token).
    xnat_server.reset_counters()
    again = Dataset(write_config(tmp_path, xnat_server, "work")).run()
    assert (again.ran, again.skipped) == (0, STEPS), str(again)
    counts = xnat_server.request_counts()
    assert SCAN_FILE_GET not in counts and DERIVED_FILE_GET not in counts
    assert counts == {
        PROJECT_LISTING: 1,
        "GET /data/JSESSION": 1,
        "GET /data/services/tokens/issue": 1,
        "DELETE /data/JSESSION": 1,
    }

    # A fresh work folder on the same cache: inputs come from the cache, and so do the
    # outputs (the first run's uploads entered them) instead of being recomputed.
    xnat_server.reset_counters()
    fresh = Dataset(write_config(tmp_path, xnat_server, "fresh")).run()
    assert (fresh.ran, fresh.skipped) == (0, STEPS), str(fresh)
    assert SCAN_FILE_GET not in xnat_server.request_counts()
    assert (tmp_path / "fresh" / "REC-200331-A" / "derivatives" / "RS" / "EEG").is_dir()


def test_one_record_on_dask_over_xnat(xnat_server: EmulatorServer, tmp_path: Path) -> None:
    load_demo(xnat_server, PROJECT)
    dataset = Dataset(write_config(tmp_path, xnat_server, "work"))
    report = dataset.get("REC-200401-A").run(mode="dask")
    assert (report.ran, report.failed) == (STEPS // 5, 0), str(report)
    counts = xnat_server.request_counts()  # one output and one provenance per step
    assert counts["PUT " + DERIVED_FILE_GET.removeprefix("GET ")] == 2 * STEPS // 5
    again = dataset.get("REC-200401-A").run(mode="dask")
    assert (again.ran, again.skipped) == (0, STEPS // 5), str(again)


def _to_the_layout_before_0_2(session: object, label: str, tmp_path: Path) -> None:
    """Move a derivative back to how Sinagot < 0.2 stored it (with xnatpy, as it did):
    outputs named as in the work tree, provenance.json inside the resource."""
    experiment: Any = session
    resource = experiment.resources[label]
    marker = experiment.resources["PROVENANCE"].files[f"{label}.json"]
    marker.download(str(tmp_path / "provenance.json"), verbose=False)
    marker.delete()
    for file in list(resource.files.values()):
        file.download(str(tmp_path / file.path), verbose=False)
        resource.upload(str(tmp_path / file.path), f"RS/EEG/{file.path}")
        file.delete()
    resource.upload(str(tmp_path / "provenance.json"), "provenance.json")


def test_derivatives_in_the_layout_before_0_2_are_read_then_replaced(
    xnat_server: EmulatorServer, tmp_path: Path
) -> None:
    xnat = pytest.importorskip("xnat")
    load_demo(xnat_server, PROJECT)
    record, label = "REC-200331-A", "RS_EEG_preprocess___at___sinagot"
    assert Dataset(write_config(tmp_path, xnat_server, "work")).run().ok
    with xnat.connect(xnat_server.url, user="alice", password="secret") as session:
        experiment = session.projects[PROJECT].experiments[record]
        _to_the_layout_before_0_2(experiment, label, tmp_path)

    # Read as complete: a fresh work tree gets the outputs where the steps wrote them,
    # nothing reruns and nothing is uploaded.
    xnat_server.reset_counters()
    fresh = Dataset(write_config(tmp_path, xnat_server, "fresh")).get(record).run()
    assert (fresh.ran, fresh.failed) == (0, 0), str(fresh)
    assert (tmp_path / "fresh" / record / "derivatives" / "RS" / "EEG" / "filtered.csv").is_file()
    assert not any(route.startswith("PUT ") for route in xnat_server.request_counts())

    # The raw data changes: the step reruns and its derivative takes the new layout, in
    # the same resource (no second one), the old provenance file gone.
    xnat_server.add_scan_file(
        PROJECT, record, scan_type="RS", resource="EEG", name="raw.csv", data=b"t,Fz\n0,1\n1,3\n"
    )
    rerun = Dataset(write_config(tmp_path, xnat_server, "fresh")).get(record).RS.EEG.run()
    assert rerun.ran == 2, str(rerun)
    with xnat.connect(xnat_server.url, user="alice", password="secret") as session:
        experiment = session.projects[PROJECT].experiments[record]
        labels = [r.label for r in experiment.resources.values()]
        assert labels.count(label) == 1
        assert {f.path for f in experiment.resources[label].files.values()} == {"filtered.csv"}
        assert f"{label}.json" in experiment.resources["PROVENANCE"].files


def test_an_unchanged_record_costs_one_listing_and_any_change_is_still_seen(
    xnat_server: EmulatorServer, tmp_path: Path
) -> None:
    load_demo(xnat_server, PROJECT)
    config = write_config(tmp_path, xnat_server, "work")
    record = Dataset(config).get("REC-200331-A")
    first = record.run()
    assert first.ok and first.ran == STEPS // 5, str(first)

    xnat_server.reset_counters()
    again = Dataset(config).get("REC-200331-A").run()
    assert (again.ran, again.skipped) == (0, STEPS // 5), str(again)
    assert set(xnat_server.request_counts()) == {
        PROJECT_LISTING,
        "GET /data/JSESSION",
        "GET /data/services/tokens/issue",
        "DELETE /data/JSESSION",
    }

    # A script's parameters change: its steps run again (and only those).
    spectrum = tmp_path / "scripts" / "EEG" / "spectrum.py"
    spectrum.write_text(spectrum.read_text().replace("PARAMETERS = {", 'PARAMETERS = {"bins": 9, '))
    changed = Dataset(config).get("REC-200331-A").run()
    assert {r.key.script for r in changed.results if r.status.value == "ran"} == {"spectrum"}

    # The server's data changes: the session's stamp moves, its steps are checked again.
    xnat_server.add_scan_file(
        PROJECT,
        "REC-200331-A",
        scan_type="RS",
        resource="EEG",
        name="raw.csv",
        data=b"t,Fz\n0,1\n1,3\n",
    )
    after = Dataset(config).get("REC-200331-A").run()
    assert {r.key.unit for r in after.results if r.status.value == "ran"} == {
        "RS/EEG/preprocess",
        "RS/EEG/spectrum",
    }
    forced = Dataset(config).get("REC-200331-A").run(force=True)
    assert forced.ran == STEPS // 5


def test_a_server_without_digests_is_read_by_sizes_and_stamps(
    xnat_server: EmulatorServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # XNAT with its checksum setting off lists every file with an empty digest.
    xnat_server.create_project(PROJECT, checksums=False)
    load_demo(xnat_server, PROJECT)
    record = "REC-200331-A"
    first = Dataset(write_config(tmp_path, xnat_server, "work")).get(record).run()
    assert first.ok and first.ran == STEPS // 5, str(first)
    warnings = [r.getMessage() for r in caplog.records if "without MD5 digests" in r.getMessage()]
    assert len(warnings) == 1 and "integrity rests on sizes" in warnings[0]

    # A fresh work tree on the same cache: the files Sinagot fetched before its own
    # uploads are still current (it proved them unchanged by size when it settled).
    xnat_server.reset_counters()
    fresh = Dataset(write_config(tmp_path, xnat_server, "fresh")).get(record).run()
    assert (fresh.ran, fresh.failed) == (0, 0), str(fresh)
    assert SCAN_FILE_GET not in xnat_server.request_counts()

    # A file changed on the server (same size, other bytes): the session's stamp moves,
    # the file is fetched again and its steps rerun on it.
    raw = tmp_path / "fresh" / record / "RS" / "EEG" / "raw.csv"
    data = raw.read_bytes()
    changed = data.replace(b"0", b"1", 1) if b"0" in data else data[:-1] + b"\n"
    assert len(changed) == len(data) and changed != data
    xnat_server.add_scan_file(
        PROJECT, record, scan_type="RS", resource="EEG", name="raw.csv", data=changed
    )
    xnat_server.reset_counters()
    after = Dataset(write_config(tmp_path, xnat_server, "fresh")).get(record).run()
    assert {r.key.unit for r in after.results if r.status.value == "ran"} == {
        "RS/EEG/preprocess",
        "RS/EEG/spectrum",
    }
    assert xnat_server.request_counts()[SCAN_FILE_GET] >= 1
    assert raw.read_bytes() == changed
