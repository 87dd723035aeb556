"""A record-id pattern guessed from session labels, for ``sinagot init``.

Each label is cut into runs of letters, runs of digits and single other
characters (``REC-200331-A``: ``REC``, ``-``, ``200331``, ``-``, ``A``). Labels cut
the same way form a shape; a shape becomes a regex, each run written as a literal
when it is the same word in every label (``REC``), else as its character class
and lengths (``\\d{6}``, ``[A-Z]``). Digits are never literal: a date or a number
that happens to be shared today changes tomorrow. The shapes that most labels
have are kept; the few odd labels (phantoms, tests) are left out, for the user to see.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["IdPattern", "derive_id_pattern"]

_RUN = re.compile(r"[A-Za-z]+|[0-9]+|.", re.DOTALL)
# A shape is kept when it holds at least this share of the labels (or is the largest).
_MIN_SHARE = 0.1
_MAX_SHAPES = 4
_SHARED_LETTER = 10


@dataclass(frozen=True, slots=True)
class IdPattern:
    """The pattern, and the labels it leaves out (sorted)."""

    pattern: str
    unmatched: tuple[str, ...]


def _kind(run: str) -> str:
    if run.isdigit():
        return "digits"
    if run.isalpha() and run.isascii():
        return "letters"
    return run  # any other character stands for itself


def _literal(text: str) -> str:
    # A dash needs no escape outside a class, and ``REC-\d{6}`` reads better than ``REC\-``.
    return re.escape(text).replace("\\-", "-")


def _quantifier(lengths: set[int]) -> str:
    low, high = min(lengths), max(lengths)
    if low == high:
        return "" if low == 1 else f"{{{low}}}"
    return f"{{{low},{high}}}"


def _letters(runs: Sequence[str]) -> str:
    # A word shared by the labels is literal (REC); a single letter only when many share
    # it (S001...S060), as a few may share one by chance (REC-...-A).
    if len(set(runs)) == 1 and len(runs) >= (2 if len(runs[0]) > 1 else _SHARED_LETTER):
        return _literal(runs[0])
    text = "".join(runs)
    if text.isupper():
        klass = "[A-Z]"
    elif text.islower():
        klass = "[a-z]"
    else:
        klass = "[A-Za-z]"
    return klass + _quantifier({len(r) for r in runs})


def _shape_regex(labels: Sequence[Sequence[str]]) -> str:
    parts = []
    for runs in zip(*labels, strict=True):
        kind = _kind(runs[0])
        if kind == "digits":
            parts.append(r"\d" + _quantifier({len(r) for r in runs}))
        elif kind == "letters":
            parts.append(_letters(runs))
        else:
            parts.append(_literal(kind))
    return "".join(parts)


def derive_id_pattern(labels: Sequence[str]) -> IdPattern:
    """A regex matching (in full) the labels of the common shapes; see the module docstring."""
    shapes: dict[tuple[str, ...], list[list[str]]] = {}
    for label in labels:
        runs = _RUN.findall(label)
        shapes.setdefault(tuple(_kind(run) for run in runs), []).append(runs)
    ranked = sorted(shapes.values(), key=len, reverse=True)
    kept = [
        group
        for rank, group in enumerate(ranked[:_MAX_SHAPES])
        if rank == 0 or len(group) >= max(2, _MIN_SHARE * len(labels))
    ]
    regexes = list(dict.fromkeys(_shape_regex(group) for group in kept))
    pattern = regexes[0] if len(regexes) == 1 else "|".join(f"(?:{r})" for r in regexes)
    compiled = re.compile(pattern)
    unmatched = tuple(sorted(label for label in labels if not compiled.fullmatch(label)))
    return IdPattern(pattern, unmatched)
