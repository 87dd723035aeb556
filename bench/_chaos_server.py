"""The fault campaign's XNAT: the emulator in a process of its own, steered over stdin.

Run as ``python bench/_chaos_server.py DATA PORT SEED USER:PASSWORD PROJECT``: it serves
``DATA`` with the production profile on ``127.0.0.1:PORT`` (0: any port), prints
``listening on URL``, then answers one JSON command per line of stdin with one JSON line
on stdout. A process of its own so that the campaign can kill it as a server crashes
(SIGKILL) or stop it as one is restarted (SIGTERM), and so that its work never shares
a GIL with the campaign's timing of the daemon's control socket.

Commands (``{"op": ..., ...}``): ``put`` a session's input (created if new; bytes in
base64), ``delete`` a session, ``faults`` (replace the fault rules), ``counts`` (faults
injected and requests served since start), ``snapshot`` (what the project holds, for the invariants).
"""

from __future__ import annotations

import base64
import json
import signal
import sys
from pathlib import Path
from typing import Any, NoReturn

from sinagot.testing import EmulatorServer, FaultRule, Owner


def _snapshot(server: EmulatorServer, project: str) -> dict[str, Any]:
    """Every session of ``project`` with its scan files and session resources, as the index
    has them (the disk paths let the caller hash the bytes themselves), and the upload
    staging folder's leftovers."""
    store = server.store
    sessions: dict[str, Any] = {}
    for experiment in store.experiments(project):
        scans: dict[str, dict[str, list[str | int]]] = {}
        for scan_file in store.scan_files(experiment.id):
            entry = scan_file.entry
            key = f"{scan_file.scan_id}/{scan_file.resource_label}"
            scans.setdefault(key, {})[entry.path] = [entry.digest, str(entry.disk_path)]
        resources = []
        for resource in store.resources(Owner("experiment", experiment.id)):
            files = {
                entry.path: [entry.digest, str(entry.disk_path)]
                for entry in store.files(resource.id)
            }
            resources.append({"label": resource.label, "files": files})
        sessions[experiment.label] = {"scans": scans, "resources": resources}
    staging = sorted(str(p) for p in (server.data_dir / "tmp").iterdir())
    return {"sessions": sessions, "staging": staging}


def _answer(server: EmulatorServer, project: str, command: dict[str, Any]) -> Any:
    op = command["op"]
    if op == "put":
        server.create_session(project, command["session"])
        return server.add_scan_file(
            project,
            command["session"],
            scan_type=command["scan"],
            resource=command["resource"],
            name=command["name"],
            data=base64.b64decode(command["data"]),
        )
    if op == "delete":
        experiment = server.store.find_experiment(project, command["session"])
        if experiment is None:
            return False
        server.store.delete_experiment(experiment)
        return True
    if op == "faults":
        server.set_faults([FaultRule.from_json(rule) for rule in command["rules"]], command["seed"])
        return True
    if op == "counts":
        return {"faults": server.fault_counts(), "requests": server.request_counts()}
    if op == "snapshot":
        return _snapshot(server, project)
    raise ValueError(f"unknown command {op!r}")


def _stop(signum: int, frame: object) -> NoReturn:
    raise SystemExit(0)


def main() -> None:
    data, port, seed, account, project = sys.argv[1:6]
    user, password = account.split(":", 1)
    signal.signal(signal.SIGTERM, _stop)
    server = EmulatorServer(
        Path(data), users={user: password}, port=int(port), profile="production", seed=int(seed)
    )
    try:
        with server.running_in_thread():
            server.create_project(project)
            print(f"listening on {server.url}", flush=True)
            for line in sys.stdin:
                try:
                    reply = {"ok": _answer(server, project, json.loads(line))}
                except Exception as exc:
                    reply = {"error": f"{type(exc).__name__}: {exc}"}
                print(json.dumps(reply), flush=True)
    finally:
        server.close()


if __name__ == "__main__":
    main()
