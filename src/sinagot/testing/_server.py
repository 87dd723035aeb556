"""`EmulatorServer`: start, stop and seed the XNAT-compatible server."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Collection, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType

from aiohttp import web

from sinagot.errors import EmulatorError

from ._app import build_app
from ._auth import Accounts
from ._context import AppState
from ._extract import ExtractLimits
from ._faults import FaultInjector, FaultRule
from ._memo import FileMemo
from ._pace import Pace
from ._profile import Profile, as_profile
from ._records import NotFoundError, Owner, check_session_attributes
from ._store import Store
from ._tokens import DEFAULT_ALIAS_TOKEN_TIMEOUT, TokenBook

__all__ = ["EmulatorServer"]

logger = logging.getLogger(__name__)

_THREAD_START_TIMEOUT = 30.0
_SHUTDOWN_GRACE = 2.0


class EmulatorServer:
    """An XNAT-compatible HTTP server over the state kept in ``data_dir``.

    Use it as an async context manager inside a running loop, or call
    :meth:`running_in_thread` from synchronous code. The seeding and counter
    methods are synchronous and thread-safe, usable while the server runs.
    """

    def __init__(
        self,
        data_dir: Path | str,
        *,
        users: Mapping[str, str] | None = None,
        project_access: Mapping[str, Collection[str] | None] | None = None,
        faults: Sequence[FaultRule] = (),
        seed: int = 0,
        session_expiry: float | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        profile: str | Profile = "fast",
        checksums: bool = True,
        extract_limits: ExtractLimits | None = None,
        alias_tokens: bool = True,
        alias_token_timeout: float = DEFAULT_ALIAS_TOKEN_TIMEOUT,
    ) -> None:
        """Serve ``data_dir``; nothing listens until :meth:`start` (or a ``with``).

        ``profile`` is ``"fast"``, ``"production"`` or a :class:`Profile` (its delays are
        drawn from ``seed``, as are probabilistic faults). ``checksums`` False is an XNAT
        with its checksum setting off: files stored meanwhile are listed without a digest.
        ``extract_limits`` bounds what one ``extract=true`` upload may unpack. Alias
        tokens expire ``alias_token_timeout`` seconds after they are issued (XNAT's
        ``aliasTokenTimeout``, 2 days by default); ``alias_tokens`` False is an XNAT
        without the token service.
        """
        self.data_dir = Path(data_dir)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        users = dict(users) if users else {"admin": "admin"}
        access = {
            name: None if projects is None else frozenset(projects)
            for name, projects in (project_access or {}).items()
        }
        if not alias_token_timeout > 0:
            raise EmulatorError(
                f"alias_token_timeout {alias_token_timeout}: give a positive number of seconds"
            )
        self.tokens = (
            TokenBook(self.data_dir / "tokens.sqlite3", alias_token_timeout)
            if alias_tokens
            else None
        )
        self.accounts = Accounts(
            passwords=users,
            access={name: access.get(name) for name in users},
            expiry=session_expiry,
            tokens=self.tokens,
        )
        self.injector = FaultInjector(seed=seed)
        self.injector.set_rules(list(faults))
        self.pace = Pace(as_profile(profile), seed)
        self.store = Store(self.data_dir, checksums=checksums)
        self.extract_limits = extract_limits or ExtractLimits()
        self._host = host
        self._port = port
        self._runner: web.AppRunner | None = None
        self._url: str | None = None

    # -- lifecycle ---------------------------------------------------------------------------

    @property
    def url(self) -> str:
        """``http://HOST:PORT`` once started."""
        if self._url is None:
            raise RuntimeError("the emulator is not running: use it in `async with` first")
        return self._url

    async def start(self) -> None:
        app = build_app(
            AppState(
                self.store, self.accounts, self.injector, self.pace, self.extract_limits, FileMemo()
            )
        )
        # A short grace period: a test stopping the server must not wait a minute for a
        # trickling or stalled download to finish.
        runner = web.AppRunner(
            app, access_log=None, handle_signals=False, shutdown_timeout=_SHUTDOWN_GRACE
        )
        await runner.setup()
        site = web.TCPSite(runner, self._host, self._port, reuse_address=True)
        try:
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        host, port = runner.addresses[0][:2]
        self._url = f"http://{host}:{port}"
        logger.info("XNAT emulator listening on %s (data in %s)", self._url, self.data_dir)

    async def stop(self) -> None:
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()
        self._url = None

    def close(self) -> None:
        """Release the index and the tokens; call after the server stopped for good."""
        self.store.close()
        if self.tokens is not None:
            self.tokens.close()

    async def __aenter__(self) -> EmulatorServer:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    @contextmanager
    def running_in_thread(self) -> Iterator[EmulatorServer]:
        """Serve from a background thread with its own event loop while the block runs."""
        loop = asyncio.new_event_loop()
        ready = threading.Event()
        failure: list[BaseException] = []

        def serve() -> None:
            asyncio.set_event_loop(loop)
            try:
                loop.run_until_complete(self.start())
            except BaseException as exc:
                failure.append(exc)
                ready.set()
                loop.close()
                return
            ready.set()
            loop.run_forever()
            loop.run_until_complete(self.stop())
            # Handlers of connections still open (a client that never hung up) outlive the
            # runner's cleanup: end them here rather than leave them to the garbage collector.
            leftovers = asyncio.all_tasks(loop)
            for task in leftovers:
                task.cancel()
            loop.run_until_complete(asyncio.gather(*leftovers, return_exceptions=True))
            loop.run_until_complete(loop.shutdown_default_executor())
            loop.close()

        thread = threading.Thread(target=serve, name="xnat-emulator", daemon=True)
        thread.start()
        if not ready.wait(_THREAD_START_TIMEOUT):
            raise RuntimeError("the emulator thread did not start within 30 s")
        if failure:
            thread.join()
            raise failure[0]
        try:
            yield self
        finally:
            loop.call_soon_threadsafe(loop.stop)
            thread.join()

    # -- seeding and inspection (sync, thread-safe) ------------------------------------------

    def create_project(
        self,
        project: str,
        name: str = "",
        description: str = "",
        *,
        checksums: bool | None = None,
    ) -> str:
        """Create (or find) ``project``; with ``checksums`` False its files get no digest.

        ``checksums`` None leaves the setting of an existing project as it is (a new one
        starts with it on).
        """
        created = self.store.create_project(
            project, name, description, checksums=checksums is not False
        )
        if checksums is not None and created.checksums != checksums:
            self.store.set_checksums(checksums, project)
        return created.id

    def create_session(
        self,
        project: str,
        label: str,
        *,
        subject: str | None = None,
        xsi_type: str = "xnat:mrSessionData",
        date: str = "",
        time: str = "",
        visit_id: str = "",
        age: float | None = None,
        modality: str = "",
    ) -> str:
        """Create (or find) the experiment ``label`` and its subject; return the experiment ID.

        ``date`` is ``YYYY-MM-DD``, ``time`` ``HH:MM:SS``, ``age`` in years; ``modality``
        defaults to that of ``xsi_type`` (``MR``, ``EEG``). A session found is left as is.
        """
        attributes = {"date": date, "time": time, "visit_id": visit_id, "modality": modality}
        if age is not None:
            attributes["age"] = str(age)
        try:
            check_session_attributes(attributes)
        except ValueError as exc:
            raise EmulatorError(f"session {label}: {exc}") from exc
        found = self.store.create_subject(project, subject or label)
        return self.store.create_experiment(project, found.id, label, xsi_type, attributes).id

    def add_scan_file(
        self,
        project: str,
        session: str,
        *,
        scan_type: str,
        resource: str,
        name: str,
        data: bytes | Path,
        scan_id: str | None = None,
        digest: bool = True,
    ) -> str:
        """Store a file in the scan of ``scan_type`` (created if needed); return its digest.

        With ``digest`` False the file is listed with an empty digest, as XNAT lists
        files archived before its checksum setting was on (the return value is then
        ``""``); True follows the site's and the project's settings.
        """
        experiment = self.store.find_experiment(project, session)
        if experiment is None:
            raise NotFoundError(
                f"session {session} does not exist in project {project}: call create_session first"
            )
        scans = self.store.scans(experiment.id)
        scan = next((s for s in scans if s.type == scan_type and scan_id in (None, s.id)), None)
        if scan is None:
            new_id = scan_id or str(
                1 + max((int(s.id) for s in scans if s.id.isdigit()), default=0)
            )
            scan = self.store.create_scan(experiment.id, new_id, scan_type)
        owner = Owner("scan", f"{experiment.id}/{scan.id}")
        entry = self.store.write_file(
            owner, resource, name, data, digests=None if digest else False
        )
        return entry.digest

    def set_checksums(self, enabled: bool, project: str | None = None) -> None:
        """Turn the checksum setting of the site, or of ``project``, on or off.

        Files keep the digest (or none) they were stored with, as on XNAT.
        """
        self.store.set_checksums(enabled, project)

    @property
    def profile(self) -> Profile:
        return self.pace.profile

    def set_profile(self, profile: str | Profile) -> None:
        """Answer as ``profile`` from the next request on (safe while the server runs)."""
        self.pace.profile = as_profile(profile)

    def set_fields(self, project: str, session: str, values: Mapping[str, str]) -> None:
        experiment = self.store.find_experiment(project, session)
        if experiment is None:
            raise NotFoundError(
                f"session {session} does not exist in project {project}: call create_session first"
            )
        self.store.set_fields(Owner("experiment", experiment.id), values)

    def load_dataset(
        self, project: str, root: Path, tasks: Mapping[str, Sequence[str]], *, name: str = ""
    ) -> None:
        """Seed ``project`` from a local dataset tree ``<root>/<record>/<task>/<modality>/...``.

        Each record folder becomes a session (and its subject), each task of ``tasks``
        (task -> its modalities) a scan of that type with ID 1, 2, ... in the order
        given, each modality a resource of it holding the files below its folder.
        Loading the same tree again changes nothing.
        """
        self.create_project(project, name)
        for record in sorted(p.name for p in root.iterdir() if p.is_dir()):
            self.create_session(project, record, subject=record)
            for index, (task, modalities) in enumerate(tasks.items(), 1):
                for modality in modalities:
                    folder = root / record / task / modality
                    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
                        self.add_scan_file(
                            project,
                            record,
                            scan_type=task,
                            scan_id=str(index),
                            resource=modality,
                            name=path.relative_to(folder).as_posix(),
                            data=path,
                        )

    def request_counts(self) -> dict[str, int]:
        """Requests per ``"METHOD /route/{template}"`` since start or the last reset."""
        return self.injector.request_counts()

    def fault_counts(self) -> dict[str, int]:
        """Injected faults per kind (``status_503``, ``reset``, ...)."""
        return self.injector.fault_counts()

    def reset_counters(self) -> None:
        self.injector.reset_counters()

    def set_faults(self, rules: Sequence[FaultRule], seed: int | None = None) -> None:
        self.injector.set_rules(list(rules), seed)
