"""Running one step, in whatever process executes it (main process or a Dask worker).

Everything here works from a picklable :class:`StepSpec` and the results of the
step's upstream steps; it touches only files under the store's local root and
never the store itself: the main process commits outputs and provenance.
"""

from __future__ import annotations

import logging
import os
import shutil
import socket
import time
import traceback
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .._fs import fsync_dir, md5_file
from .._layout import LOGS_DIR, STAGING_DIR, list_files
from .._report import StepKey, StepResult, StepStatus
from ..errors import ScriptError
from ._provenance import STATUS_ADOPTED, STATUS_SUCCESS, build_provenance, stale_reason, utc_now
from ._scripts import LoadedScript, PathSpec, ScriptPaths, load_script, shape_paths
from ._status_log import LegacyStatus, write_status
from ._worktree import output_folder

__all__ = [
    "StepSpec",
    "attempt_marker",
    "execute_step",
    "remove_dead_staging",
]

_log = logging.getLogger("sinagot.run")


# Staging folders are named host~pid~random so a later run can tell which ones
# belong to a process that died (SIGKILL, power cut) and remove them.
_HOST = socket.gethostname()
_SEPARATOR = "~"

# Loaded script classes per process, so a Dask worker imports each script version once.
_SCRIPTS: dict[tuple[Path, str], LoadedScript] = {}


@dataclass(frozen=True, slots=True)
class StepSpec:
    """Everything needed to decide on and run one step, picklable for Dask."""

    key: StepKey
    # Where the script's paths are (the work tree), and where the record's bookkeeping is
    # (staging, logs: ``<store root>/<id>/derivatives``).
    local_root: Path
    book_dir: Path
    run_id: str
    script_file: Path
    # What an output's work-tree path starts with before its derivative name ("" in a
    # free-form dataset, where outputs are where PATH_OUT says).
    output_prefix: str = ""
    # The record's status log (JSON lines; Sinagot 0.1's LOG/<id>.log in a 0.1 dataset).
    status_log: Path | None = None
    # Sinagot 0.1's layout: outputs that exist without provenance are adopted as done.
    freeform: bool = False
    # Checked only: an upstream step of a script-filtered run (never run).
    pinned: bool = False
    source_md5: str = ""
    parameters: dict[str, Any] = field(default_factory=dict)
    path_in: PathSpec = ()
    path_out: PathSpec = ()
    outputs: tuple[str, ...] = ()
    # Input paths made by upstream steps -> the producing step.
    produced_inputs: dict[str, StepKey] = field(default_factory=dict)
    upstream: tuple[StepKey, ...] = ()
    # Checksums of inputs nothing in this run changes (acquired data), by local path.
    static_checksums: dict[str, str] = field(default_factory=dict)
    missing: str | None = None
    error: str | None = None
    stale: str | None = None
    stored_provenance: dict[str, Any] | None = None
    force: bool = False

    def output_file(self, name: str) -> Path:
        """Where output ``name`` (a derivative name, see ``output_prefix``) is in the work tree."""
        return self.local_root / f"{self.output_prefix}{name}"

    def log_file(self) -> Path:
        """The file that receives the script's logs and traceback."""
        return self.book_dir / LOGS_DIR / f"{self.key.name}.log"


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_dead_staging(derivatives_dir: Path) -> None:
    """Delete staging folders left on this host by processes that no longer exist."""
    try:
        entries = list(os.scandir(derivatives_dir / STAGING_DIR))
    except FileNotFoundError:
        return
    for entry in entries:
        host, _, rest = entry.name.partition(_SEPARATOR)
        pid = rest.partition(_SEPARATOR)[0]
        if entry.is_dir() and host == _HOST and pid.isdigit() and not _process_alive(int(pid)):
            _log.info("removing %s, left by a process that died", entry.path)
            shutil.rmtree(entry.path, ignore_errors=True)


def _derivative_name(spec: StepSpec, local_path: str) -> str:
    return local_path.removeprefix(spec.output_prefix)


