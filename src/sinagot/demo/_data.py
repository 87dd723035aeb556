"""The raw recordings of the demo dataset: a small SoNeTAA-like EEG platform.

Every record performs the tasks RS, MMN and HDC; each task has EEG and
clinical data and HDC also has behavior. The values are synthetic but
deterministic (seeded by the record id), so two calls write identical bytes.
"""

from __future__ import annotations

import json
import math
import random
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..testing import EmulatorServer

__all__ = [
    "DEMO_PROJECT",
    "DEMO_RECORDS",
    "DEMO_TASK_MODALITIES",
    "load_demo",
    "write_demo_recordings",
]

# The demo dataset's project on an XNAT-compatible server.
DEMO_PROJECT = "SONETAA"

DEMO_RECORDS: tuple[str, ...] = (
    "REC-200331-A",
    "REC-200331-B",
    "REC-200401-A",
    "REC-200401-B",
    "REC-200402-A",
)

DEMO_TASK_MODALITIES: dict[str, tuple[str, ...]] = {
    "RS": ("EEG", "clinical"),
    "MMN": ("EEG", "clinical"),
    "HDC": ("EEG", "clinical", "behavior"),
}

_CHANNELS = ("Fz", "Cz", "Pz", "Oz")
_SAMPLES = 512
_SAMPLING_RATE_HZ = 256


def _eeg_csv(rng: random.Random) -> str:
    lines = ["time," + ",".join(_CHANNELS)]
    phases = [rng.uniform(0, 2 * math.pi) for _ in _CHANNELS]
    for index in range(_SAMPLES):
        t = index / _SAMPLING_RATE_HZ
        values = (10 * math.sin(2 * math.pi * 10 * t + phase) + rng.gauss(0, 2) for phase in phases)
        lines.append(f"{t:.5f}," + ",".join(f"{v:.3f}" for v in values))
    return "\n".join(lines) + "\n"


def _clinical_json(rng: random.Random, record_id: str, task: str) -> str:
    answers = {
        "record": record_id,
        "task": task,
        "age": rng.randint(18, 65),
        "vigilance": rng.randint(1, 10),
        "fatigue": rng.randint(1, 10),
    }
    return json.dumps(answers, indent=2, sort_keys=True) + "\n"


def _behavior_csv(rng: random.Random) -> str:
    lines = ["trial,stimulus,response,reaction_time_ms"]
    for trial in range(1, 41):
        stimulus = rng.choice(("left", "right"))
        response = stimulus if rng.random() < 0.85 else ("right" if stimulus == "left" else "left")
        lines.append(f"{trial},{stimulus},{response},{rng.gauss(450, 80):.1f}")
    return "\n".join(lines) + "\n"


def write_demo_recordings(root: Path, records: tuple[str, ...] = DEMO_RECORDS) -> list[Path]:
    """Write the raw files of ``records`` under ``root/<id>/<task>/<modality>/``.

    Returns the paths written, in a stable order.
    """
    written: list[Path] = []
    for record_id in records:
        for task, modalities in DEMO_TASK_MODALITIES.items():
            rng = random.Random(f"{record_id}/{task}")
            contents = {
                "EEG": ("raw.csv", _eeg_csv(rng)),
                "clinical": ("answers.json", _clinical_json(rng, record_id, task)),
                "behavior": ("responses.csv", _behavior_csv(rng)),
            }
            for modality in modalities:
                name, text = contents[modality]
                path = root / record_id / task / modality / name
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(text, encoding="utf-8")
                written.append(path)
    return written


def load_demo(server: EmulatorServer, project: str = DEMO_PROJECT) -> None:
    """Serve the demo recordings from ``server`` as ``project``.

    Record -> session, task -> scan of that type, modality -> resource (see
    :meth:`~sinagot.testing.EmulatorServer.load_dataset`); loading twice changes nothing.
    """
    with tempfile.TemporaryDirectory(prefix="sinagot-demo-") as scratch:
        root = Path(scratch)
        write_demo_recordings(root)
        server.load_dataset(project, root, DEMO_TASK_MODALITIES, name="SoNeTAA demo")
