"""The house's shape: no import cycle anywhere in src/sinagot, and tests and benches
reach below a package's face only through its declared testing API (``internals``).

The layers themselves are import-linter's contracts (pyproject.toml, run by CI's
``lint-imports``); these checks cover what its contracts do not: cycles between any
modules (not only siblings), and the code outside the package.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator, Mapping, Set
from pathlib import Path

import grimp
import pytest

ROOT = Path(__file__).resolve().parents[1]


def _cycles(graph: Mapping[str, Set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module, or importing itself
    (Tarjan's algorithm, iterative: the graph is a few hundred modules)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for root in sorted(graph):
        if root in index:
            continue
        work: list[tuple[str, Iterator[str]]] = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1 or node in graph.get(node, ()):
                    found.append(sorted(component))
    return found


def _import_graph() -> dict[str, set[str]]:
    # TYPE_CHECKING imports count, and grimp reads imports inside functions too.
    graph = grimp.build_graph("sinagot", exclude_type_checking_imports=False, cache_dir=None)
    return {
        module: set(graph.find_modules_directly_imported_by(module)) for module in graph.modules
    }


def test_the_cycle_finder_finds_cycles() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a", "d"}, "e": set()}
    assert _cycles(graph) == [["a", "b", "c"], ["d"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycle_in_src() -> None:
    graph = _import_graph()
    assert "sinagot.engine._phases" in graph  # the graph is the package's
    assert _cycles(graph) == []


def _private_imports(source: str) -> Iterator[tuple[int, str]]:
    """The imports of ``source`` that name a private module of sinagot (a component
    ``_name``, not ``__name__``) other than through an ``internals`` module."""

    def private(parts: list[str]) -> bool:
        return any(part.startswith("_") and not part.startswith("__") for part in parts[1:])

    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "sinagot" and private(alias.name.split(".")):
                    yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            parts = node.module.split(".")
            if parts[0] != "sinagot":
                continue
            if private(parts):
                yield node.lineno, node.module
            for alias in node.names:
                if alias.name.startswith("_") and not alias.name.startswith("__"):
                    yield node.lineno, f"{node.module}.{alias.name}"


def test_the_private_import_finder_finds_them() -> None:
    source = (
        "import sinagot.engine._dask\n"
        "from sinagot.daemon._journal import Journal\n"
        "from sinagot.daemon import _cluster\n"
        "from sinagot.daemon.internals import Journal\n"
        "from sinagot import __version__, Dataset\n"
        "import os._private\n"
    )
    assert list(_private_imports(source)) == [
        (1, "sinagot.engine._dask"),
        (2, "sinagot.daemon._journal"),
        (3, "sinagot.daemon._cluster"),
    ]


@pytest.mark.parametrize("folder", ["tests", "bench"])
def test_tests_and_benches_import_no_private_module(folder: str) -> None:
    files = sorted((ROOT / folder).rglob("*.py"))
    assert files
    found = [
        f"{path.relative_to(ROOT)}:{line}: {name}"
        for path in files
        for line, name in _private_imports(path.read_text())
    ]
    assert found == [], "import these from the package's face or its internals module"