def _inputs(
    spec: StepSpec, upstream: Mapping[StepKey, StepResult]
) -> tuple[dict[str, str] | None, str]:
    """Checksums of every input file, or (None, why) if an upstream output is missing."""
    inputs = dict(spec.static_checksums)
    for local_path, producer in spec.produced_inputs.items():
        name = _derivative_name(spec, local_path)
        outputs = upstream[producer].outputs
        found = {n: md5 for n, md5 in outputs.items() if n == name or n.startswith(f"{name}/")}
        if not found:
            return None, f"{producer} did not produce {local_path}"
        for output, md5 in found.items():
            inputs[f"{spec.output_prefix}{output}"] = md5
    return inputs, ""


def attempt_marker(spec: StepSpec) -> Path:
    """A file that counts the attempts at ``spec`` in this run, across worker deaths."""
    return spec.book_dir / STAGING_DIR / f"{spec.key.name}-{spec.run_id}.attempts"


def _count_attempt(spec: StepSpec) -> tuple[Path, int]:
    # A retried task (its worker died) finds the marker of the earlier attempt.
    marker = attempt_marker(spec)
    marker.parent.mkdir(parents=True, exist_ok=True)
    with marker.open("ab") as handle:
        handle.write(b".")
        handle.flush()
        os.fsync(handle.fileno())
    return marker, marker.stat().st_size


def _script(spec: StepSpec) -> LoadedScript:
    cache_key = (spec.script_file, spec.source_md5)
    loaded = _SCRIPTS.get(cache_key)
    if loaded is None:
        loaded = load_script(spec.script_file, spec.key.modality, spec.key.script)
        if loaded.source_md5 != spec.source_md5:
            raise ScriptError(f"{spec.script_file}: changed during the run: run again")
        _SCRIPTS[cache_key] = loaded
    return loaded


