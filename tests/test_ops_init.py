"""`sinagot init` end to end: from the XNAT emulator and from a local tree, then ids and run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from sinagot.cli.internals import derive_id_pattern
from sinagot.config import load_settings
from sinagot.demo import DEMO_PROJECT, DEMO_RECORDS, load_demo, write_demo_recordings
from sinagot.testing import EmulatorServer
from sinagot.testing.pytest_plugin import XNAT_PASSWORD, XNAT_USER

SINAGOT = str(Path(sys.executable).with_name("sinagot"))


def sinagot(*args: str, password: bool = True) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "SINAGOT_XNAT_PASSWORD"}
    if password:
        env["SINAGOT_XNAT_PASSWORD"] = XNAT_PASSWORD
    return subprocess.run(
        [SINAGOT, *args], capture_output=True, text=True, timeout=240, check=False, env=env
    )


@pytest.fixture
def demo_server(xnat_server: EmulatorServer) -> EmulatorServer:
    load_demo(xnat_server)
    # Sessions init must leave out: no record label, and a scan type that is no config name.
    xnat_server.create_session(DEMO_PROJECT, "phantom-qa")
    xnat_server.add_scan_file(
        DEMO_PROJECT,
        "phantom-qa",
        scan_type="RS",
        resource="EEG",
        name="raw.csv",
        data=b"t,Fz\n0,1\n",
    )
    xnat_server.add_scan_file(
        DEMO_PROJECT,
        DEMO_RECORDS[0],
        scan_type="T1-weighted",
        resource="NIFTI",
        name="t1.nii",
        data=b"\0nifti",
    )
    return xnat_server


def test_init_from_xnat_writes_a_config_that_lists_and_runs(
    tmp_path: Path, demo_server: EmulatorServer
) -> None:
    target = tmp_path / "lab"
    result = sinagot(
        "init", str(target), "--xnat", demo_server.url, "--project", DEMO_PROJECT,
        "--user", XNAT_USER,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert f"Looked into 6 of the 6 sessions of project {DEMO_PROJECT}" in out
    assert r"id_pattern  REC-\d{6}-[A-Z]  (matches 5 of 6 labels)" in out
    assert "RS: EEG, clinical" in out and "HDC: EEG, behavior, clinical" in out
    assert "1 label(s) not matching: 'phantom-qa'" in out
    assert "skipped     task 'T1-weighted'" in out

    config = target / "sinagot.toml"
    text = config.read_text()
    assert XNAT_PASSWORD not in text and "password =" not in text
    assert "# Not matching, so ignored: 'phantom-qa'." in text
    settings = load_settings(config)
    assert settings.store.server == demo_server.url and settings.store.user == XNAT_USER
    assert {t: s.modalities for t, s in settings.tasks.items()} == {
        "RS": ("EEG", "clinical"),
        "MMN": ("EEG", "clinical"),
        "HDC": ("EEG", "behavior", "clinical"),
    }
    for modality in ("EEG", "clinical", "behavior"):
        assert (target / "scripts" / modality / "summary.py").is_file()

    ids = sinagot("ids", str(config))
    assert ids.returncode == 0, ids.stderr
    assert ids.stdout.split() == list(DEMO_RECORDS)
    run = sinagot("run", str(config), "--json")
    assert run.returncode == 0, run.stderr
    report = json.loads(run.stdout)
    assert (report["ran"], report["failed"]) == (35, 0)
    summary = json.loads(
        (
            target / "work" / DEMO_RECORDS[0] / "derivatives" / "RS" / "EEG" / "summary.json"
        ).read_text()
    )
    assert summary["record"] == DEMO_RECORDS[0]
    (raw,) = summary["files"]
    assert raw["name"] == "raw.csv" and raw["lines"] == 513

    again = sinagot("init", str(target), "--xnat", demo_server.url, "--project", DEMO_PROJECT)
    assert again.returncode == 2
    assert again.stderr == (
        f"sinagot: error: {config} exists: init never overwrites a config; choose another DIR"
        " or remove it\n"
    )


def test_init_without_a_password_says_where_it_looks(
    tmp_path: Path, demo_server: EmulatorServer
) -> None:
    home = tmp_path / "home"
    home.mkdir()
    result = subprocess.run(
        [SINAGOT, "init", str(tmp_path / "lab"), "--xnat", demo_server.url,
         "--project", DEMO_PROJECT, "--user", XNAT_USER],
        capture_output=True, text=True, timeout=120, check=False,
        env={"PATH": os.environ["PATH"], "HOME": str(home)},
    )  # fmt: skip
    assert result.returncode == 2
    assert result.stderr.startswith("sinagot: error: ") and result.stderr.count("\n") == 1
    assert "SINAGOT_XNAT_PASSWORD" in result.stderr
    assert not (tmp_path / "lab" / "sinagot.toml").exists()


def test_init_looks_into_a_bounded_sample_of_sessions(
    tmp_path: Path, xnat_server: EmulatorServer
) -> None:
    xnat_server.create_project("BIG")
    labels = [f"S{n:03d}" for n in range(60)]
    for label in labels:
        xnat_server.create_session("BIG", label)
        xnat_server.add_scan_file(
            "BIG", label, scan_type="rest", resource="EEG", name="a.csv", data=b"1\n"
        )
    result = sinagot(
        "init", str(tmp_path / "big"), "--xnat", xnat_server.url, "--project", "BIG",
        "--user", XNAT_USER, "--sample", "7",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "Looked into 7 of the 60 sessions" in result.stdout
    scans = sum(
        count
        for route, count in xnat_server.request_counts().items()
        if route.startswith("GET ") and route.endswith("/scans")
    )
    assert scans == 7
    assert load_settings(tmp_path / "big" / "sinagot.toml").id_pattern.pattern == r"S\d{3}"


def test_init_from_a_local_tree_lists_and_runs(tmp_path: Path) -> None:
    data = tmp_path / "data"
    write_demo_recordings(data, DEMO_RECORDS[:3])
    (data / "notes" / "RS" / "EEG").mkdir(parents=True)
    (data / "notes" / "RS" / "EEG" / "todo.txt").write_text("later\n")
    target = tmp_path / "conf"
    result = sinagot("init", str(target), "--local", str(data), password=False)
    assert result.returncode == 0, result.stderr
    assert "Looked into 4 of the 4 records of folder" in result.stdout
    assert "1 label(s) not matching: 'notes'" in result.stdout
    config = target / "sinagot.toml"
    assert "[store]" not in config.read_text()
    ids = sinagot("ids", str(config), "--json", password=False)
    assert json.loads(ids.stdout) == list(DEMO_RECORDS[:3])
    run = sinagot("run", str(config), "--json", password=False)
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout)["ran"] == 21
    assert (data / DEMO_RECORDS[0] / "derivatives" / "HDC" / "behavior" / "summary.json").is_file()


@pytest.mark.parametrize(
    ("labels", "pattern", "unmatched"),
    [
        (["REC-200331-A", "REC-200331-B", "REC-200401-A", "phantom"], r"REC-\d{6}-[A-Z]", ["phantom"]),
        (["sub-01_ses-1", "sub-12_ses-2", "sub-03_ses-10"], r"sub-\d{2}_ses-\d{1,2}", []),
        (["S1", "S22", "S333"], r"[A-Z]\d{1,3}", []),
        (["P001_MR1", "P002_MR1", "P003_MR2", "X01", "X02", "X03", "qa"], r"(?:[A-Z]\d{3}_MR\d)|(?:[A-Z]\d{2})", ["qa"]),
        ([f"S{n:03d}" for n in range(12)], r"S\d{3}", []),
        (["a.b+c", "a.b+d"], r"[a-z]\.[a-z]\+[a-z]", []),
    ],
)  # fmt: skip
def test_id_pattern_from_labels(labels: list[str], pattern: str, unmatched: list[str]) -> None:
    derived = derive_id_pattern(labels)
    assert derived.pattern == pattern
    assert list(derived.unmatched) == unmatched
