"""A local user without the cluster's credentials trying to run code through Dask ports.

Run as its own process (:func:`attack`): ``python dask_attacker.py MARKER PORT...``. For every port,
over plaintext TCP and over TLS (with a certificate of its own), it sends the
requests that make a scheduler, a nanny or a worker run a function: the scheduler's
``run_function`` and the workers' ``run``, as ``Client.run_on_scheduler`` and
``distributed.core.rpc(...).run`` do. The function writes MARKER. It prints one JSON
object: ``{"tcp://127.0.0.1:PORT op": "ran" | "<why it failed>"}``.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

from distributed import Security
from distributed.core import rpc
from distributed.protocol.pickle import dumps

ATTEMPT_TIMEOUT = 3.0


def plant(*args: object, **kwargs: object) -> str:
    Path(MARKER).write_text("the attacker's code ran here")
    return "ran"


async def attempt(address: str, op: str, security: Security | None) -> str:
    connection_args = security.get_connection_args("client") if security else {}
    remote = rpc(address, timeout=ATTEMPT_TIMEOUT, connection_args=connection_args)
    try:
        async with asyncio.timeout(ATTEMPT_TIMEOUT * 2):
            if op == "run_function":
                answer = await remote.run_function(function=dumps(plant), args=(), kwargs={})
            else:
                answer = await remote.run(function=dumps(plant), args=(), kwargs={})
    except Exception as exc:
        return f"refused: {type(exc).__name__}"
    finally:
        await remote.close_rpc()
    return "ran" if "ran" in repr(answer) else f"answered without running: {answer!r:.100}"


async def main(ports: list[int]) -> dict[str, str]:
    own = Security.temporary()  # a certificate the cluster never issued
    attempts = {
        f"{scheme}://127.0.0.1:{port} {op}": attempt(
            f"{scheme}://127.0.0.1:{port}", op, own if scheme == "tls" else None
        )
        for port in ports
        for scheme in ("tcp", "tls")
        for op in ("run_function", "run")
    }
    results = await asyncio.gather(*attempts.values())
    return dict(zip(attempts, results, strict=True))


def attack(ports: set[int], marker: Path) -> dict[str, str]:
    """Run the attacker as another process against ``ports``; what happened to each attempt."""
    result = subprocess.run(
        [sys.executable, __file__, str(marker), *map(str, sorted(ports))],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    outcome: dict[str, str] = json.loads(result.stdout.strip().splitlines()[-1])
    return outcome


def assert_refused(outcome: dict[str, str], marker: Path) -> None:
    assert outcome, "no attempt was made"
    assert not marker.exists(), "the attacker's code ran"
    assert all(result.startswith("refused") for result in outcome.values()), outcome


if __name__ == "__main__":
    MARKER = sys.argv[1]
    outcome = asyncio.run(main([int(port) for port in sys.argv[2:]]))
    sys.stdout.write(json.dumps(outcome) + "\n")
