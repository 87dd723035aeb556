"""FrameTree (frametree-xnat, its own XNAT store) reads the derivatives Sinagot uploads.

A derivative ``name@pipeline`` is a column for FrameTree: its resource holds the
script's outputs as that column's files, and its provenance is where FrameTree's
``get_provenance`` looks (the session resource ``PROVENANCE``).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
from fileformats.application import Json
from frametree.xnat import Xnat

from sinagot import Dataset
from sinagot.demo import DEMO_CONFIG, DEMO_SCRIPTS, load_demo
from sinagot.testing import EmulatorServer
from sinagot.testing.pytest_plugin import XNAT_PASSWORD, XNAT_USER

PROJECT = "SONETAA"
RECORD = "REC-200331-A"


@pytest.fixture(autouse=True)
def _quiet_clients(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="xnat")


def _config(tmp_path: Path, server: EmulatorServer) -> Path:
    for name, source in DEMO_SCRIPTS.items():
        (tmp_path / "scripts" / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "scripts" / name).write_text(source)
    config = tmp_path / "sinagot.toml"
    config.write_text(
        DEMO_CONFIG.replace('dataset = "data"', 'dataset = "work"')
        + f'\n[store]\ntype = "xnat"\nserver = "{server.url}"\nproject = "{PROJECT}"\n'
        f'user = "{XNAT_USER}"\npassword = "{XNAT_PASSWORD}"\ncache_dir = "cache"\n'
    )
    return config


def test_frametree_reads_a_sinagot_derivative_as_its_format_with_its_provenance(
    xnat_server: EmulatorServer, tmp_path: Path
) -> None:
    load_demo(xnat_server, PROJECT)
    report = Dataset(_config(tmp_path, xnat_server)).get(RECORD).run()
    assert report.ok and report.ran, str(report)
    derivatives = tmp_path / "work" / RECORD / "derivatives"
    written = (derivatives / "RS" / "EEG" / "bands.json").read_text()
    provenance = json.loads(
        (derivatives / ".provenance" / "RS_EEG_spectrum@sinagot.json").read_text()
    )

    (tmp_path / "frametree").mkdir()
    store = Xnat(
        server=xnat_server.url,
        user=XNAT_USER,
        password=XNAT_PASSWORD,
        cache_dir=tmp_path / "frametree",
    )
    frameset = store.define_frameset(PROJECT)
    frameset.add_source("spectrum", path="RS_EEG_spectrum@sinagot", datatype=Json)
    cell = frameset.row("session", RECORD)
    column = cell["spectrum"]
    assert isinstance(column, Json)
    # The output itself (not a provenance document), parsed as JSON by FrameTree.
    assert column.fspath.name == "bands.json"
    assert column.contents == json.loads(written)
    with store.connection:
        assert store.get_provenance(cell.cell("spectrum").entry) == provenance
