"""An XNAT-compatible server for tests, the demo and benchmarks.

It speaks the part of the XNAT REST API that the real clients ``xnat`` (xnatpy)
and ``pyxnat`` use, keeps its state in a data directory (files plus a SQLite
index, so a restart finds everything) and can inject deterministic faults.

::

    from sinagot.testing import EmulatorServer, FaultRule

    with EmulatorServer(tmp_path, users={"alice": "secret"}).running_in_thread() as server:
        server.load_dataset("P1", dataset_dir, {"RS": ["EEG", "clinical"]})
        server.set_faults([FaultRule("status", path=r"/files/", status=503, times=2)])
        ...  # talk to server.url
        server.request_counts(), server.fault_counts()

Seeding: ``create_project``, ``create_session`` (with ``date``, ``time``, ``visit_id``,
``age``, ``modality``), ``add_scan_file`` and ``set_fields``, or ``load_dataset`` for a
whole local tree; the server takes all its data this way (the demo data comes from
:func:`sinagot.demo.load_demo`). ``server.store`` shows what it holds, e.g.
``server.store.resources(Owner("experiment", experiment_id))``.

Profiles: ``profile="fast"`` (the default: answers at once) or ``"production"``
(per-request latency, time to first byte, archives that take seconds to start, a
bandwidth per connection and per server, delays drawn from ``seed``), or a
:class:`Profile` (``dataclasses.replace(PROFILES["production"], ...)``); on the command
line ``--profile``. ``server.set_profile`` switches while it runs.

Checksums: ``checksums=False`` (the site; ``--no-checksums``),
``create_project(..., checksums=False)``, ``add_scan_file(..., digest=False)`` or
``set_checksums(enabled, project)``: files stored while off are listed with an empty
``digest``, as on an XNAT with its checksum setting off.

Uploads with ``extract=true`` (xnatpy's ``upload_dir``) are unpacked when they are a
zip, tar or tar.gz: every regular member becomes a file; absolute paths, ``..``,
links and special files refuse the upload (400), within ``extract_limits``
(:class:`ExtractLimits`), and nothing of a refused upload is stored.

Users: ``users={"alice": "secret"}`` (default ``admin:admin``) and
``project_access={"alice": None, "bob": ["P1"]}`` (None or absent: every project, and
a site admin); on the command line ``--user NAME:PASSWORD[:P1,P2]``. Wrong credentials
get 401, a project outside the list 403. Sessions (``PUT /data/services/auth``,
``GET/POST /data/JSESSION``, ``GET /`` with basic auth) expire after
``session_expiry`` idle seconds if set.

Alias tokens: ``/data/services/tokens/issue[/user/NAME]``, ``validate/ALIAS/SECRET``
and ``invalidate/ALIAS/SECRET`` as XNAT answers them; alias and secret log in wherever
a user name and password do. They expire ``alias_token_timeout`` seconds after issue
(``--alias-token-timeout``, default 2 days) and are kept in ``<data>/tokens.sqlite3``
(``server.tokens``); ``alias_tokens=False`` (``--no-alias-tokens``) has no service.

Also served as XNAT does: the DICOM dump (``/data/services/dicomdump?src=...``, with
pydicom), custom fields of projects, subjects and experiments, and the archive tree
``<data>/archive/<project>/arc001/<session>/SCANS/<scan>/<resource>/...`` (hard links
kept in step with every write).

Faults: a list of :class:`FaultRule`; as JSON (``--faults``, the admin endpoint) a list
of objects with the same fields, e.g. ``[{"kind": "status", "status": 503, "path":
"/files/", "times": 2}, {"kind": "reset", "path": "\\.csv$", "at": 1000}]``. Kinds:
``status`` (500/503/429..., ``Retry-After: retry_after``), ``reset`` (RST after ``at``
body bytes), ``truncate`` (full Content-Length, clean close after ``at`` bytes),
``corrupt`` (byte ``at`` flipped), ``latency`` (``delay`` s), ``trickle``
(``chunk_size`` bytes every ``delay`` s). ``path`` is a regex searched in the decoded
request path, ``method`` optional, ``times`` limits a rule to its first N matching
requests, ``probability`` draws from ``random.Random(seed)``.

Counters: requests per ``"METHOD /data/projects/{project}/experiments"``-style route
template (``/data/archive`` and ``/REST`` count as ``/data``); faults per kind, with
status faults as ``status_503`` etc.

Admin endpoints (no authentication, never counted, never faulted, never delayed):
``GET/POST /_emulator/faults`` (body ``{"rules": [...], "seed": N}``),
``GET /_emulator/counters`` and ``POST /_emulator/counters/reset``,
``GET/POST /_emulator/profile`` (body ``"production"`` or ``{"base": "production",
"connection_bandwidth": 1e7}``), ``GET/POST /_emulator/checksums`` (body
``{"enabled": false}``, with ``"project": "P1"`` for one project).

One server per data directory: a starting server discards unfinished uploads left
in ``<data>/tmp`` by a crash.
"""

from __future__ import annotations

from ._auth import parse_user_spec
from ._extract import ExtractLimits
from ._faults import FAULT_KINDS, FaultRule, parse_fault_spec
from ._pace import Pace
from ._profile import PROFILES, Profile, parse_profile_spec
from ._records import Owner
from ._server import EmulatorServer

__all__ = [
    "FAULT_KINDS",
    "PROFILES",
    "EmulatorServer",
    "ExtractLimits",
    "FaultRule",
    "Owner",
    "Pace",
    "Profile",
    "parse_fault_spec",
    "parse_profile_spec",
    "parse_user_spec",
]
