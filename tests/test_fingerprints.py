"""Step fingerprints: what changes a step's fingerprint, what does not, and how cheaply the
probe notices (see ``sinagot.engine.FingerprintProbe``)."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest

from foundation_support import write_project
from sinagot.config import load_settings
from sinagot.demo import DEMO_CONFIG
from sinagot.engine import FingerprintProbe, Fingerprints

PREPROCESS = "RS/EEG/preprocess"
SPECTRUM = "RS/EEG/spectrum"


def _probe(config: Path) -> FingerprintProbe:
    return FingerprintProbe(load_settings(config))


def _edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new))


@pytest.fixture
def config(tmp_path: Path) -> Path:
    return write_project(tmp_path)


def test_every_configured_step_has_one_and_the_map_round_trips(config: Path) -> None:
    marks = _probe(config).current()
    assert set(marks.steps) == {
        f"{task}/{modality}/{script}"
        for task, modalities in (("RS", "EEG clinical"), ("MMN", "EEG clinical"))
        for modality in modalities.split()
        for script in {"EEG": ("preprocess", "spectrum"), "clinical": ("score",)}[modality]
    } | {"HDC/EEG/preprocess", "HDC/EEG/spectrum", "HDC/clinical/score", "HDC/behavior/accuracy"}
    assert not marks.broken
    assert Fingerprints.from_json(marks.to_json()) == marks
    # The same pipeline loaded again: the same text, byte for byte (the journal groups by it).
    assert _probe(config).current().to_json() == marks.to_json()
    with pytest.raises(ValueError, match="not \\[full, own\\]"):
        Fingerprints.from_json('{"RS/EEG/preprocess": "abc"}')


def test_a_parameter_changes_its_step_and_the_steps_that_read_from_it(config: Path) -> None:
    before = _probe(config).current()
    _edit(config.parent / "scripts/EEG/preprocess.py", '{"window": 5}', '{"window": 7}')
    after = _probe(config).current()
    change = after.compare(before)
    assert set(change.changed) == {f"{t}/EEG/preprocess" for t in ("RS", "MMN", "HDC")}
    assert set(change.upstream_changed) == {f"{t}/EEG/spectrum" for t in ("RS", "MMN", "HDC")}
    assert change.added == () and change.removed == ()
    assert set(change.stale_steps) == set(change.changed) | set(change.upstream_changed)
    # Steps that read nothing the change touched keep their fingerprint.
    assert after.steps["RS/clinical/score"] == before.steps["RS/clinical/score"]


def test_config_lists_count_but_comments_and_layout_do_not(config: Path) -> None:
    before = _probe(config).current()
    config.write_text("# a comment\n" + DEMO_CONFIG.replace("[run]", "\n\n[run]  # spaced"))
    assert _probe(config).current() == before

    config.write_text(
        DEMO_CONFIG.replace('modalities = ["EEG", "clinical"]', 'modalities = ["EEG"]', 1)
    )
    change = _probe(config).current().compare(before)
    assert change.removed == ("RS/clinical/score",) and change.stale_steps == ()

    # Steps run in the order their paths impose: another order of the list computes the
    # same, so it is the same pipeline.
    config.write_text(
        DEMO_CONFIG.replace(
            'scripts = ["preprocess", "spectrum"]', 'scripts = ["spectrum", "preprocess"]'
        )
    )
    assert _probe(config).current() == before

    # A script added to a modality: a step every record gains.
    (config.parent / "scripts/clinical/score2.py").write_text(
        (config.parent / "scripts/clinical/score.py").read_text().replace("score", "score2")
    )
    config.write_text(DEMO_CONFIG.replace('scripts = ["score"]', 'scripts = ["score", "score2"]'))
    assert "RS/clinical/score2" in _probe(config).current().compare(before).added


def test_a_broken_script_has_no_fingerprint_and_stales_nothing(
    config: Path, caplog: pytest.LogCaptureFixture
) -> None:
    probe = _probe(config)
    before = probe.current()
    script = config.parent / "scripts/EEG/preprocess.py"
    source = script.read_text()
    script.write_text(source + "\nthis is not python\n")
    with caplog.at_level(logging.ERROR, logger="sinagot.run"):
        broken = probe.current()
        probe.current()
    assert PREPROCESS in broken.broken and SPECTRUM in broken.broken
    assert PREPROCESS not in broken.steps
    change = broken.compare(before)
    assert change.stale_steps == () and change.removed == ()
    # Said once per version of the file, however often the probe looks.
    assert [r.message for r in caplog.records].count(next(iter(caplog.messages))) == 1
    script.write_text(source)
    assert probe.current() == before


def test_the_probe_reads_only_files_that_moved(config: Path) -> None:
    probe = _probe(config)
    before = probe.current()
    script = config.parent / "scripts/EEG/preprocess.py"
    info = script.stat()
    # Other bytes of the same size at the same mtime, in the same inode: a stat sees no
    # change, so the file is not read again.
    text = script.read_text()
    changed = text.replace('{"window": 5}', '{"window": 9}')
    assert len(changed) == len(text)
    with script.open("r+") as handle:
        handle.write(changed)
    os.utime(script, ns=(info.st_atime_ns, info.st_mtime_ns))
    assert probe.current() == before
    # Once it moves (here its mtime), it is read, hashed and imported again.
    os.utime(script, ns=(info.st_atime_ns, info.st_mtime_ns + 1_000_000))
    assert PREPROCESS in probe.current().compare(before).changed
    # A new probe (a reload) reads everything.
    assert PREPROCESS in _probe(config).current().compare(before).changed
