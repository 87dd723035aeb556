"""The invariants of the fault campaign, checked from the server's disk and the cache's.

Nothing here asks the daemon what it did: the server's index and the bytes under it, a
clean run of the scripts on the inputs as the server holds them now, the cache folder
and ``/proc`` say whether anything was lost, doubled, left half done or leaked. (Failed
jobs are the one exception: only the daemon knows which attempts it gave up.)
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sinagot import Dataset
from sinagot.cache.internals import NEW_STAGING_PREFIX, STAGING_PREFIX

PIPELINE = "sinagot"
MARKERS = "PROVENANCE"
# The provenance fields a clean run must agree with; the others say when and where it ran.
_COMPARED = (
    "record",
    "task",
    "modality",
    "script",
    "parameters",
    "inputs",
    "outputs",
    "status",
    "sinagot_version",
)


@dataclass(frozen=True, slots=True)
class Violation:
    """One broken invariant: its kind (the name of the invariant) and what was seen."""

    kind: str
    detail: str

    def __str__(self) -> str:
        return f"{self.kind}: {self.detail}"


@dataclass(frozen=True, slots=True)
class Expected:
    """What a clean run made of one session: derivative label -> its files (name relative to
    their folder -> MD5) and its provenance."""

    files: Mapping[str, Mapping[str, str]]
    provenance: Mapping[str, Mapping[str, Any]]


def md5_of(path: Path) -> str:
    digest = hashlib.md5()
    with path.open("rb") as stream:
        while chunk := stream.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def clean_run(
    scripts: Path, tasks: Mapping[str, str], inputs: Mapping[str, bytes], base: Path
) -> dict[str, Expected]:
    """Run the scripts in ``scripts`` with the library, serially, on a fresh local dataset
    holding ``inputs`` (session -> the bytes of its one input), in ``base``; what each
    session's derivatives must be. ``tasks``: task -> modality (one each)."""
    shutil.rmtree(base, ignore_errors=True)
    data = base / "data"
    ((task, modality),) = tasks.items()
    for session, raw in inputs.items():
        folder = data / session / task / modality
        folder.mkdir(parents=True)
        (folder / "raw.csv").write_bytes(raw)
    names = sorted(p.stem for p in (scripts / modality).glob("*.py"))
    config = base / "clean.toml"
    config.write_text(
        "\n".join(
            [
                "[path]",
                f'dataset = "{data}"',
                f'scripts = "{scripts}"',
                "[records]",
                'id_pattern = "REC-\\\\d{6}-[A-Z]"',
                f"[tasks.{task}]",
                f'modalities = ["{modality}"]',
                f"[modalities.{modality}]",
                f"scripts = {json.dumps(names)}",
                "[log]",
                'level = "WARNING"',
            ]
        )
        + "\n"
    )
    data.mkdir(parents=True, exist_ok=True)
    report = Dataset(str(config)).run()
    if report.failed:
        raise RuntimeError(f"the clean run failed:\n{report}")
    expected: dict[str, Expected] = {}
    for session in inputs:
        derivatives = data / session / "derivatives"
        files: dict[str, dict[str, str]] = {}
        provenance: dict[str, dict[str, Any]] = {}
        for document in sorted((derivatives / ".provenance").glob("*.json")):
            name, pipeline = document.stem.split("@")
            label = f"{name}___at___{pipeline}"
            record = json.loads(document.read_text())
            provenance[label] = {key: record.get(key) for key in _COMPARED}
            files[label] = {
                Path(output).name: md5_of(derivatives / output) for output in record["outputs"]
            }
        expected[session] = Expected(files, provenance)
    return expected


def check_server(
    snapshot: Mapping[str, Any],
    expected: Mapping[str, Expected],
    inputs: Mapping[str, bytes],
    deleted: Iterable[str],
) -> list[Violation]:
    """The server against the clean run: every session the campaign put is there with its
    last input, holds exactly the derivatives of the clean run, each once, each with one
    marker naming the same inputs, script, parameters and outputs, and the bytes stored
    are those; no marker without its derivative; no upload left in the server's staging."""
    found: list[Violation] = []
    sessions: Mapping[str, Any] = snapshot["sessions"]
    for leftover in snapshot["staging"]:
        found.append(Violation("server staging left", leftover))
    for session in sorted(set(deleted) & set(sessions)):
        found.append(Violation("deleted session back", session))
    for session, raw in sorted(inputs.items()):
        held = sessions.get(session)
        if held is None:
            found.append(Violation("session lost", session))
            continue
        found.extend(_check_input(session, held, raw))
        found.extend(_check_session(session, held, expected[session]))
    return found


