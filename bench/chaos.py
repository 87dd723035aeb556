"""A fault campaign: random faults, kills and arrivals for half an hour, then nothing lost.

Run: ``python bench/chaos.py [--seed 1] [--minutes 30] [--keep DIR]``. The real daemon
(``sinagot daemon``, XNAT backend, a Dask LocalCluster of worker processes) follows a
project on the emulator (production profile, in a process of its own) while a schedule
drawn from ``random.Random(seed)`` throws at it, for ``--minutes``:

- **server faults**, as a fresh set of fault rules every few seconds: status 500, 503 and
  429 with Retry-After, resets, truncations, corrupted bodies, stalls longer than the
  cache's stall delay (``race_condition_delay``), trickles; on listings, downloads,
  uploads, provenance documents or anything;
- **process kills**: SIGKILL and SIGTERM of the daemon (restarted after a moment),
  SIGKILL of a Dask worker process, SIGKILL of a running script (its own child process);
- **server restarts**: the emulator stopped (SIGTERM) or killed (SIGKILL), started again
  on the same port and data a moment later;
- **a full cache disk**: the cache lives on a small tmpfs that a ballast file fills for a
  while. Without root, the tmpfs is mounted in a user and mount namespace of its own
  (``unshare --user --map-root-user --mount``) and the daemon runs in it (``nsenter``);
  where unprivileged namespaces are refused, the cache stays on disk and this kind is
  skipped, saying why;
- **session churn**: sessions arriving one at a time and in bursts, inputs replaced,
  sessions deleted (and a deleted label coming back), configs reloaded, and the pipeline
  changed (a script's parameter edited on disk, then a reload).

Then quiescence (no more faults, every job settled) and the invariants, checked from the
server and the disk, not from the daemon's own state (``bench/_chaos_checks.py``):
derivatives equal a clean run of the scripts on the current inputs; one provenance marker
per derivative naming the right inputs, script and outputs; no resource without its marker
or marker without its resource; no duplicate resource; no staging left on the server or in
the cache, ``sinagot cache verify`` clean; no failed job; no leaked process, thread or file
descriptor; and the control socket answered every status request while the daemon was up
(its p99 is reported).

The schedule (what happens when, to which session) depends on the seed alone; the
interleaving with the daemon's own timing does not, so a failing seed is replayed with
the same ``--seed`` (and ``--minutes``). The last line is the figures as JSON; the exit
code is 1 when an invariant was violated.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import os
import random
import selectors
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _chaos_checks import (
    Violation,
    check_cache,
    check_failed_jobs,
    check_server,
    clean_run,
)
from _daemon_bench import SINAGOT, DaemonChild, percentile
from sinagot.cli import ControlClient
from sinagot.daemon.internals import MAX_JOBS_LISTED

USER, PASSWORD, PROJECT = "chaos", "chaos", "CHAOS"
TASK, MODALITY = "RS", "EEG"
# Seconds without progress after which a cache download is taken over: stalls exceed it.
STALL_DELAY = 1.0
# Seconds the filter script's child process sleeps before its work, in the daemon only:
# long enough for a campaign to find it running and kill it.
SCRIPT_PAUSE = 0.4
MARK = "sinagot-chaos-script"
CACHE_DISK_MIB = 256

_FILTER = '''"""Scale the raw signal in a child process (as lab scripts run their tools)."""

import os
import subprocess
import sys

from sinagot import ScriptTemplate

CHILD = """
import sys, time
source, target, gain, pause = sys.argv[2], sys.argv[3], float(sys.argv[4]), float(sys.argv[5])
time.sleep(pause)
rows = []
with open(source) as stream:
    for line in stream:
        number, label, value = line.rstrip("\\\\n").split(",")
        rows.append(f"{number},{label},{float(value) * gain:.4f}\\\\n")
with open(target, "w") as stream:
    stream.writelines(rows)
