"""The library over XNAT: the demo dataset fetched, run and uploaded through XnatStore."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sinagot import Dataset
from sinagot.connectors import PROVENANCE_FILE, XnatStore
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
        resource = experiment.resources["RS_EEG_preprocess___at___sinagot"]
        names = {f.path for f in resource.files.values()}
        assert names == {"RS/EEG/filtered.csv", PROVENANCE_FILE}
        local = work / "REC-200331-A" / "derivatives" / "RS" / "EEG" / "filtered.csv"
        resource.files["RS/EEG/filtered.csv"].download(str(tmp_path / "got.csv"), verbose=False)
        assert (tmp_path / "got.csv").read_bytes() == local.read_bytes()
        resource.files[PROVENANCE_FILE].download(str(tmp_path / "prov.json"), verbose=False)
        provenance = json.loads((tmp_path / "prov.json").read_text())
        assert provenance["status"] == "success"
        assert provenance["outputs"] == {
            "RS/EEG/filtered.csv": provenance["outputs"]["RS/EEG/filtered.csv"]
        }
        assert "secret" not in (tmp_path / "prov.json").read_text()

    # Nothing changed: a second run in the same place downloads nothing and runs nothing.
    xnat_server.reset_counters()
    again = Dataset(write_config(tmp_path, xnat_server, "work")).run()
    assert (again.ran, again.skipped) == (0, STEPS), str(again)
    counts = xnat_server.request_counts()
    assert SCAN_FILE_GET not in counts
    assert counts[DERIVED_FILE_GET] == STEPS  # one provenance.json per step, no data

    # A fresh work folder on the same cache: inputs come from the cache, outputs are
    # fetched from the server instead of being recomputed.
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
    counts = xnat_server.request_counts()  # one output and one provenance.json per step
    assert counts["PUT " + DERIVED_FILE_GET.removeprefix("GET ")] == 2 * STEPS // 5
    again = dataset.get("REC-200401-A").run(mode="dask")
    assert (again.ran, again.skipped) == (0, STEPS // 5), str(again)