def _step_logger(spec: StepSpec) -> tuple[logging.Logger, logging.FileHandler]:
    path = spec.log_file()
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(path, mode="w", encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    # Not registered with logging.getLogger: thousands of steps must not leak loggers.
    logger = logging.Logger(f"sinagot.scripts.{spec.key.modality}.{spec.key.script}")
    logger.parent = logging.getLogger("sinagot.scripts")
    logger.addHandler(handler)
    return logger, handler


def _output_files(root: Path, name: str) -> dict[str, Path]:
    """The files of output ``name`` below ``root`` (a file, or a folder's visible files)."""
    found = list_files(root / name) if (root / name).exists() else ()
    return {
        (f"{name}/{relative}" if relative else name): root / name / relative for relative in found
    }


def _collect_outputs(spec: StepSpec, staging: Path) -> tuple[dict[str, Path], dict[str, Path]]:
    """Staged output files by final name, and (Sinagot 0.1's scripts) existing outputs that
    the script left as they were; raise ScriptError if a declared output is missing."""
    staged: dict[str, Path] = {}
    kept: dict[str, Path] = {}
    for local_path in spec.outputs:
        name = _derivative_name(spec, local_path)
        files = _output_files(staging, name)
        if not files and spec.freeform:
            # A 0.1 script writes in place or not at all: what it did not rewrite stays.
            existing = _output_files(spec.local_root, local_path)
            if existing:
                kept.update(existing)
                continue
        if not files:
            raise ScriptError(f"{spec.script_file}: run() did not write the output {local_path}")
        staged.update(files)
    return staged, kept


def _move_into_place(spec: StepSpec, staging: Path, files: Mapping[str, Path]) -> dict[str, str]:
    """Hash, fsync and rename staged outputs into place; returns name -> md5."""
    checksums: dict[str, str] = {}
    for name, path in files.items():
        checksums[name] = md5_file(path)
        with path.open("rb") as handle:
            os.fsync(handle.fileno())
    for local_path in spec.outputs:
        name = _derivative_name(spec, local_path)
        if not (staging / name).exists():
            continue
        destination = spec.output_file(name)
        destination.parent.mkdir(parents=True, exist_ok=True)
        if destination.is_dir() and not destination.is_symlink():
            # A directory output is replaced whole so no stale file survives in it.
            shutil.rmtree(destination)
        os.replace(staging / name, destination)
        fsync_dir(destination.parent)
    return checksums


def _run_script(spec: StepSpec, inputs: dict[str, str], started: str) -> StepResult:
    begin = time.perf_counter()
    owner = f"{_HOST}{_SEPARATOR}{os.getpid()}"
    staging = spec.book_dir / STAGING_DIR / f"{owner}{_SEPARATOR}{uuid.uuid4().hex}"
    logger, handler = _step_logger(spec)
    write_status(spec.status_log, spec.key, LegacyStatus.PROCESSING, "Processing run")
    try:
        loaded = _script(spec)
        staging.mkdir(parents=True)
        skip = spec.output_prefix.count("/")
        output = shape_paths(spec.path_out, spec.key.record, spec.key.task, staging, skip=skip)
        for path in output.values() if isinstance(output, dict) else [output]:
            path.parent.mkdir(parents=True, exist_ok=True)
        paths = ScriptPaths(
            input=shape_paths(spec.path_in, spec.key.record, spec.key.task, spec.local_root),
            output=output,
        )
        script = loaded.cls(id=spec.key.record, task=spec.key.task, path=paths, logger=logger)
        script.run()
        staged, kept = _collect_outputs(spec, staging)
        checksums = _move_into_place(spec, staging, staged)
        checksums.update({name: md5_file(path) for name, path in kept.items()})
    except Exception as exc:
        logger.propagate = False  # the traceback goes to the step's log file only
        logger.error("step %s failed\n%s", spec.key, traceback.format_exc().rstrip())
        error = f"{type(exc).__name__}: {exc} (log: {spec.log_file()})"
        _log.error("Step run failed %s: %s", spec.key, error)
        write_status(spec.status_log, spec.key, LegacyStatus.ERROR, error)
        return StepResult(
            spec.key, StepStatus.FAILED, error=error, seconds=time.perf_counter() - begin
        )
    finally:
        handler.close()
        logger.removeHandler(handler)
        shutil.rmtree(staging, ignore_errors=True)
    provenance = _provenance(spec, inputs, checksums, started, utc_now())
    write_status(spec.status_log, spec.key, LegacyStatus.DONE, "Run finished")
    return StepResult(
        spec.key,
        StepStatus.RAN,
        seconds=time.perf_counter() - begin,
        outputs=checksums,
        provenance=provenance,
    )


def _decide(spec: StepSpec, upstream: Mapping[StepKey, StepResult]) -> StepResult | dict[str, str]:
    """A final result if the step must not run, else the input checksums to run it with."""
    key = spec.key
    if spec.error is not None:
        return StepResult(key, StepStatus.FAILED, error=spec.error)
    for producer in spec.upstream:
        status = upstream[producer].status
        if status in (StepStatus.FAILED, StepStatus.UPSTREAM_FAILED):
            return StepResult(key, StepStatus.UPSTREAM_FAILED, reason=f"{producer} failed")
        if status is StepStatus.MISSING_INPUT:
            return StepResult(key, StepStatus.MISSING_INPUT, reason=f"{producer}: missing input")
    if spec.missing is not None:
        if spec.freeform:
            # As Sinagot 0.1 logged it (its own layout does not: a log per missing step
            # and run would only grow).
            write_status(spec.status_log, key, LegacyStatus.DATA_NOT_AVAILABLE, spec.missing)
        return StepResult(key, StepStatus.MISSING_INPUT, reason=spec.missing)
    inputs, why = _inputs(spec, upstream)
    if inputs is None:
        return StepResult(key, StepStatus.MISSING_INPUT, reason=why)
    return inputs


def _provenance(
    spec: StepSpec,
    inputs: Mapping[str, str],
    outputs: Mapping[str, str],
    started: str,
    finished: str,
    status: str = STATUS_SUCCESS,
) -> dict[str, Any]:
    """The provenance of ``spec``'s outputs; a free-form step's names the folder its
    derivative holds them relative to."""
    return build_provenance(
        record=spec.key.record,
        task=spec.key.task,
        modality=spec.key.modality,
        script=spec.key.script,
        source_md5=spec.source_md5,
        parameters=spec.parameters,
        inputs=inputs,
        outputs=outputs,
        started=started,
        finished=finished,
        status=status,
        folder=output_folder(spec.outputs) if spec.freeform else None,
    )


def _existing_outputs(spec: StepSpec) -> dict[str, str] | None:
    """MD5 of every file of the step's outputs in the work tree, or None unless all exist."""
    if not spec.outputs:
        return None
    checksums: dict[str, str] = {}
    for local_path in spec.outputs:
        files = _output_files(spec.local_root, local_path)
        if not files:
            return None
        checksums.update({_derivative_name(spec, n): md5_file(p) for n, p in files.items()})
    return checksums


def _adopt(spec: StepSpec, upstream: Mapping[StepKey, StepResult]) -> StepResult | None:
    """Sinagot 0.1's DONE: outputs that exist but that Sinagot did not write (no provenance)
    are kept as done, with a provenance saying so (from then on it decides reruns)."""
    if (
        not spec.freeform
        or spec.error is not None
        or spec.force
        or spec.stored_provenance is not None
        or spec.stale
    ):
        return None
    outputs = _existing_outputs(spec)
    if outputs is None:
        return None
    inputs = _inputs(spec, upstream)[0] if spec.missing is None else None
    now = utc_now()
    if inputs is None:
        inputs = dict(spec.static_checksums)
    provenance = _provenance(spec, inputs, outputs, now, now, STATUS_ADOPTED)
    _log.info("Step %s: kept its existing output, not written by Sinagot (adopted)", spec.key)
    write_status(spec.status_log, spec.key, LegacyStatus.DONE, "Run already processed")
    return StepResult(
        spec.key,
        StepStatus.UP_TO_DATE,
        reason="adopted: existing output kept",
        outputs=outputs,
        provenance=provenance,
    )


def _pinned(spec: StepSpec, upstream: Mapping[StepKey, StepResult]) -> StepResult:
    """An upstream step of a script-filtered run: never run, its outputs taken as they are."""
    adopted = _adopt(spec, upstream)
    if adopted is not None:
        return adopted
    if spec.error is None and spec.stored_provenance is not None and spec.stale is None:
        outputs = spec.stored_provenance.get("outputs", {})
        return StepResult(spec.key, StepStatus.UP_TO_DATE, outputs=dict(outputs))
    outputs = _existing_outputs(spec)
    if outputs is None:
        return StepResult(
            spec.key, StepStatus.MISSING_INPUT, reason="not run: outside the named step"
        )
    return StepResult(
        spec.key, StepStatus.UP_TO_DATE, reason="outside the named step", outputs=outputs
    )


def execute_step(spec: StepSpec, *upstream_results: StepResult) -> StepResult:
    """Decide whether ``spec`` is up to date and run it if not.

    ``upstream_results`` are the results of ``spec.upstream``, in that order
    (Dask passes them from the upstream futures).
    """
    upstream = {result.key: result for result in upstream_results}
    if spec.pinned:
        return _pinned(spec, upstream)
    adopted = _adopt(spec, upstream)
    if adopted is not None:
        return adopted
    decision = _decide(spec, upstream)
    if isinstance(decision, StepResult):
        return decision
    reason = "forced" if spec.force else spec.stale
    if reason is None:
        reason = stale_reason(
            spec.stored_provenance,
            inputs=decision,
            source_md5=spec.source_md5,
            parameters=spec.parameters,
        )
    if reason is None:
        outputs = (spec.stored_provenance or {}).get("outputs", {})
        return StepResult(spec.key, StepStatus.UP_TO_DATE, outputs=dict(outputs))
    marker, attempt = _count_attempt(spec)
    started = utc_now()
    _log.info("Begin step run %s (%s)", spec.key, reason)
    try:
        result = _run_script(spec, decision, started)
    finally:
        marker.unlink(missing_ok=True)
    if result.status is StepStatus.RAN:
        _log.info("Step run finished %s in %.2f s", spec.key, result.seconds)
    return StepResult(
        result.key,
        result.status,
        error=result.error,
        reason=reason,
        attempts=attempt,
        seconds=result.seconds,
        outputs=result.outputs,
        provenance=result.provenance,
    )
