"""A directory-based dataset backend for the daemon tests (real files, no server).

The "server" is the config's dataset folder: every sub-folder is a session whose
last_modified is the mtime of its ``stamp`` file (or of the folder). Processing
copies the session's ``*.dat`` files into ``<dataset>/../out/<label>/`` with an
atomic rename. Files steer it:

- ``<dataset>/.down``: listing fails as if the server were down;
- ``<session>/sleep``: seconds to sleep while "running";
- ``<session>/fail``: the job fails with the file's text as the error;
- ``<session>/crash``: process_session raises a RuntimeError (a bug in the backend).

Every phase entered is appended to ``out/phases.log`` and every upload to
``out/uploads.log``, so tests can count them.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import shutil
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from types import MappingProxyType

from sinagot.config import Settings
from sinagot.daemon import Fingerprints, JobState, ProcessResult, SessionInfo, StepMark
from sinagot.errors import ServerError

logger = logging.getLogger("daemon_backend")


def _append(path: Path, line: str) -> None:
    with path.open("a", encoding="utf-8") as handle:
        handle.write(line + "\n")
        handle.flush()
        os.fsync(handle.fileno())


class DirBackend:
    def __init__(self, settings: Settings) -> None:
        assert settings.dataset_dir is not None
        self.name = settings.config_path.stem
        self.root = settings.dataset_dir
        self.out = self.root.parent / "out"
        self.out.mkdir(exist_ok=True)
        self.closed = False

    async def list_sessions(self) -> Sequence[SessionInfo]:
        return await asyncio.to_thread(self._list)

    def _list(self) -> list[SessionInfo]:
        if (self.root / ".down").exists():
            raise ServerError(f"server of {self.name} is down (test switch {self.root / '.down'})")
        sessions = []
        for entry in sorted(self.root.iterdir()):
            if entry.is_dir() and not entry.name.startswith("."):
                stamp = entry / "stamp"
                mtime = (stamp if stamp.exists() else entry).stat().st_mtime_ns
                sessions.append(SessionInfo(entry.name, str(mtime)))
        return sessions

    async def still_listed(self, label: str) -> bool:
        return await asyncio.to_thread((self.root / label).is_dir)

    async def process_session(
        self, label: str, enter_phase: Callable[[JobState], Awaitable[None]]
    ) -> ProcessResult:
        session = self.root / label
        work = self.out / ".work" / label
        await enter_phase(JobState.FETCHING)
        await asyncio.to_thread(_append, self.out / "phases.log", f"{label} fetching")
        files = await asyncio.to_thread(self._fetch, session, work)
        await enter_phase(JobState.RUNNING)
        await asyncio.to_thread(_append, self.out / "phases.log", f"{label} running")
        logger.info("processing %s: %d file(s)", label, len(files))
        if (session / "crash").exists():
            raise RuntimeError(f"backend bug while processing {label}")
        sleep = session / "sleep"
        if sleep.exists():
            await asyncio.sleep(float(sleep.read_text() or "0"))
        fail = session / "fail"
        if fail.exists():
            return ProcessResult(failed=1, errors=(fail.read_text().strip() or "script failed",))
        await enter_phase(JobState.UPLOADING)
        await asyncio.to_thread(self._upload, label, work)
        return ProcessResult(ran=1, uploaded=1)

    def _fetch(self, session: Path, work: Path) -> list[Path]:
        if work.exists():
            shutil.rmtree(work)
        work.mkdir(parents=True)
        files = sorted(session.glob("*.dat"))
        for path in files:
            shutil.copyfile(path, work / path.name)
        return files

    def _upload(self, label: str, work: Path) -> None:
        target = self.out / label
        staging = self.out / f".{label}.staging"
        if staging.exists():
            shutil.rmtree(staging)
        shutil.copytree(work, staging)
        if target.exists():
            shutil.rmtree(target)
        staging.rename(target)
        _append(self.out / "uploads.log", label)

    async def pipeline(self, settings: Settings | None = None) -> Fingerprints:
        """The steps of ``<dataset>/../pipeline.json`` ({unit: fingerprint}), if any."""
        return await asyncio.to_thread(self._pipeline)

    def _pipeline(self) -> Fingerprints:
        file = self.root.parent / "pipeline.json"
        steps = json.loads(file.read_text()) if file.exists() else {}
        return Fingerprints(MappingProxyType({u: StepMark(f, f) for u, f in steps.items()}))

    async def aclose(self) -> None:
        self.closed = True


def factory(settings: Settings) -> DirBackend:
    return DirBackend(settings)