def _check_input(session: str, held: Mapping[str, Any], raw: bytes) -> list[Violation]:
    stored = [files["raw.csv"] for files in held["scans"].values() if "raw.csv" in files]
    want = hashlib.md5(raw).hexdigest()
    if len(stored) != 1 or stored[0][0] != want or md5_of(Path(stored[0][1])) != want:
        return [Violation("input not as put", f"{session}: {stored} (put {want})")]
    return []


def _check_session(session: str, held: Mapping[str, Any], expected: Expected) -> list[Violation]:
    found: list[Violation] = []
    labels = Counter(resource["label"] for resource in held["resources"])
    for label, count in sorted(labels.items()):
        if count > 1:
            found.append(Violation("duplicate resource", f"{session}: {label} x{count}"))
    resources = {resource["label"]: resource["files"] for resource in held["resources"]}
    markers = {
        name.removesuffix(".json"): entry for name, entry in resources.get(MARKERS, {}).items()
    }
    derivatives = {label for label in resources if label.endswith(f"___at___{PIPELINE}")}
    for label in sorted(derivatives - markers.keys()):
        found.append(Violation("resource without marker", f"{session}: {label}"))
    for label in sorted(markers.keys() - derivatives):
        found.append(Violation("marker without resource", f"{session}: {label}"))
    for label in sorted(expected.files.keys() - derivatives):
        found.append(Violation("derivative missing", f"{session}: {label}"))
    for label in sorted(derivatives - expected.files.keys()):
        found.append(Violation("derivative not in the pipeline", f"{session}: {label}"))
    for label in sorted(derivatives & expected.files.keys()):
        stored = {name: md5_of(Path(path)) for name, (_, path) in resources[label].items()}
        listed = {name: digest for name, (digest, _) in resources[label].items()}
        if stored != listed:
            found.append(Violation("stored bytes differ from digests", f"{session}: {label}"))
        if stored != expected.files[label]:
            found.append(
                Violation(
                    "derivative differs from a clean run",
                    f"{session}: {label} {stored} != {dict(expected.files[label])}",
                )
            )
        if label in markers:
            found.extend(_check_marker(session, label, markers[label], expected))
    return found


def _check_marker(
    session: str, label: str, marker: list[str], expected: Expected
) -> list[Violation]:
    try:
        document = json.loads(Path(marker[1]).read_bytes())
    except ValueError:
        return [Violation("marker unreadable", f"{session}: {label}")]
    seen = {key: document.get(key) for key in _COMPARED}
    want = expected.provenance[label]
    differing = sorted(key for key in _COMPARED if seen[key] != want[key])
    if differing:
        what = ", ".join(f"{key} {seen[key]!r} != {want[key]!r}" for key in differing)
        return [Violation("provenance differs from a clean run", f"{session}: {label}: {what}")]
    return []


def check_cache(root: Path, verify: tuple[int, str]) -> list[Violation]:
    """No staging folder (a download's, finished or not) left in the cache below ``root``,
    and ``sinagot cache verify`` (its exit code and output) clean."""
    found: list[Violation] = []
    code, output = verify
    if code != 0:
        found.append(Violation("cache verify", output.strip().replace("\n", " | ")))
    for folder, dirnames, _ in os.walk(root):
        for name in dirnames:
            if name.startswith((STAGING_PREFIX, NEW_STAGING_PREFIX)):
                found.append(Violation("cache staging left", str(Path(folder, name))))
    return found


def check_failed_jobs(jobs: Iterable[Mapping[str, Any]]) -> list[Violation]:
    """Every job the daemon gave up on: each was a session the clean run processed."""
    return [
        Violation("job failed", f"{job['session']} (job {job['id']}): {job.get('last_error')}")
        for job in jobs
        if job["state"] == "failed"
    ]
