"""The emulator's state: files on disk plus a small SQLite index.

Every method is synchronous and thread-safe (one lock around one connection):
the HTTP layer calls them through ``asyncio.to_thread`` and test code calls
them directly from any thread. A file becomes visible only once fully
written and hashed: uploads go to a temporary file first and are renamed
into place under the lock, together with their index row.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from sinagot._fs import md5_file

from ._disk import FileArea
from ._index import Transaction, open_index, project_of, resource_of
from ._records import (
    ConflictError,
    Experiment,
    FileEntry,
    NotFoundError,
    Owner,
    Project,
    Resource,
    Scan,
    ScanFile,
    StagedFile,
    Subject,
    check_session_attributes,
    safe_relative_path,
)
from ._xsd import SESSION_TYPES

__all__ = ["Store"]

# The columns of subjects, experiments (with subject_label from the join) and scans are
# named as the fields of their records, so a row becomes one with Record(**row).


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


class Store:
    """Projects, subjects, experiments, scans, resources and files of one data directory."""

    def __init__(self, root: Path, *, checksums: bool = True) -> None:
        self.root = root
        self.disk = FileArea(root)
        #: The site's checksum setting: while off, files are stored without a digest in
        #: every project (as on an XNAT whose ``checksums`` setting is off).
        self.checksums = checksums
        self._lock = threading.RLock()
        # Bumped by every write (see Transaction): what was read at one value is
        # current while it lasts, so the HTTP layer may keep it.
        self.generation = 0
        self._db = open_index(root / "index.sqlite3")
        if not self.disk.had_archive:
            self._build_archive()

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # -- helpers -------------------------------------------------------------------------

    def _next_id(self, counter: str) -> int:
        self._db.execute(
            "INSERT INTO counters VALUES (?, 1) ON CONFLICT(name) DO UPDATE SET value = value + 1",
            (counter,),
        )
        row = self._db.execute("SELECT value FROM counters WHERE name = ?", (counter,)).fetchone()
        return int(row[0])

    def _transaction(self) -> Transaction:
        return Transaction(self._db, self._lock, self._next_generation)

    def _next_generation(self) -> None:
        self.generation += 1

    def _bump_experiment(self, experiment_id: str) -> None:
        # Strictly increasing even within one millisecond: pollers compare for inequality.
        self._db.execute(
            "UPDATE experiments SET modified_ms = MAX(?, modified_ms + 1) WHERE id = ?",
            (_now_ms(), experiment_id),
        )

    def _bump_owner(self, owner: Owner) -> None:
        experiment_id = owner.experiment_id
        if experiment_id is not None:
            self._bump_experiment(experiment_id)
        elif owner.kind == "subject":
            self._db.execute(
                "UPDATE subjects SET modified_ms = MAX(?, modified_ms + 1) WHERE id = ?",
                (_now_ms(), owner.key),
            )

    # -- projects ------------------------------------------------------------------------

    def create_project(
        self, project_id: str, name: str = "", description: str = "", *, checksums: bool = True
    ) -> Project:
        """The project ``project_id``, created if new (an existing one is left as it is)."""
        with self._transaction():
            self._db.execute(
                "INSERT OR IGNORE INTO projects VALUES (?, ?, ?, ?)",
                (project_id, name or project_id, description, int(checksums)),
            )
            found = self.get_project(project_id)
        assert found is not None
        return found

    def set_checksums(self, enabled: bool, project_id: str | None = None) -> None:
        """Whether files committed from now on get a digest: on the site, or in a project.

        Files keep the digest (or none) they were stored with, as on XNAT.
        """
        if project_id is None:
            self.checksums = enabled
            return
        with self._transaction():
            if self.get_project(project_id) is None:
                raise NotFoundError(f"project {project_id} does not exist: create it first")
            self._db.execute(
                "UPDATE projects SET checksums = ? WHERE id = ?", (int(enabled), project_id)
            )

    def projects(self) -> list[Project]:
        with self._lock:
            rows = self._db.execute("SELECT * FROM projects ORDER BY id").fetchall()
        return [project_of(r) for r in rows]

    def get_project(self, project_id: str) -> Project | None:
        with self._lock:
            row = self._db.execute("SELECT * FROM projects WHERE id = ?", (project_id,)).fetchone()
        return None if row is None else project_of(row)

    # -- subjects ------------------------------------------------------------------------

    def subjects(self, project: str | None) -> list[Subject]:
        with self._lock:
            if project is None:
                rows = self._db.execute("SELECT * FROM subjects ORDER BY id").fetchall()
            else:
                rows = self._db.execute(
                    "SELECT * FROM subjects WHERE project = ? ORDER BY id", (project,)
                ).fetchall()
        return [Subject(**r) for r in rows]

    def find_subject(self, project: str | None, key: str) -> Subject | None:
        with self._lock:
            if project is None:
                row = self._db.execute("SELECT * FROM subjects WHERE id = ?", (key,)).fetchone()
            else:
                row = self._db.execute(
                    "SELECT * FROM subjects WHERE project = ? AND (id = ? OR label = ?)"
                    " ORDER BY id = ? DESC LIMIT 1",
                    (project, key, key, key),
                ).fetchone()
        return None if row is None else Subject(**row)

    def create_subject(self, project: str, label: str) -> Subject:
        with self._transaction():
            if self.get_project(project) is None:
                raise NotFoundError(f"project {project} does not exist: create it first")
            found = self.find_subject(project, label)
            if found is not None:
                return found
            subject_id = f"XNAT_S{self._next_id('subject'):05d}"
            now = _now_ms()
            self._db.execute(
                "INSERT INTO subjects VALUES (?, ?, ?, ?, ?)",
                (subject_id, project, label, now, now),
            )
            created = self.find_subject(None, subject_id)
        assert created is not None
        return created

    def delete_subject(self, subject: Subject) -> None:
        with self._transaction():
            for experiment in self.experiments(subject.project, subject.id):
                self.delete_experiment(experiment)
            owner = Owner("subject", subject.id)
            self._delete_resources_of(owner)
            self._delete_fields_of(owner)
            self._db.execute("DELETE FROM subjects WHERE id = ?", (subject.id,))

    # -- experiments ---------------------------------------------------------------------

    _EXPERIMENT_SELECT = (
        "SELECT e.*, s.label AS subject_label FROM experiments e"
        " JOIN subjects s ON s.id = e.subject_id"
    )

    def experiments(self, project: str | None, subject_id: str | None = None) -> list[Experiment]:
        clauses, params = [], []
        if project is not None:
            clauses.append("e.project = ?")
            params.append(project)
        if subject_id is not None:
            clauses.append("e.subject_id = ?")
            params.append(subject_id)
        where = f" WHERE {' AND '.join(clauses)}" if clauses else ""
        with self._lock:
            rows = self._db.execute(
                f"{self._EXPERIMENT_SELECT}{where} ORDER BY e.id", params
            ).fetchall()
        return [Experiment(**r) for r in rows]

    def find_experiment(
        self, project: str | None, key: str, subject_id: str | None = None
    ) -> Experiment | None:
        with self._lock:
            if project is None:
                row = self._db.execute(
                    f"{self._EXPERIMENT_SELECT} WHERE e.id = ?", (key,)
                ).fetchone()
            else:
                row = self._db.execute(
                    f"{self._EXPERIMENT_SELECT} WHERE e.project = ? AND (e.id = ? OR e.label = ?)"
                    " ORDER BY e.id = ? DESC LIMIT 1",
                    (project, key, key, key),
                ).fetchone()
        if row is None:
            return None
        experiment = Experiment(**row)
        if subject_id is not None and experiment.subject_id != subject_id:
            return None
        return experiment

    def create_experiment(
        self,
        project: str,
        subject_id: str,
        label: str,
        xsi_type: str,
        attributes: Mapping[str, str] | None = None,
    ) -> Experiment:
        """The experiment ``label``, created with ``attributes`` if new (see
        :data:`SESSION_ATTRIBUTES`); an existing one is returned unchanged."""
        values = check_session_attributes(attributes or {})
        if not values.get("modality"):
            values["modality"] = SESSION_TYPES.get(xsi_type, "")
        with self._transaction():
            found = self.find_experiment(project, label)
            if found is not None:
                return found
            if self.find_subject(project, subject_id) is None:
                raise NotFoundError(
                    f"subject {subject_id} does not exist in project {project}: create it first"
                )
            experiment_id = f"XNAT_E{self._next_id('experiment'):05d}"
            now = _now_ms()
            self._db.execute(
                "INSERT INTO experiments (id, project, subject_id, label, xsi_type, date,"
                " insert_ms, modified_ms) VALUES (?, ?, ?, ?, ?, '', ?, ?)",
                (experiment_id, project, subject_id, label, xsi_type, now, now),
            )
            self.set_session_attributes(experiment_id, values)
            created = self.find_experiment(None, experiment_id)
        assert created is not None
        return created

    def set_session_attributes(self, experiment_id: str, values: Mapping[str, str]) -> None:
        """Set some of an experiment's :data:`SESSION_ATTRIBUTES` (ValueError if malformed)."""
        checked = check_session_attributes(values)
        if not checked:
            return
        # The names are checked against SESSION_ATTRIBUTES, the store's own column names.
        assignments = ", ".join(f"{name} = ?" for name in checked)
        with self._transaction():
            self._db.execute(
                f"UPDATE experiments SET {assignments} WHERE id = ?",
                [*checked.values(), experiment_id],
            )
            self._bump_experiment(experiment_id)

    def delete_experiment(self, experiment: Experiment) -> None:
        with self._transaction():
            for scan in self.scans(experiment.id):
                self.delete_scan(scan)
            owner = Owner("experiment", experiment.id)
            self._delete_resources_of(owner)
            self._delete_fields_of(owner)
            self._db.execute("DELETE FROM experiments WHERE id = ?", (experiment.id,))

    # -- custom fields ---------------------------------------------------------------------

    def fields(self, owner: Owner) -> dict[str, str]:
        """The custom fields (``fields/field``) of a project, subject or experiment."""
        with self._lock:
            rows = self._db.execute(
                "SELECT name, value FROM custom_fields WHERE owner_kind = ? AND owner_key = ?"
                " ORDER BY name",
                (owner.kind, owner.key),
            ).fetchall()
        return {r["name"]: r["value"] for r in rows}

    def set_fields(self, owner: Owner, values: Mapping[str, str | None]) -> None:
        """Set custom fields of ``owner``; a value None removes its field."""
        if not values:
            return
        with self._transaction():
            self._db.executemany(
                "INSERT INTO custom_fields VALUES (?, ?, ?, ?) ON CONFLICT(owner_kind, owner_key,"
                " name) DO UPDATE SET value = excluded.value",
                [(owner.kind, owner.key, k, v) for k, v in values.items() if v is not None],
            )
            self._db.executemany(
                "DELETE FROM custom_fields WHERE owner_kind = ? AND owner_key = ? AND name = ?",
                [(owner.kind, owner.key, k) for k, v in values.items() if v is None],
            )
            self._bump_owner(owner)

    def _delete_fields_of(self, owner: Owner) -> None:
        self._db.execute(
            "DELETE FROM custom_fields WHERE owner_kind = ? AND owner_key = ?",
            (owner.kind, owner.key),
        )

    # -- scans ---------------------------------------------------------------------------

    def scans(self, experiment_id: str) -> list[Scan]:
        with self._lock:
            rows = self._db.execute(
                "SELECT * FROM scans WHERE experiment_id = ? ORDER BY CAST(id AS INTEGER), id",
                (experiment_id,),
            ).fetchall()
        return [Scan(**r) for r in rows]

    def find_scan(self, experiment_id: str, key: str) -> Scan | None:
        """The scan with ID ``key``, else the only scan of type ``key`` (xnatpy uses both)."""
        with self._lock:
            rows = self._db.execute(
                "SELECT * FROM scans WHERE experiment_id = ? AND (id = ? OR type = ?)"
                " ORDER BY id = ? DESC LIMIT 2",
                (experiment_id, key, key, key),
            ).fetchall()
        if not rows or (rows[0]["id"] != key and len(rows) > 1):
            return None
        return Scan(**rows[0])

    def create_scan(
        self,
        experiment_id: str,
        scan_id: str,
        scan_type: str,
        xsi_type: str = "xnat:mrScanData",
        series_description: str = "",
        quality: str = "",
    ) -> Scan:
        """The scan ``scan_id``, created if new; a non-empty ``scan_type``,
        ``series_description`` or ``quality`` replaces that of an existing one.

        A new scan's quality is ``usable`` unless given, as XNAT marks scans it archives.
        """
        with self._transaction():
            found = self.find_scan(experiment_id, scan_id)
            if found is not None:
                wanted = {
                    "type": scan_type,
                    "series_description": series_description,
                    "quality": quality,
                }
                changed = {k: v for k, v in wanted.items() if v and v != getattr(found, k)}
                if changed:
                    assignments = ", ".join(f"{name} = ?" for name in changed)
                    self._db.execute(
                        f"UPDATE scans SET {assignments} WHERE experiment_id = ? AND id = ?",
                        [*changed.values(), experiment_id, found.id],
                    )
                    self._bump_experiment(experiment_id)
            else:
                self._db.execute(
                    "INSERT INTO scans VALUES (?, ?, ?, ?, ?, ?, '')",
                    (
                        experiment_id,
                        scan_id,
                        scan_type,
                        xsi_type,
                        series_description,
                        quality or "usable",
                    ),
                )
                self._bump_experiment(experiment_id)
            created = self.find_scan(experiment_id, scan_id)
        assert created is not None
        return created

    def delete_scan(self, scan: Scan) -> None:
        with self._transaction():
            self._delete_resources_of(Owner("scan", f"{scan.experiment_id}/{scan.id}"))
            self._db.execute(
                "DELETE FROM scans WHERE experiment_id = ? AND id = ?",
                (scan.experiment_id, scan.id),
            )
            self._bump_experiment(scan.experiment_id)

    # -- resources -----------------------------------------------------------------------

    def resources(self, owner: Owner) -> list[Resource]:
        with self._lock:
            rows = self._db.execute(
                "SELECT * FROM resources WHERE owner_kind = ? AND owner_key = ? ORDER BY id",
                (owner.kind, owner.key),
            ).fetchall()
        return [resource_of(r) for r in rows]

    def find_resource(self, owner: Owner, key: str) -> Resource | None:
        """The resource of ``owner`` labelled ``key``, else the one with id ``key``."""
        # No file totals here: this runs for every file request, and summing a big
        # resource's rows each time would dominate the cost of serving small files.
        with self._lock:
            row = self._db.execute(
                "SELECT * FROM resources WHERE owner_kind = ? AND owner_key = ?"
                " AND (label = ? OR CAST(id AS TEXT) = ?) ORDER BY label = ? DESC LIMIT 1",
                (owner.kind, owner.key, key, key, key),
            ).fetchone()
        return None if row is None else resource_of(row)

    def totals(self, resource_ids: Sequence[int]) -> dict[int, tuple[int, int]]:
        """(file count, total bytes) of each resource, for listings."""
        found = dict.fromkeys(resource_ids, (0, 0))
        if not found:
            return found
        marks = ",".join("?" * len(found))
        with self._lock:
            rows = self._db.execute(
                "SELECT resource_id, COUNT(*), SUM(size) FROM files"
                f" WHERE resource_id IN ({marks}) GROUP BY resource_id",
                list(found),
            ).fetchall()
        found.update((r[0], (r[1], r[2])) for r in rows)
        return found

    def create_resource(
        self, owner: Owner, label: str, fmt: str = "", content: str = "", tags: str = ""
    ) -> tuple[Resource, bool]:
        """The resource ``label`` of ``owner`` and whether it was created now."""
        with self._transaction():
            found = self.find_resource(owner, label)
            if found is not None:
                return found, False
            self._db.execute(
                "INSERT INTO resources (owner_kind, owner_key, label, format, content, tags)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (owner.kind, owner.key, label, fmt, content, tags),
            )
            self._bump_owner(owner)
            created = self.find_resource(owner, label)
        assert created is not None
        return created, True

    def delete_resource(self, resource: Resource) -> None:
        with self._transaction():
            folder = self._archive_folder(resource.owner, resource.label)
            self._db.execute("DELETE FROM files WHERE resource_id = ?", (resource.id,))
            self._db.execute("DELETE FROM resources WHERE id = ?", (resource.id,))
            self._bump_owner(resource.owner)
            self.disk.remove_resource(resource.id)
            if folder is not None:
                self.disk.withdraw(folder)

    def _delete_resources_of(self, owner: Owner) -> None:
        for resource in self.resources(owner):
            self.delete_resource(resource)

    # -- files ---------------------------------------------------------------------------

    def files(self, resource_id: int) -> list[FileEntry]:
        with self._lock:
            rows = self._db.execute(
                "SELECT * FROM files WHERE resource_id = ? ORDER BY path", (resource_id,)
            ).fetchall()
        return [self._file(r) for r in rows]

    def find_file(self, resource_id: int, path: str) -> FileEntry | None:
        with self._lock:
            row = self._db.execute(
                "SELECT * FROM files WHERE resource_id = ? AND path = ?", (resource_id, path)
            ).fetchone()
        return None if row is None else self._file(row)

    def scan_files(self, experiment_id: str) -> list[ScanFile]:
        """Every file of every scan resource of an experiment, in one query.

        Ordered by scan (numerically), resource and path, as the per-scan listings are.
        """
        with self._lock:
            rows = self._db.execute(
                "SELECT f.*, s.id AS scan_id, r.label AS resource_label FROM scans s"
                " JOIN resources r ON r.owner_kind = 'scan'"
                " AND r.owner_key = s.experiment_id || '/' || s.id"
                " JOIN files f ON f.resource_id = r.id WHERE s.experiment_id = ?"
                " ORDER BY CAST(s.id AS INTEGER), s.id, r.id, f.path",
                (experiment_id,),
            ).fetchall()
        return [
            ScanFile(r["scan_id"], r["resource_id"], r["resource_label"], self._file(r))
            for r in rows
        ]

    def read_file(
        self, resource_id: int, path: str, inline_limit: int
    ) -> tuple[FileEntry, bytes | None, int]:
        """The entry of ``path``, its content if at most ``inline_limit`` bytes, and the generation.

        All are read under the lock, so the bytes are those the digest describes even
        while another upload replaces the file, and they stay current for as long as
        :attr:`generation` keeps that value.
        """
        with self._lock:
            entry = self.find_file(resource_id, path)
            if entry is None:
                raise NotFoundError(f"file {path} does not exist in resource {resource_id}")
            data = entry.disk_path.read_bytes() if entry.size <= inline_limit else None
            return entry, data, self.generation

    def commit_files(
        self,
        owner: Owner,
        label: str,
        staged: Sequence[StagedFile],
        *,
        overwrite: bool,
        fmt: str = "",
        content: str = "",
        tags: str = "",
        digests: bool | None = None,
        keep_identical: bool = False,
    ) -> list[FileEntry]:
        """Move fully written files into the resource ``label`` of ``owner`` and index them.

        All or nothing: the resource (created if missing) and every file appear in one
        transaction, and a clash with an existing file (without ``overwrite``) refuses the
        whole batch before anything moves. ``digests`` False stores the files without a
        digest; None follows the site's and the project's checksum settings. With
        ``keep_identical``, a file already holding the same bytes is left alone (no
        modification time bump), so re-seeding a data directory is a no-op. The temporary
        files of a refused batch are the caller's to remove.
        """
        paths = [safe_relative_path(f.path) for f in staged]
        with self._transaction():
            resource, _ = self.create_resource(owner, label)
            folder = self._archive_folder(owner, resource.label)
            record_digests = self._records_digests(owner) if digests is None else digests
            existing = {p: self.find_file(resource.id, p) for p in paths}
            moves: list[tuple[str, StagedFile]] = []
            for path, item in zip(paths, staged, strict=True):
                found = existing[path]
                if found is not None and keep_identical and self._same_bytes(found, item):
                    item.temp.unlink(missing_ok=True)
                    continue
                if found is not None and not overwrite:
                    raise ConflictError(
                        f"file {path} exists in resource {resource.label}:"
                        " upload with overwrite=true"
                    )
                moves.append((path, item))
            for path, item in moves:
                target = self.disk.path(resource.id, path)
                target.parent.mkdir(parents=True, exist_ok=True)
                os.replace(item.temp, target)
                if folder is not None:
                    self.disk.publish(folder, path, target)
                self._db.execute(
                    "INSERT INTO files VALUES (?, ?, ?, ?, ?, ?, ?)"
                    " ON CONFLICT(resource_id, path) DO UPDATE SET size = excluded.size,"
                    " digest = excluded.digest, format = excluded.format,"
                    " content = excluded.content, tags = excluded.tags",
                    (
                        resource.id,
                        path,
                        item.size,
                        item.digest if record_digests else "",
                        fmt,
                        content,
                        tags,
                    ),
                )
            if moves:
                self._bump_owner(owner)
            entries = [self.find_file(resource.id, p) for p in paths]
        return [e for e in entries if e is not None]

    def write_file(
        self,
        owner: Owner,
        label: str,
        path: str,
        data: bytes | Path,
        *,
        digests: bool | None = None,
    ) -> FileEntry:
        """Store ``data`` (bytes, or a local file to copy) as ``path`` of resource ``label``.

        Identical existing content is kept as is (see :meth:`commit_files`).
        """
        staged = self.disk.write_upload(path, data)
        try:
            [entry] = self.commit_files(
                owner, label, [staged], overwrite=True, digests=digests, keep_identical=True
            )
        finally:
            staged.temp.unlink(missing_ok=True)
        return entry

    def _records_digests(self, owner: Owner) -> bool:
        if not self.checksums:
            return False
        project = self.get_project(self._project_of(owner))
        return project is None or project.checksums

    def _project_of(self, owner: Owner) -> str:
        if owner.kind == "project":
            return owner.key
        if owner.kind == "subject":
            subject = self.find_subject(None, owner.key)
            return "" if subject is None else subject.project
        assert owner.experiment_id is not None
        experiment = self.find_experiment(None, owner.experiment_id)
        return "" if experiment is None else experiment.project

    @staticmethod
    def _same_bytes(entry: FileEntry, staged: StagedFile) -> bool:
        if entry.size != staged.size:
            return False
        if entry.digest:
            return entry.digest == staged.digest
        # Stored without a digest (checksums off): only the bytes can tell.
        return md5_file(entry.disk_path) == staged.digest

    def delete_file(self, entry: FileEntry, owner: Owner) -> None:
        with self._transaction():
            self._db.execute(
                "DELETE FROM files WHERE resource_id = ? AND path = ?",
                (entry.resource_id, entry.path),
            )
            entry.disk_path.unlink(missing_ok=True)
            resource = self._resource_by_id(entry.resource_id)
            folder = None if resource is None else self._archive_folder(owner, resource.label)
            if folder is not None:
                self.disk.withdraw(folder, entry.path)
            self._bump_owner(owner)

    # -- the archive tree ----------------------------------------------------------------

    def _archive_folder(self, owner: Owner, label: str) -> tuple[str, ...] | None:
        """The folder of resource ``label`` of ``owner`` in XNAT's archive layout, or None
        if its owner is gone."""
        if owner.kind == "project":
            return (owner.key, "resources", label)
        if owner.kind == "subject":
            subject = self.find_subject(None, owner.key)
            if subject is None:
                return None
            return (subject.project, "subjects", subject.label, "resources", label)
        assert owner.experiment_id is not None
        experiment = self.find_experiment(None, owner.experiment_id)
        if experiment is None:
            return None
        session = (experiment.project, "arc001", experiment.label)
        if owner.kind == "experiment":
            return (*session, "RESOURCES", label)
        return (*session, "SCANS", owner.key.split("/", 1)[1], label)

    def _resource_by_id(self, resource_id: int) -> Resource | None:
        with self._lock:
            row = self._db.execute(
                "SELECT * FROM resources WHERE id = ?", (resource_id,)
            ).fetchone()
        return None if row is None else resource_of(row)

    def _build_archive(self) -> None:
        """Link every stored file into the archive tree (a data directory an emulator
        without one wrote)."""
        with self._lock:
            rows = self._db.execute("SELECT * FROM resources ORDER BY id").fetchall()
            for resource in map(resource_of, rows):
                folder = self._archive_folder(resource.owner, resource.label)
                if folder is None:
                    continue
                for entry in self.files(resource.id):
                    if entry.disk_path.is_file():
                        self.disk.publish(folder, entry.path, entry.disk_path)

    def _file(self, row: sqlite3.Row) -> FileEntry:
        return FileEntry(
            resource_id=row["resource_id"],
            path=row["path"],
            size=row["size"],
            digest=row["digest"],
            format=row["format"],
            content=row["content"],
            tags=row["tags"],
            disk_path=self.disk.path(row["resource_id"], row["path"]),
        )