"""


class Script(ScriptTemplate):
    PATH_IN = ("{id}", "{task}", "EEG", "raw.csv")
    PATH_OUT = ("{id}", "derivatives", "{task}", "EEG", "filtered.csv")
    PARAMETERS = {"gain": @GAIN@}

    def run(self):
        pause = os.environ.get("SINAGOT_CHAOS_PAUSE", "0")
        subprocess.run(
            [sys.executable, "-c", CHILD, "@MARK@", str(self.path.input),
             str(self.path.output), str(self.PARAMETERS["gain"]), pause],
            check=True,
        )
'''

_STATS = '''"""Sum up the filtered signal."""

import json

from sinagot import ScriptTemplate


class Script(ScriptTemplate):
    PATH_IN = ("{id}", "derivatives", "{task}", "EEG", "filtered.csv")
    PATH_OUT = ("{id}", "derivatives", "{task}", "EEG", "stats.json")
    PARAMETERS = {"digits": @DIGITS@}

    def run(self):
        values = [float(line.split(",")[2]) for line in self.path.input.read_text().splitlines()]
        digits = self.PARAMETERS["digits"]
        summary = {"lines": len(values), "sum": round(sum(values), digits)}
        self.path.output.write_text(json.dumps(summary, sort_keys=True))
'''

# Events a minute of each kind (a Poisson process each), at --rate 1.
RATES: dict[str, float] = {
    "rules": 10.0,
    "daemon_sigkill": 0.5,
    "daemon_sigterm": 0.3,
    "worker_kill": 1.0,
    "script_kill": 1.5,
    "server_restart": 0.4,
    "cache_full": 0.5,
    "arrival": 4.0,
    "burst": 0.5,
    "replace": 3.0,
    "delete": 0.6,
    "revive": 0.2,
    "reload": 0.5,
    "pipeline": 0.15,
}

# Where server fault rules aim: (name, path regex, method or None).
TARGETS: tuple[tuple[str, str, str | None], ...] = (
    ("listing", r"/projects/[^/]+/experiments$", "GET"),
    ("listing", r"/projects/[^/]+/experiments$", "GET"),
    ("session", r"/experiments/[^/]+$", "GET"),
    ("scan files", r"/scans/.*/files", "GET"),
    ("derivative", r"___at___", None),
    ("upload", r"/files/", "PUT"),
    ("provenance", r"PROVENANCE", None),
    ("any", r"^/data/", None),
    ("any", r"^/data/", None),
)


# -- the processes ----------------------------------------------------------------------


class ServerChild:
    """The campaign's XNAT (``bench/_chaos_server.py``) in a child process, on one port."""

    def __init__(self, data: Path, seed: int, port: int = 0) -> None:
        self.data, self.seed = data, seed
        self.proc = subprocess.Popen(
            [
                sys.executable,
                str(Path(__file__).with_name("_chaos_server.py")),
                str(data),
                str(port),
                str(seed),
                f"{USER}:{PASSWORD}",
                PROJECT,
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=(data.parent / "server.log").open("ab"),
            text=True,
        )
        line = self._line(60)
        if not line.startswith("listening on "):
            self.proc.kill()
            raise RuntimeError(f"the emulator did not start: {line!r}")
        self.url = line.split()[-1]
        self.port = int(self.url.rsplit(":", 1)[1])
        self.counted: dict[str, int] = {}

    def _line(self, limit: float) -> str:
        assert self.proc.stdout is not None
        with selectors.DefaultSelector() as selector:
            selector.register(self.proc.stdout, selectors.EVENT_READ)
            if not selector.select(limit):
                raise RuntimeError(f"the emulator did not answer within {limit} s")
        return self.proc.stdout.readline()

    def call(self, op: str, **fields: Any) -> Any:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps({"op": op, **fields}) + "\n")
        self.proc.stdin.flush()
        answer = json.loads(self._line(120))
        if "error" in answer:
            raise RuntimeError(f"emulator {op}: {answer['error']}")
        return answer["ok"]

    def stop(self, signum: int = signal.SIGTERM) -> None:
        self.proc.send_signal(signum)
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
        for stream in (self.proc.stdin, self.proc.stdout):
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.close()


