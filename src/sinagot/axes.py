"""Data axes: enums of binary values naming every frequency of a dataset.

As in FrameTree, each basis axis is one bit (``member = 0b001``), a leaf row
is the OR of all bases (``session = 0b111``) and every permutation of the bits
must be named, down to ``constant = 0b000`` for dataset-wide items. The axis
on the lowest bit is the default when a tree has a single level.
"""

from __future__ import annotations

from enum import Enum, EnumMeta
from typing import Any, Self

__all__ = ["Axes", "AxesDefinitionError"]


class AxesDefinitionError(TypeError):
    """An Axes subclass does not name every permutation of its bits."""


class _AxesMeta(EnumMeta):
    def __new__(
        metacls,
        cls: str,
        bases: tuple[type, ...],
        classdict: Any,
        **kwargs: Any,
    ) -> Any:
        enum_class = super().__new__(metacls, cls, bases, classdict, **kwargs)
        members: dict[str, Enum] = dict(enum_class.__members__)
        values = {name: member.value for name, member in members.items()}
        if values:
            _check_permutations(cls, values)
        return enum_class


def _check_permutations(cls: str, values: dict[str, Any]) -> None:
    for name, value in values.items():
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise AxesDefinitionError(
                f"{cls}.{name} = {value!r}: axes values must be non-negative binary ints (0b01)"
            )
    ndim = max(values.values()).bit_length()
    missing = sorted(set(range(2**ndim)) - set(values.values()))
    if missing:
        listed = ", ".join(f"0b{m:0{ndim}b}" for m in missing)
        raise AxesDefinitionError(
            f"{cls} must name every permutation of its {ndim} bits: add members for {listed}"
        )


class Axes(Enum, metaclass=_AxesMeta):
    """Base class of data axes; subclass it with one member per bit permutation."""

    @classmethod
    def ndim(cls) -> int:
        return max(int(member.value) for member in cls).bit_length()

    @classmethod
    def bases(cls) -> tuple[Self, ...]:
        """The basis axes (one bit each), lowest bit first."""
        return tuple(cls(1 << bit) for bit in range(cls.ndim()))

    @classmethod
    def default(cls) -> Self:
        """The basis axis assumed when a tree has a single level: the lowest bit."""
        return cls(1)

    @classmethod
    def leaf(cls) -> Self:
        return cls((1 << cls.ndim()) - 1)

    @classmethod
    def root(cls) -> Self:
        """The dataset-wide frequency (0b0...0), usually named ``constant``."""
        return cls(0)

    def span(self) -> tuple[Self, ...]:
        """The basis axes this frequency is made of, lowest bit first."""
        return tuple(base for base in type(self).bases() if base.value & self.value)

    def is_basis(self) -> bool:
        value = int(self.value)
        return value != 0 and value & (value - 1) == 0

    def is_parent(self, child: Self, if_match: bool = False) -> bool:
        """True if rows of ``child`` sit below rows of ``self`` (its bits contain ours)."""
        if self.value == child.value:
            return if_match
        return int(self.value) & int(child.value) == int(self.value)

    def __and__(self, other: Self) -> Self:
        return type(self)(self.value & other.value)

    def __or__(self, other: Self) -> Self:
        return type(self)(self.value | other.value)

    def __invert__(self) -> Self:
        return type(self)(self.value ^ type(self).leaf().value)

    def __bool__(self) -> bool:
        return int(self.value) != 0

    def __str__(self) -> str:
        return self.name
