"""Deterministic fault injection and request counters.

A :class:`FaultRule` matches requests by a regular expression searched in the
decoded request path and, optionally, by method. Rules are tried in order; the
first one that matches, still has ``times`` left and wins its ``probability``
draw (from one ``random.Random(seed)``) is applied to that request. The same
seed and the same request sequence give the same faults.
"""

from __future__ import annotations

import json
import random
import re
import threading
from collections import Counter
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Literal

__all__ = ["FAULT_KINDS", "FaultInjector", "FaultRule", "parse_fault_spec"]

FaultKind = Literal["status", "reset", "truncate", "corrupt", "latency", "trickle"]

#: ``status``: answer ``status`` (500, 503, 429, ...) with ``Retry-After`` if set;
#: ``reset``: send ``at`` bytes of the body then reset the connection (TCP RST);
#: ``truncate``: announce the full Content-Length, send ``at`` bytes, close cleanly;
#: ``corrupt``: flip the byte at offset ``at`` (same length, wrong digest);
#: ``latency``: wait ``delay`` seconds before answering;
#: ``trickle``: send the body in ``chunk_size`` pieces, ``delay`` seconds apart.
FAULT_KINDS: frozenset[str] = frozenset(
    {"status", "reset", "truncate", "corrupt", "latency", "trickle"}
)


@dataclass(frozen=True, slots=True)
class FaultRule:
    """One kind of fault for the requests whose path matches ``path``."""

    kind: FaultKind
    path: str = ".*"
    method: str | None = None
    status: int = 503
    retry_after: int | None = 1
    times: int | None = None
    probability: float = 1.0
    delay: float = 0.1
    chunk_size: int = 1024
    at: int | None = None  # body offset for reset/truncate/corrupt; None = half the body

    def __post_init__(self) -> None:
        if self.kind not in FAULT_KINDS:
            raise ValueError(
                f"unknown fault kind {self.kind!r}: use one of {', '.join(sorted(FAULT_KINDS))}"
            )
        re.compile(self.path)
        if not 0.0 <= self.probability <= 1.0:
            raise ValueError(f"fault probability {self.probability} is not between 0 and 1")
        if self.times is not None and self.times < 0:
            raise ValueError(f"fault times {self.times} is negative")
        if self.chunk_size < 1:
            raise ValueError(f"fault chunk_size {self.chunk_size} must be at least 1")

    @property
    def label(self) -> str:
        """The key under which injections of this rule are counted."""
        return f"status_{self.status}" if self.kind == "status" else self.kind

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> FaultRule:
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown fault rule keys {sorted(unknown)}: use {sorted(known)}")
        return cls(**data)


def parse_fault_spec(spec: str) -> list[FaultRule]:
    """Rules from a JSON list of rule objects (or ``{"rules": [...]}``), or ``@file.json``."""
    text = Path(spec[1:]).read_text() if spec.startswith("@") else spec
    data = json.loads(text)
    if isinstance(data, dict):
        data = data.get("rules", [])
    if not isinstance(data, list) or not all(isinstance(item, dict) for item in data):
        raise ValueError("a fault spec must be a JSON list of rule objects")
    return [FaultRule.from_json(item) for item in data]


@dataclass(slots=True)
class _ActiveRule:
    rule: FaultRule
    pattern: re.Pattern[str]
    seen: int = 0


@dataclass(slots=True)
class FaultInjector:
    """Chooses the fault (if any) for each request and counts requests and faults."""

    seed: int = 0
    _rules: list[_ActiveRule] = field(init=False, default_factory=list)
    _random: random.Random = field(init=False)
    _lock: threading.Lock = field(init=False, default_factory=threading.Lock)
    _requests: Counter[str] = field(init=False, default_factory=Counter)
    _faults: Counter[str] = field(init=False, default_factory=Counter)

    def __post_init__(self) -> None:
        self._random = random.Random(self.seed)

    def set_rules(self, rules: list[FaultRule], seed: int | None = None) -> None:
        """Replace every rule (their ``times`` start afresh); reseed when ``seed`` is given."""
        with self._lock:
            self._rules = [_ActiveRule(r, re.compile(r.path)) for r in rules]
            if seed is not None:
                self.seed = seed
                self._random = random.Random(seed)

    def rules(self) -> list[FaultRule]:
        with self._lock:
            return [active.rule for active in self._rules]

    def choose(self, method: str, path: str) -> FaultRule | None:
        with self._lock:
            for active in self._rules:
                rule = active.rule
                if rule.method is not None and rule.method.upper() != method:
                    continue
                if not active.pattern.search(path):
                    continue
                if rule.times is not None and active.seen >= rule.times:
                    continue
                active.seen += 1
                if rule.probability < 1.0 and self._random.random() >= rule.probability:
                    continue
                return rule
        return None

    def count_request(self, route: str) -> None:
        with self._lock:
            self._requests[route] += 1

    def count_fault(self, rule: FaultRule) -> None:
        with self._lock:
            self._faults[rule.label] += 1

    def request_counts(self) -> dict[str, int]:
        with self._lock:
            return dict(self._requests)

    def fault_counts(self) -> dict[str, int]:
        with self._lock:
            return dict(self._faults)

    def reset_counters(self) -> None:
        with self._lock:
            self._requests.clear()
            self._faults.clear()
