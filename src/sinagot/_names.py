"""Length limits of names that become file or folder names (and XNAT labels).

Linux file systems refuse a file or folder name over NAME_MAX (255) bytes and
the kernel refuses a path over PATH_MAX (4096) bytes, both counted in bytes of
the file-system encoding (UTF-8), not in characters: 128 x "é" is 256 bytes.
Checking names when they arrive turns an ENAMETOOLONG half-way through a
download or a run into one clear error before anything is created.
"""

from __future__ import annotations

from .errors import UnsafeNameError

__all__ = [
    "NAME_MAX",
    "RELATIVE_PATH_MAX",
    "byte_length",
    "check_length",
    "length_problem",
    "shorten",
]

NAME_MAX = 255
# A relative name (a file inside an entry, an output of a script) always lands below a prefix:
# the cache root, an entry's four folder names and its staging folder, or a work dir and
# record/task/modality. A quarter of PATH_MAX stays free for that prefix, several times what
# a usual one takes (/var/cache/sinagot/https-xnat.example.org-443/PROJ/REC-1/
# scans%2F1%2Fresources%2FEEG/tmp-<32 hex>/files/ is about 140 bytes).
RELATIVE_PATH_MAX = 4096 - 1024

# Long enough to recognise a name, short enough to keep an error on one readable line.
_HEAD = 24
_TAIL = 12


def byte_length(name: str) -> int:
    """The length of ``name`` on disk, in bytes."""
    # surrogatepass never raises; it counts a lone surrogate as no less than the OS stores.
    return len(name.encode("utf-8", "surrogatepass"))


def shorten(name: str) -> str:
    """``name`` with its middle cut out when it is too long to quote in a message."""
    if len(name) <= _HEAD + _TAIL + 3:
        return name
    return f"{name[:_HEAD]}...{name[-_TAIL:]}"


def length_problem(name: str, what: str) -> str | None:
    """Why ``name`` (a file or folder name, or a relative POSIX path) is too long to store, or None.

    The text starts with ``what`` and the shortened name, e.g. ``file name 'aaa...a.csv' is 300
    bytes in UTF-8, over the 255-byte limit of a file or folder name``.
    """
    # At most 4 bytes a character: a short name needs no encoding to be measured.
    if 4 * len(name) <= NAME_MAX:
        return None
    size = byte_length(name)
    if size > RELATIVE_PATH_MAX:
        return (
            f"{what} {shorten(name)!r} is {size} bytes in UTF-8, over the {RELATIVE_PATH_MAX}-byte "
            "limit of a relative path"
        )
    for part in name.split("/"):
        size = byte_length(part)
        if size > NAME_MAX:
            which = "is" if part == name else "has a part that is"
            return (
                f"{what} {shorten(name)!r} {which} {size} bytes in UTF-8, over the {NAME_MAX}-byte "
                "limit of a file or folder name"
            )
    return None


def check_length(name: str, what: str, fix: str) -> None:
    """Raise :class:`~sinagot.errors.UnsafeNameError` if ``name`` is too long to store."""
    if problem := length_problem(name, what):
        raise UnsafeNameError(f"{problem}: {fix}")