class CacheDisk:
    """A small tmpfs at ``mountpoint``, in a user and mount namespace of its own (no root
    needed where unprivileged user namespaces are allowed); the daemon enters it with
    ``prefix``, the campaign reaches it through ``/proc/<holder>/root``."""

    def __init__(self, mountpoint: Path, mib: int) -> None:
        mountpoint.mkdir(parents=True, exist_ok=True)
        script = 'mount -t tmpfs -o size="$2"m tmpfs "$1" && echo ready && exec sleep infinity'
        self.holder = subprocess.Popen(
            [
                "unshare",
                "--user",
                "--map-root-user",
                "--mount",
                "sh",
                "-c",
                script,
                "sh",
                str(mountpoint),
                str(mib),
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert self.holder.stdout is not None and self.holder.stderr is not None
        if self.holder.stdout.readline().strip() != "ready":
            self.holder.wait(10)
            raise OSError(self.holder.stderr.read().strip() or "unshare failed")
        self.prefix = ["nsenter", f"--target={self.holder.pid}", "--user", "--mount", "--"]
        self.view = Path(f"/proc/{self.holder.pid}/root") / mountpoint.relative_to("/")
        self._ballast = self.view / ".ballast"

    def fill(self) -> None:
        """Leave no byte free."""
        free = os.statvfs(self.view)
        room = free.f_bavail * free.f_frsize
        fd = os.open(self._ballast, os.O_CREAT | os.O_WRONLY, 0o600)
        try:
            if room:
                with contextlib.suppress(OSError):
                    os.posix_fallocate(fd, os.fstat(fd).st_size, room)
        finally:
            os.close(fd)

    def free(self) -> None:
        self._ballast.unlink(missing_ok=True)

    def close(self) -> None:
        self.holder.kill()
        self.holder.wait(10)


def cache_disk(mountpoint: Path) -> tuple[CacheDisk | None, str | None]:
    """The cache's tmpfs, or None and why it cannot be had here."""
    if shutil.which("unshare") is None or shutil.which("nsenter") is None:
        return None, "unshare/nsenter (util-linux) are not installed"
    try:
        return CacheDisk(mountpoint, CACHE_DISK_MIB), None
    except OSError as exc:
        return None, f"no tmpfs in a user namespace here ({exc}): unprivileged namespaces off?"


class StatusWatch:
    """Asks the daemon its status every quarter second from a thread of its own; times the
    answers given while the daemon was up the whole time (a kill or a stop in between
    voids the request), and keeps those that got none."""

    def __init__(self, socket: Path) -> None:
        self._client = ControlClient(socket)
        self._lock = threading.Lock()
        self._up = False
        self._generation = 0
        self._stop = threading.Event()
        self.latencies: list[float] = []
        self.unanswered: list[str] = []
        self._thread = threading.Thread(target=self._run, name="status-watch", daemon=True)
        self._thread.start()

    def up(self) -> None:
        with self._lock:
            self._up = True
            self._generation += 1

    def down(self) -> None:
        with self._lock:
            self._up = False
            self._generation += 1

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        try:
            while not self._stop.wait(0.25):
                with self._lock:
                    up, generation = self._up, self._generation
                if not up:
                    continue
                begin = time.perf_counter()
                error = None
                try:
                    loop.run_until_complete(asyncio.wait_for(self._client.status(), 10))
                except Exception as exc:
                    error = f"{type(exc).__name__}: {exc}"
                took = time.perf_counter() - begin
                with self._lock:
                    if self._up and self._generation == generation:
                        if error is None:
                            self.latencies.append(took)
                        else:
                            self.unanswered.append(error)
        finally:
            loop.close()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(30)


# -- the campaign -----------------------------------------------------------------------


def schedule(rng: random.Random, seconds: float, rate: float) -> list[tuple[float, str]]:
    """When each event happens: a Poisson process per kind over ``seconds``."""
    events: list[tuple[float, str]] = []
    for kind, per_minute in RATES.items():
        at = 0.0
        while True:
            at += rng.expovariate(per_minute * rate / 60.0)
            if at >= seconds:
                break
            events.append((at, kind))
    return sorted(events)


def raw_input(seed: int, label: str, version: int) -> bytes:
    """A session's input: small mostly, now and then a few hundred KiB."""
    rng = random.Random(f"{seed}:{label}:{version}")
    rows = rng.randint(20_000, 40_000) if rng.random() < 0.15 else rng.randint(20, 600)
    return "".join(f"{i},{label},{rng.uniform(-100, 100):.4f}\n" for i in range(rows)).encode()


@dataclass
class Tally:
    faults: Counter[str] = field(default_factory=Counter)
    kills: Counter[str] = field(default_factory=Counter)
    sessions: Counter[str] = field(default_factory=Counter)
    missed: Counter[str] = field(default_factory=Counter)
    requests: int = 0


class Campaign:
    def __init__(self, args: argparse.Namespace, base: Path) -> None:
        self.args = args
        self.base = base
        self.seed: int = args.seed
        self.rng = random.Random(self.seed)
        self.tally = Tally()
        self.token = uuid.uuid4().hex
        self.lab = base / "lab"
        self.socket = base / "run" / "d.sock"
        self.config = self.lab / "lab.toml"
        self.scripts = self.lab / "scripts"
        self.inputs: dict[str, bytes] = {}
        self.versions: Counter[str] = Counter()
        self.deleted: list[str] = []
        self.next_label = 0
        self.pipeline = {"gain": 2, "digits": 3}
        self.violations: list[Violation] = []
        self.disk, self.no_disk = (None, "--no-cache-disk") if args.no_cache_disk else (None, None)
        self.cache_dir = base / "cache"
        self.full_until: float | None = None
        self.server: ServerChild | None = None
        self.daemon: DaemonChild | None = None
        self.watch = StatusWatch(self.socket)
        self.baseline: dict[str, int] = {}
        self.rule_serial = 0
        # Kills waiting for their victim to run: kind -> (give up at, its generator).
        self.kills_due: dict[str, tuple[float, random.Random]] = {}

    # -- set-up ---------------------------------------------------------------------

    def write_scripts(self) -> None:
        folder = self.scripts / MODALITY
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "filter.py").write_text(
            _FILTER.replace("@GAIN@", str(self.pipeline["gain"])).replace("@MARK@", MARK)
        )
        (folder / "stats.py").write_text(_STATS.replace("@DIGITS@", str(self.pipeline["digits"])))

    def write_config(self, jobs: int = 3) -> None:
        assert self.server is not None
        lines = [
            "[path]",
            'dataset = "work"',
            'scripts = "scripts"',
            "[records]",
            'id_pattern = "REC-\\\\d{6}-[A-Z]"',
            f"[tasks.{TASK}]",
            f'modalities = ["{MODALITY}"]',
            f"[modalities.{MODALITY}]",
            'scripts = ["filter", "stats"]',
            "[store]",
            'type = "xnat"',
            f'server = "{self.server.url}"',
            f'project = "{PROJECT}"',
            f'user = "{USER}"',
            f'password = "{PASSWORD}"',
            f'cache_dir = "{self.cache_dir}"',
            f"race_condition_delay = {STALL_DELAY}",
            "[dask]",
            "n_workers = 2",
            "threads_per_worker = 1",
            "processes = true",
            "[log]",
            'level = "INFO"',
            "[daemon]",
            "poll_interval = 1.0",
            "pipeline_check_interval = 2.0",
            f"max_concurrent_jobs = {jobs}",
            "max_attempts = 10",
            "retry_backoff = 0.5",
            "job_timeout = 300.0",
            "script_timeout = 120.0",
            "shutdown_timeout = 10.0",
            f'socket = "{self.socket}"',
            f'state_dir = "{self.base / "state"}"',
        ]
        self.config.parent.mkdir(parents=True, exist_ok=True)
        temp = self.config.with_suffix(".tmp")
        temp.write_text("\n".join(lines) + "\n")
        os.replace(temp, self.config)

    def setup(self) -> None:
        if not self.args.no_cache_disk:
            self.disk, self.no_disk = cache_disk(self.cache_dir)
        if self.no_disk:
            print(f"full cache disk: skipped ({self.no_disk})")
        self.server = ServerChild(self.base / "xnat", self.seed)
        self.write_scripts()
        self.write_config()
        for _ in range(self.args.initial):
            self.add_session()
        self.start_daemon()
        self.quiesce("initial processing", limit=600)
        self.baseline = self.resources()
        print(
            f"set-up: {len(self.inputs)} sessions processed; daemon baseline {self.baseline};"
            f" data in {self.base}",
            flush=True,
        )

    # -- the daemon -------------------------------------------------------------------

    def start_daemon(self) -> None:
        env = {"SINAGOT_CHAOS_PAUSE": str(SCRIPT_PAUSE), "SINAGOT_CHAOS_RUN": self.token}
        prefix = self.disk.prefix if self.disk is not None else ()
        try:
            self.daemon = DaemonChild(
                self.config, self.socket, self.base / "daemon.log", env=env, prefix=prefix
            )
        except (RuntimeError, TimeoutError) as exc:
            self.violation("daemon did not start", str(exc))
            raise
        self.watch.up()

    def stop_daemon(self, signum: int) -> None:
        assert self.daemon is not None
        self.watch.down()
        self.daemon.proc.send_signal(signum)
        try:
            code = self.daemon.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.violation("daemon did not stop", f"on signal {signum} within 60 s")
            self.daemon.proc.kill()
            code = self.daemon.proc.wait(10)
        if signum == signal.SIGTERM and code != 0:
            self.violation("daemon stop", f"exit code {code} after SIGTERM")
        self.daemon.stop()  # closes its log
        self.daemon = None

    def call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        assert self.daemon is not None
        return self.daemon.call(method, *args, **kwargs)

    def descendants(self) -> list[psutil.Process]:
        assert self.daemon is not None
        with contextlib.suppress(psutil.Error):
            return psutil.Process(self.daemon.proc.pid).children(recursive=True)
        return []

    def marked(self) -> list[psutil.Process]:
        """Every live process started for this campaign's daemons (their environment)."""
        found = []
        for proc in psutil.process_iter():
            with contextlib.suppress(psutil.Error):
                if proc.environ().get("SINAGOT_CHAOS_RUN") == self.token:
                    found.append(proc)
        return found

    def resources(self) -> dict[str, int]:
        """The daemon's threads, open fds and helper processes now."""
        assert self.daemon is not None
        pid = self.daemon.proc.pid
        return {
            "threads": len(os.listdir(f"/proc/{pid}/task")),
            "fds": len(os.listdir(f"/proc/{pid}/fd")),
            "processes": len(self.descendants()),
        }

    # -- the server --------------------------------------------------------------------

    def count_faults(self) -> None:
        """Add the faults the emulator injected since the last look."""
        assert self.server is not None
        counts: dict[str, dict[str, int]] = self.server.call("counts")
        for kind, count in counts["faults"].items():
            self.tally.faults[kind] += count - self.server.counted.get(kind, 0)
        requests = sum(counts["requests"].values())
        self.tally.requests += requests - self.server.counted.get("", 0)
        self.server.counted = {**counts["faults"], "": requests}

    def restart_server(self, signum: int, down: float) -> None:
        assert self.server is not None
        with contextlib.suppress(RuntimeError):
            self.count_faults()
        port = self.server.port
        self.server.stop(signum)
        time.sleep(down)
        for _ in range(50):
            try:
                self.server = ServerChild(self.base / "xnat", self.seed + self.rule_serial, port)
                return
            except RuntimeError:
                time.sleep(0.2)  # the port may still be held for a moment
        raise RuntimeError("the emulator did not start again on its port")

    def new_rules(self) -> None:
        """A fresh set of fault rules (or none for a while: a calm spell)."""
        assert self.server is not None
        rng = self.rng
        self.rule_serial += 1
        rules: list[dict[str, Any]] = []
        for _ in range(rng.choice((0, 1, 2, 2, 3, 4))):
            _, path, method = rng.choice(TARGETS)
            kind = rng.choice(
                ("500", "503", "429", "reset", "truncate", "corrupt", "stall", "trickle")
            )
            rule: dict[str, Any] = {
                "path": path,
                "method": method,
                "probability": round(rng.uniform(0.1, 0.5), 2),
                "times": rng.randint(3, 40),
            }
            if kind in ("500", "503", "429"):
                rule |= {"kind": "status", "status": int(kind)}
                rule["retry_after"] = rng.choice((None, 1, 2)) if kind != "500" else None
            elif kind == "stall":
                rule |= {"kind": "latency", "delay": round(rng.uniform(1.5, 4) * STALL_DELAY, 2)}
            elif kind == "trickle":
                rule |= {
                    "kind": "trickle",
                    "chunk_size": rng.choice((1024, 4096, 16384)),
                    "delay": round(rng.uniform(0.02, 0.2), 2),
                    "times": rng.randint(1, 4),
                }
            else:
                rule |= {"kind": kind, "at": rng.choice((None, 0, 1, 100))}
            rules.append(rule)
        self.server.call("faults", rules=rules, seed=self.seed * 1000 + self.rule_serial)

    # -- churn -------------------------------------------------------------------------

    def put(self, label: str) -> None:
        assert self.server is not None
        self.versions[label] += 1
        raw = raw_input(self.seed, label, self.versions[label])
        self.server.call(
            "put",
            session=label,
            scan=TASK,
            resource=MODALITY,
            name="raw.csv",
            data=base64.b64encode(raw).decode(),
        )
        self.inputs[label] = raw

    def add_session(self) -> None:
        self.next_label += 1
        self.put(f"REC-{self.next_label:06d}-A")
        self.tally.sessions["added"] += 1

    def delete_session(self, label: str) -> None:
        assert self.server is not None
        self.server.call("delete", session=label)
        del self.inputs[label]
        self.deleted.append(label)
        self.tally.sessions["deleted"] += 1

    def revive_session(self, label: str) -> None:
        self.deleted.remove(label)
        self.put(label)
        self.tally.sessions["revived"] += 1

    def change_pipeline(self) -> None:
        key = self.rng.choice(("gain", "digits"))
        choices = (2, 3, 5) if key == "gain" else (1, 2, 3, 4)
        self.pipeline[key] = self.rng.choice([v for v in choices if v != self.pipeline[key]])
        self.write_scripts()

    # -- events ------------------------------------------------------------------------

    def event(self, kind: str, index: int) -> None:
        rng = self.rng
        # Choices that depend on what runs at the moment draw from their own generator, so
        # that the schedule's draws stay the seed's whatever the timing.
        now_rng = random.Random(f"{self.seed}:{index}")
        if kind == "rules":
            self.new_rules()
        elif kind in ("daemon_sigkill", "daemon_sigterm"):
            down = rng.uniform(0, 2)
            self.stop_daemon(signal.SIGKILL if kind == "daemon_sigkill" else signal.SIGTERM)
            self.tally.kills[kind] += 1
            time.sleep(down)
            self.start_daemon()
        elif kind in ("worker_kill", "script_kill"):
            self.kills_due.setdefault(kind, (time.monotonic() + 30, now_rng))
        elif kind == "server_restart":
            signum = rng.choice((signal.SIGTERM, signal.SIGKILL))
            self.restart_server(signum, rng.uniform(0.5, 4))
            self.tally.kills[f"server_{signum.name}"] += 1
        elif kind == "cache_full":
            hold = rng.uniform(5, 20)
            if self.disk is None:
                self.tally.missed[kind] += 1
            elif self.full_until is None:
                self.disk.fill()
                self.full_until = time.monotonic() + hold
                self.tally.faults["cache_full"] += 1
        elif kind == "arrival":
            self.add_session()
        elif kind == "burst":
            for _ in range(rng.randint(3, 10)):
                self.add_session()
        elif kind == "replace":
            if self.inputs:
                self.put(rng.choice(sorted(self.inputs)))
                self.tally.sessions["replaced"] += 1
        elif kind == "delete":
            if len(self.inputs) > 3:
                self.delete_session(rng.choice(sorted(self.inputs)))
        elif kind == "revive":
            if self.deleted:
                self.revive_session(rng.choice(self.deleted))
        elif kind == "reload":
            self.write_config(jobs=rng.choice((2, 3)))
            self.reload(rng.random() < 0.5)
        elif kind == "pipeline":
            self.change_pipeline()
            self.reload(rng.random() < 0.5)
            self.tally.sessions["pipeline changes"] += 1
        else:
            raise ValueError(kind)

    def reload(self, by_signal: bool) -> None:
        assert self.daemon is not None
        if by_signal:
            self.daemon.proc.send_signal(signal.SIGHUP)
        else:
            self.call("reload")
        self.tally.sessions["reloads"] += 1

    def workers(self) -> list[psutil.Process]:
        """The Dask worker processes: those running a script, else all (the daemon's
        children but the multiprocessing resource tracker)."""
        workers = [
            proc
            for proc in self.descendants()
            if "spawn_main" in _cmdline(proc) and "resource_tracker" not in _cmdline(proc)
        ]
        busy = {script.ppid() for script in self.scripts_running()}
        return [proc for proc in workers if proc.pid in busy] or workers

    def scripts_running(self) -> list[psutil.Process]:
        return [proc for proc in self.descendants() if MARK in _cmdline(proc)]

    def kill_due(self) -> None:
        """SIGKILL a Dask worker or a running script, for the kills due: as soon as one
        runs, or given up (missed) after 30 s without one."""
        candidates = {"worker_kill": self.workers, "script_kill": self.scripts_running}
        for kind, (deadline, rng) in list(self.kills_due.items()):
            found = sorted(candidates[kind]() if self.daemon else [], key=lambda p: p.pid)
            if found:
                with contextlib.suppress(psutil.Error):
                    rng.choice(found).kill()
                    self.tally.kills[kind] += 1
                    del self.kills_due[kind]
            elif time.monotonic() > deadline:
                self.tally.missed[kind] += 1
                del self.kills_due[kind]

    # -- the run ----------------------------------------------------------------------

    def run(self) -> None:
        seconds = self.args.minutes * 60
        timeline = schedule(self.rng, seconds, self.args.rate)
        print(f"chaos: {len(timeline)} events over {seconds:.0f} s (seed {self.seed})", flush=True)
        start = time.monotonic()
        last_report = start
        for index, (at, kind) in enumerate(timeline):
            while (now := time.monotonic()) - start < at:
                self.tick()
                time.sleep(min(0.25, max(0.0, at - (now - start))))
            try:
                self.event(kind, index)
            except Exception as exc:
                self.violation("campaign event failed", f"{kind} at {at:.1f} s: {exc}")
                self.recover()
            if time.monotonic() - last_report > 60:
                last_report = time.monotonic()
                self.progress(time.monotonic() - start)
        while time.monotonic() - start < seconds:
            self.tick()
            time.sleep(0.25)

    def tick(self) -> None:
        if self.daemon is not None and self.daemon.proc.poll() is not None:
            self.violation("daemon exited", f"on its own, with code {self.daemon.proc.returncode}")
            self.watch.down()
            self.daemon.stop()
            self.start_daemon()
        if self.full_until is not None and time.monotonic() >= self.full_until:
            assert self.disk is not None
            self.disk.free()
            self.full_until = None
        with contextlib.suppress(RuntimeError):
            self.count_faults()
        self.kill_due()

    def recover(self) -> None:
        """After an event failed half way: the emulator and the daemon up again."""
        assert self.server is not None
        if self.server.proc.poll() is not None:
            self.restart_server(signal.SIGKILL, 0)
        if self.daemon is None or self.daemon.proc.poll() is not None:
            self.watch.down()
            self.start_daemon()

    def progress(self, elapsed: float) -> None:
        with contextlib.suppress(Exception):
            (dataset,) = self.call("status")["datasets"]
            jobs = {state: n for state, n in dataset["jobs"].items() if n}
            print(
                f"  {elapsed / 60:4.1f} min: faults {sum(self.tally.faults.values())}, kills"
                f" {sum(self.tally.kills.values())}, sessions {len(self.inputs)}, jobs {jobs}",
                flush=True,
            )

    def settled(self) -> dict[str, int] | None:
        """The job counts once the daemon has nothing left to do, else None."""
        status = self.call("status")
        (dataset,) = status["datasets"]
        jobs: dict[str, int] = dataset["jobs"]
        unsettled = {s for s, n in jobs.items() if n and s not in ("done", "failed")}
        if unsettled or status["workers"]["busy"] or status["queued"]:
            return None
        if dataset["health"] != "ok" or dataset["last_poll"] is None:
            return None
        return jobs

    def quiesce(self, why: str, limit: float) -> float:
        """No more faults; wait until three looks a second apart find every job settled
        after a listing made once the faults stopped. The seconds it took."""
        assert self.server is not None
        begin = time.monotonic()
        since = time.time()
        self.server.call("faults", rules=[], seed=0)
        if self.full_until is not None and self.disk is not None:
            self.disk.free()
            self.full_until = None
        calm = 0
        while time.monotonic() - begin < limit:
            with contextlib.suppress(Exception):
                jobs = self.settled()
                (dataset,) = self.call("status")["datasets"]
                calm = calm + 1 if jobs is not None and dataset["last_poll"] > since + 1 else 0
            if calm >= 3:
                return time.monotonic() - begin
            time.sleep(1)
        self.violation("not quiescent", f"{why}: jobs not settled within {limit:.0f} s")
        return time.monotonic() - begin

    def check(self) -> None:
        """Every invariant, from the server and the disk (and the daemon's failed jobs)."""
        assert self.server is not None and self.daemon is not None
        expected = clean_run(self.scripts, {TASK: MODALITY}, self.inputs, self.base / "clean")
        snapshot = self.server.call("snapshot")
        self.violations += check_server(snapshot, expected, self.inputs, self.deleted)
        self.violations += check_failed_jobs(self.call("jobs", limit=MAX_JOBS_LISTED))
        verify = subprocess.run(
            [
                *(self.disk.prefix if self.disk else ()),
                SINAGOT,
                "cache",
                "verify",
                str(self.config),
            ],
            capture_output=True,
            text=True,
        )
        root = self.disk.view if self.disk is not None else self.cache_dir
        self.violations += check_cache(root, (verify.returncode, verify.stdout + verify.stderr))
        self.check_leaks()

    def check_leaks(self) -> None:
        now = self.resources()
        # Pools that grow on demand (connections, executor threads) may hold a few more.
        slack = {"threads": 8, "fds": 16, "processes": 0}
        for what, count in now.items():
            if count > self.baseline[what] + slack[what]:
                self.violation(
                    f"leaked {what}",
                    f"{count} at the end, {self.baseline[what]} after the set-up",
                )
        assert self.daemon is not None
        ours = {self.daemon.proc.pid, *(proc.pid for proc in self.descendants())}
        for proc in self.marked():
            if proc.pid not in ours:
                self.violation("leaked process", f"{proc.pid} {_cmdline(proc)[:120]}")

    def finish(self) -> None:
        """Stop the daemon; nothing it started may outlive it."""
        self.stop_daemon(signal.SIGTERM)
        deadline = time.monotonic() + 30
        while (left := self.marked()) and time.monotonic() < deadline:
            time.sleep(0.5)
        for proc in left:
            self.violation("process outlived the daemon", f"{proc.pid} {_cmdline(proc)[:120]}")
            with contextlib.suppress(psutil.Error):
                proc.kill()

    def violation(self, kind: str, detail: str) -> None:
        found = Violation(kind, detail)
        print(f"VIOLATION {found}", flush=True)
        self.violations.append(found)

    def close(self) -> None:
        self.watch.close()
        if self.daemon is not None:
            with contextlib.suppress(Exception):
                self.daemon.proc.kill()
                self.daemon.stop()
        for proc in self.marked():
            with contextlib.suppress(psutil.Error):
                proc.kill()
        if self.server is not None:
            self.server.stop()
        if self.disk is not None:
            self.disk.close()


def _cmdline(proc: psutil.Process) -> str:
    with contextlib.suppress(psutil.Error):
        return " ".join(proc.cmdline())
    return ""


@contextlib.contextmanager
def workspace(keep: Path | None) -> Iterator[Path]:
    if keep is not None:
        shutil.rmtree(keep, ignore_errors=True)
        keep.mkdir(parents=True)
        yield keep.resolve()
        return
    with tempfile.TemporaryDirectory(prefix="sinagot-chaos-") as tmp:
        yield Path(tmp)


def campaign(args: argparse.Namespace) -> dict[str, Any]:
    with workspace(args.keep) as base:
        chaos = Campaign(args, base)
        try:
            chaos.setup()
            begin = time.monotonic()
            chaos.run()
            chaotic = time.monotonic() - begin
            chaos.count_faults()
            quiet = chaos.quiesce("the end", limit=args.quiesce)
            chaos.check()
            chaos.finish()
        finally:
            chaos.close()
        tally = chaos.tally
        for error in sorted(set(chaos.watch.unanswered)):
            chaos.violation("status unanswered", error)
        latencies = chaos.watch.latencies
        faults = sum(tally.faults.values()) + sum(tally.kills.values())
        return {
            "bench": "chaos",
            "seed": args.seed,
            "minutes": args.minutes,
            "faults": dict(sorted(tally.faults.items())),
            "kills": dict(sorted(tally.kills.items())),
            "faults_total": faults,
            "faults_per_minute": round(faults / (chaotic / 60), 1),
            "missed": dict(tally.missed),
            "server_requests": tally.requests,
            "skipped": {"cache_full": chaos.no_disk} if chaos.no_disk else {},
            "sessions": {"final": len(chaos.inputs), **tally.sessions},
            "quiescence_s": round(quiet, 1),
            "violations": [str(v) for v in chaos.violations],
            "status_requests": len(latencies),
            "status_unanswered": len(chaos.watch.unanswered),
            "status_p50_ms": round(percentile(latencies, 0.5) * 1000, 1) if latencies else None,
            "status_p99_ms": round(percentile(latencies, 0.99) * 1000, 1) if latencies else None,
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--rate", type=float, default=1.0, help="scale every event rate")
    parser.add_argument("--initial", type=int, default=12, help="sessions before the chaos")
    parser.add_argument(
        "--quiesce", type=float, default=900.0, help="seconds the daemon has to settle at the end"
    )
    parser.add_argument("--keep", type=Path, help="work in this folder and keep it")
    parser.add_argument(
        "--no-cache-disk", action="store_true", help="keep the cache on disk (no full disk)"
    )
    args = parser.parse_args()
    # Stopped from outside (a timeout, an operator): close the daemon and the server as at
    # the end of a campaign, rather than leave them running.
    signal.signal(signal.SIGTERM, lambda signum, _frame: sys.exit(128 + signum))
    figures = campaign(args)
    print(json.dumps(figures))
    sys.exit(1 if figures["violations"] else 0)


if __name__ == "__main__":
    main()
