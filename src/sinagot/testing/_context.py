"""What a request handler works with: the app's state, the request, and the objects its path names."""

from __future__ import annotations

from dataclasses import dataclass

from aiohttp import web

from sinagot.errors import EmulatorError

from ._auth import Accounts
from ._extract import ExtractLimits
from ._faults import FaultInjector
from ._memo import FileMemo
from ._pace import Pace
from ._records import Experiment, NotFoundError, Owner, Project, Resource, Scan, Subject
from ._routes import Target, experiment_uri, uri_part
from ._store import Store

__all__ = ["STATE", "AppState", "Call", "HttpError", "Resolved", "find_resource", "resolve"]


@dataclass(frozen=True, slots=True)
class AppState:
    store: Store
    accounts: Accounts
    injector: FaultInjector
    pace: Pace
    extract_limits: ExtractLimits
    memo: FileMemo


STATE: web.AppKey[AppState] = web.AppKey("state")


class HttpError(EmulatorError):
    """A request the emulator refuses, answered with ``status`` and the message as text."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True, slots=True)
class Call:
    request: web.Request
    state: AppState
    target: Target
    user: str

    @property
    def store(self) -> Store:
        return self.state.store

    def param(self, name: str, default: str = "") -> str:
        return self.request.query.get(name, default)

    def flag(self, name: str) -> bool:
        return self.param(name).lower() in ("true", "1", "yes")

    def may_access(self, project: str) -> bool:
        return self.state.accounts.may_access(self.user, project)

    def check_access(self, project: str) -> None:
        if not self.may_access(project):
            raise HttpError(403, f"user {self.user!r} has no access to project {project!r}")


@dataclass(frozen=True, slots=True)
class Resolved:
    project: Project | None = None
    subject: Subject | None = None
    experiment: Experiment | None = None
    scan: Scan | None = None

    @property
    def owner(self) -> Owner:
        if self.scan is not None:
            return Owner("scan", f"{self.scan.experiment_id}/{self.scan.id}")
        if self.experiment is not None:
            return Owner("experiment", self.experiment.id)
        if self.subject is not None:
            return Owner("subject", self.subject.id)
        assert self.project is not None
        return Owner("project", self.project.id)

    @property
    def projects(self) -> frozenset[str]:
        """The projects whose access :func:`resolve` checked."""
        found = {self.project.id} if self.project is not None else set()
        if self.subject is not None:
            found.add(self.subject.project)
        if self.experiment is not None:
            found.add(self.experiment.project)
        return frozenset(found)

    @property
    def owner_uri(self) -> str:
        assert self.project is not None or self.experiment is not None
        if self.experiment is not None:
            uri = experiment_uri(self.experiment)
            return uri if self.scan is None else f"{uri}/scans/{uri_part(self.scan.id)}"
        assert self.project is not None
        base = f"/data/projects/{uri_part(self.project.id)}"
        return base if self.subject is None else f"{base}/subjects/{uri_part(self.subject.id)}"

    @property
    def zip_root(self) -> str:
        if self.scan is not None and self.experiment is not None:
            return f"{self.experiment.label}/scans/{self.scan.id}"
        if self.experiment is not None:
            return self.experiment.label
        if self.subject is not None:
            return self.subject.label
        assert self.project is not None
        return self.project.id


def resolve(call: Call, *, upto: str) -> Resolved:
    """Look up the objects of the target down to level ``upto`` (blocking: run in a thread)."""
    store, t = call.store, call.target
    levels = ("project", "subject", "experiment", "scan")
    depth = levels.index(upto)
    project = subject = experiment = None
    scan = None
    if t.project is not None:
        project = store.get_project(t.project)
        if project is None:
            raise NotFoundError(f"project {t.project}")
        call.check_access(project.id)
    if t.subject is not None and depth >= 1:
        subject = store.find_subject(t.project, t.subject)
        if subject is None:
            raise NotFoundError(f"subject {t.subject}")
        call.check_access(subject.project)
    if t.experiment is not None and depth >= 2:
        experiment = store.find_experiment(
            t.project, t.experiment, subject.id if subject is not None else None
        )
        if experiment is None:
            raise NotFoundError(f"experiment {t.experiment}")
        call.check_access(experiment.project)
        if project is None:
            project = store.get_project(experiment.project)
    if t.scan is not None and depth >= 3:
        assert experiment is not None
        scan = store.find_scan(experiment.id, t.scan)
        if scan is None:
            raise NotFoundError(f"scan {t.scan}")
    if project is None and subject is not None:
        project = store.get_project(subject.project)
    return Resolved(project, subject, experiment, scan)


def find_resource(call: Call, resolved: Resolved) -> Resource:
    assert call.target.resource is not None
    resource = call.store.find_resource(resolved.owner, call.target.resource)
    if resource is None:
        raise NotFoundError(f"resource {call.target.resource}")
    return resource
