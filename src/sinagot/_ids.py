"""Which labels of a listing are record ids: those matching ``[records] id_pattern``.

A project often holds sessions that are no records (phantoms, tests, QA runs).
Each is said once, and all those of one listing in one summary line: a poll of a
project with hundreds of such sessions must not bury the log (the full list goes
to DEBUG).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Set

__all__ = ["IdFilter"]

# Labels quoted in the summary line; the rest are counted.
_EXAMPLES = 3


class IdFilter:
    """Keeps the labels matching ``pattern``; remembers the others so each is said once.

    ``where`` names the dataset in the log lines, ``noun`` what the labels name
    ("session" on a server, "folder" in a local dataset).
    """

    __slots__ = ("_fresh", "ignored", "noun", "pattern", "where")

    def __init__(self, pattern: re.Pattern[str], where: str, noun: str = "session") -> None:
        self.pattern = pattern
        self.where = where
        self.noun = noun
        self.ignored: set[str] = set()
        self._fresh: list[str] = []

    def accept(self, label: str) -> bool:
        """Whether ``label`` is a record id; one that is not waits for :meth:`report`."""
        if label in self.ignored:
            return False
        if self.pattern.fullmatch(label):
            return True
        self.ignored.add(label)
        self._fresh.append(label)
        return False

    def keep_only(self, labels: Set[str]) -> None:
        """Forget the ignored labels not in ``labels`` (those gone from the server): one
        that comes back is said again."""
        self.ignored.intersection_update(labels)

    def report(self, logger: logging.Logger) -> None:
        """Log the labels ignored since the last report: one INFO line, the full list at DEBUG."""
        fresh, self._fresh = self._fresh, []
        if not fresh:
            return
        examples = ", ".join(repr(label) for label in fresh[:_EXAMPLES])
        more = f" and {len(fresh) - _EXAMPLES} more" if len(fresh) > _EXAMPLES else ""
        total = f"; {len(self.ignored)} ignored in all" if len(self.ignored) > len(fresh) else ""
        logger.info(
            "%s: ignoring %d %s(s) that do not match id_pattern %r: %s%s%s",
            self.where,
            len(fresh),
            self.noun,
            self.pattern.pattern,
            examples,
            more,
            total,
        )
        if logger.isEnabledFor(logging.DEBUG):
            logger.debug("%s: ignored %ss: %s", self.where, self.noun, ", ".join(fresh))

    def same_pattern(self, other: IdFilter) -> bool:
        """Whether ``other`` filters with the same pattern (then its memory stays valid)."""
        return (self.pattern.pattern, self.pattern.flags) == (
            other.pattern.pattern,
            other.pattern.flags,
        )
