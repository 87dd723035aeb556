from __future__ import annotations

import json

import pytest

from sinagot import __version__
from sinagot.engine.internals import build_provenance, is_up_to_date, stale_reason

INPUTS = {"REC-1/RS/EEG/raw.csv": "a" * 32}


def _provenance(**changes: object) -> dict[str, object]:
    document = build_provenance(
        record="REC-1",
        task="RS",
        modality="EEG",
        script="preprocess",
        source_md5="b" * 32,
        parameters={"window": 5, "bands": (1, 4)},
        inputs=INPUTS,
        outputs={"RS/EEG/filtered.csv": "c" * 32},
        started="2026-01-01T00:00:00.000+00:00",
        finished="2026-01-01T00:00:01.000+00:00",
    )
    document.update(changes)
    # What a store gives back is what JSON gives back.
    result: dict[str, object] = json.loads(json.dumps(document))
    return result


def test_document_fields() -> None:
    document = _provenance()
    assert set(document) == {
        "record",
        "task",
        "modality",
        "script",
        "parameters",
        "inputs",
        "outputs",
        "sinagot_version",
        "started",
        "finished",
        "host",
        "status",
    }
    assert document["script"] == {"name": "preprocess", "source_md5": "b" * 32}
    assert document["sinagot_version"] == __version__
    assert document["status"] == "success"
    assert is_up_to_date(
        document, inputs=INPUTS, source_md5="b" * 32, parameters={"window": 5, "bands": (1, 4)}
    )


@pytest.mark.parametrize(
    ("changes", "kwargs", "reason"),
    [
        ({}, {"inputs": {"REC-1/RS/EEG/raw.csv": "d" * 32}}, "inputs changed"),
        ({}, {"inputs": {**INPUTS, "REC-1/RS/EEG/extra.csv": "e" * 32}}, "inputs changed"),
        ({}, {"source_md5": "f" * 32}, "script changed"),
        ({}, {"parameters": {"window": 6, "bands": [1, 4]}}, "parameters changed"),
        ({"status": "failed"}, {}, "last run did not succeed"),
        ({"sinagot_version": "0.0.0-old"}, {}, "sinagot version changed"),
    ],
)
def test_anything_that_differs_makes_it_stale(
    changes: dict[str, object], kwargs: dict[str, object], reason: str
) -> None:
    arguments: dict[str, object] = {
        "inputs": INPUTS,
        "source_md5": "b" * 32,
        "parameters": {"window": 5, "bands": [1, 4]},
    }
    arguments.update(kwargs)
    assert stale_reason(_provenance(**changes), **arguments) == reason  # type: ignore[arg-type]


def test_no_provenance_means_never_ran() -> None:
    assert stale_reason(None, inputs=INPUTS, source_md5="b", parameters={}) == "never ran"
