"""Property-based tests of the XNAT connector's reading of answers it did not expect.

A server on 127.0.0.1 answers each request with whatever the example holds for its
path: valid XNAT JSON mutated (a node replaced, a key dropped, the bytes cut), random
JSON, or random bytes. Whatever the answer, the store returns a result or raises one
of our errors on one line; valid listings come back as they were listed.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sinagot.cache import Cache
from sinagot.connectors import AsyncXnatStore, DataRow, RetryPolicy
from sinagot.errors import SinagotError

FUZZ = settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
PROJECT = "P"
SESSION = f"/data/projects/{PROJECT}/experiments/S1"
LISTING = f"/data/projects/{PROJECT}/experiments"


class Answers:
    """A server on 127.0.0.1 answering each path with the bytes set for it (404 otherwise);
    its own event loop in a thread, so that each example can run the store in its own."""

    def __init__(self) -> None:
        self.bodies: dict[str, bytes] = {}
        self._ready = threading.Event()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._serve, name="answers", daemon=True)
        self._thread.start()
        self._ready.wait(10)

    def _serve(self) -> None:
        asyncio.set_event_loop(self._loop)
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._answer)
        self._runner = web.AppRunner(app)
        self._loop.run_until_complete(self._runner.setup())
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        self._loop.run_until_complete(site.start())
        self.url = f"http://127.0.0.1:{self._runner.addresses[0][1]}"
        self._ready.set()
        self._loop.run_forever()
        self._loop.run_until_complete(self._runner.cleanup())

    async def _answer(self, request: web.Request) -> web.Response:
        if request.path == "/data/JSESSION":
            return web.Response(text="0123456789ABCDEF")
        body = self.bodies.get(request.path)
        if body is None:
            return web.Response(status=404, text="not found")
        return web.Response(body=body, content_type="application/json")

    def close(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)


@pytest.fixture(scope="module")
def answers() -> Iterator[Answers]:
    server = Answers()
    try:
        yield server
    finally:
        server.close()


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("xnat-fuzz")


def _result_set(rows: list[dict[str, Any]]) -> dict[str, Any]:
    return {"ResultSet": {"Result": rows, "totalRecords": str(len(rows))}}


def _file_row(uri: str, size: int = 12, digest: str = "0" * 32) -> dict[str, Any]:
    return {"Name": uri.rsplit("/", 1)[-1], "Size": str(size), "URI": uri, "digest": digest}


# Valid answers, as the emulator and XNAT give them, for the session S1.
VALID: dict[str, Any] = {
    LISTING: _result_set(
        [
            {"ID": "E1", "label": "S1", "xsiType": "xnat:mrSessionData", "last_modified": "1"},
            {"ID": "E2", "label": "S2", "xsiType": "xnat:mrSessionData", "insert_date": "2"},
        ]
    ),
    f"{SESSION}/scans": _result_set([{"ID": "1", "type": "RS"}, {"ID": "2", "type": "MMN"}]),
    f"{SESSION}/resources": _result_set(
        [{"label": "PROVENANCE"}, {"label": "spectrum___at___sinagot"}]
    ),
    f"{SESSION}/scans/ALL/files": _result_set(
        [
            _file_row("/data/experiments/E1/scans/1/resources/EEG/files/raw.csv"),
            _file_row("/data/experiments/E1/scans/2/resources/EEG/files/sub/raw%20b.csv"),
        ]
    ),
    f"{SESSION}/resources/PROVENANCE/files": _result_set(
        [_file_row("/data/experiments/E1/resources/PROVENANCE/files/spectrum___at___sinagot.json")]
    ),
    f"{SESSION}/resources/PROVENANCE/files/spectrum___at___sinagot.json": {
        "record": "S1",
        "inputs": {"RS/EEG": "abc"},
    },
    SESSION: {
        "items": [
            {
                "meta": {"xsi:type": "xnat:mrSessionData"},
                "children": [
                    {
                        "field": "fields/field",
                        "items": [{"data_fields": {"name": "score___at___sinagot", "field": "3"}}],
                    }
                ],
            }
        ]
    },
    "/data/services/tokens/issue": {"alias": "a1", "secret": "s1", "xdat_user_id": "u"},
}

_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=10),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)


# A node of another type than the server's: what breaks a reader that trusts the shape.
_SWAPS = st.sampled_from((None, 0, -1, 2.5, True, "", "x", [], {}, [None], {"": None}))


def _nodes(document: Any, path: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    yield path
    if isinstance(document, dict):
        for key, value in document.items():
            yield from _nodes(value, (*path, key))
    elif isinstance(document, list):
        for index, value in enumerate(document):
            yield from _nodes(value, (*path, index))


@st.composite
def mutated(draw: st.DrawFn, document: Any) -> bytes:
    """``document`` with a few nodes replaced or dropped, as JSON; now and then cut short,
    or something else altogether."""
    kind = draw(st.sampled_from(("mutate", "mutate", "mutate", "json", "bytes", "valid")))
    if kind == "json":
        return json.dumps(draw(_JSON)).encode()
    if kind == "bytes":
        return draw(st.binary(max_size=64))
    document = json.loads(json.dumps(document))
    if kind == "mutate":
        for _ in range(draw(st.integers(1, 3))):
            inner = sorted((path for path in _nodes(document) if path), key=repr)
            if not inner:
                break
            path = draw(st.sampled_from(inner))
            holder = document
            for step in path[:-1]:
                holder = holder[step]
            if draw(st.booleans()) and isinstance(holder, dict):
                del holder[path[-1]]
            else:
                # A copy: a later mutation must not change the strategy's own [] or {}.
                holder[path[-1]] = json.loads(json.dumps(draw(_SWAPS | _JSON)))
    body = json.dumps(document).encode()
    if draw(st.integers(0, 9)) == 0:
        body = body[: draw(st.integers(0, len(body)))]
    return body


def _store(answers: Answers, folder: Path) -> AsyncXnatStore:
    return AsyncXnatStore.connect(
        answers.url,
        project=PROJECT,
        user="u",
        password="p",
        cache=Cache(folder / "cache"),
        local_root=folder / "work",
        retry=RetryPolicy(attempts=1, initial_delay=0.01),
        timeout=10,
    )


async def _read_everything(store: AsyncXnatStore) -> None:
    """Each reading of the store whose answers the example changed."""
    await store.list_sessions()
    row = DataRow("S1")
    await store.populate_row(row)
    for entry in list(row.entries.values()):
        if entry.is_derivative:
            await store.get_provenance(entry)
    await store.download_value(row.add_entry("score@sinagot", uri=SESSION))


async def _read_or_our_error(store: AsyncXnatStore) -> None:
    try:
        await _read_everything(store)
    except SinagotError as exc:
        assert str(exc) and "\n" not in str(exc)


def _run_or_our_error(answers: Answers, folder: Path) -> None:
    async def run() -> None:
        store = _store(answers, folder)
        try:
            await _read_or_our_error(store)
        finally:
            await store.aclose()

    asyncio.run(run())


def test_every_node_of_every_answer_of_another_type_is_read_or_one_error(
    answers: Answers, folder: Path
) -> None:
    """Exhaustive where the random examples are thin: each node of each valid answer
    dropped or swapped for each type, one at a time."""
    valid = {key: json.dumps(value).encode() for key, value in VALID.items()}
    cases: list[tuple[str, tuple[Any, ...], Any]] = [
        (path, node, swap)
        for path, document in sorted(VALID.items())
        for node in sorted(_nodes(document), key=repr)
        for swap in ("drop", None, 0, "x", [], {})
        if node or swap != "drop"
    ]
    crashes: list[str] = []

    async def run() -> None:
        store = _store(answers, folder)
        try:
            for path, node, swap in cases:
                document = json.loads(valid[path])
                if not node:
                    document = swap
                else:
                    holder = document
                    for step in node[:-1]:
                        holder = holder[step]
                    if swap == "drop":
                        holder.pop(node[-1])
                    else:
                        holder[node[-1]] = json.loads(json.dumps(swap))
                answers.bodies = {**valid, path: json.dumps(document).encode()}
                try:
                    await _read_or_our_error(store)
                except Exception as exc:
                    crashes.append(f"{path} {node} -> {swap!r}: {type(exc).__name__}: {exc}")
        finally:
            await store.aclose()

    asyncio.run(run())
    assert len(cases) > 100
    assert crashes == [], "\n".join(crashes)


@pytest.mark.parametrize("path", sorted(VALID))
@FUZZ
@given(data=st.data())
def test_a_mutated_answer_is_read_or_one_error(
    answers: Answers, folder: Path, path: str, data: st.DataObject
) -> None:
    answers.bodies = {key: json.dumps(value).encode() for key, value in VALID.items()}
    answers.bodies[path] = data.draw(mutated(VALID[path]), label=path)
    _run_or_our_error(answers, folder)


@FUZZ
@given(bodies=st.fixed_dictionaries({path: mutated(VALID[path]) for path in VALID}))
def test_every_answer_mutated_at_once_is_read_or_one_error(
    answers: Answers, folder: Path, bodies: dict[str, bytes]
) -> None:
    answers.bodies = bodies
    _run_or_our_error(answers, folder)


_LABELS = st.from_regex(r"[A-Za-z0-9_\-][A-Za-z0-9_.\-]{0,40}", fullmatch=True)


@FUZZ
@given(
    sessions=st.dictionaries(_LABELS, st.text(max_size=20), max_size=8),
    junk=st.lists(st.text(max_size=12).filter(lambda s: not s or s[0] in "./ "), max_size=3),
)
def test_a_listing_comes_back_as_listed(
    answers: Answers, folder: Path, sessions: dict[str, str], junk: list[str]
) -> None:
    rows = [{"label": label, "last_modified": stamp} for label, stamp in sessions.items()]
    rows += [{"label": label} for label in junk]  # unsafe labels: skipped, with a warning
    answers.bodies = {LISTING: json.dumps(_result_set(rows)).encode()}

    async def listed() -> list[tuple[str, str]]:
        store = _store(answers, folder)
        try:
            return [(s.label, s.last_modified) for s in await store.list_sessions()]
        finally:
            await store.aclose()

    assert asyncio.run(listed()) == sorted(sessions.items())


@pytest.mark.parametrize(
    "item",
    [
        {"children": None},
        {"children": [{"field": "fields/field", "items": 0}]},
        {"children": [{"field": "fields/field", "items": [{"data_fields": "x"}]}]},
    ],
    ids=["children", "items", "data_fields"],
)
def test_a_field_in_a_session_document_of_another_shape_is_one_error(
    answers: Answers, folder: Path, item: dict[str, Any]
) -> None:
    # Found by the exhaustive test above: each raised a TypeError or an AttributeError.
    answers.bodies = {key: json.dumps(value).encode() for key, value in VALID.items()}
    answers.bodies[SESSION] = json.dumps({"items": [item]}).encode()

    async def value() -> object:
        store = _store(answers, folder)
        try:
            row = DataRow("S1")
            return await store.download_value(row.add_entry("score@sinagot", uri=SESSION))
        finally:
            await store.aclose()

    with pytest.raises(SinagotError, match="has no value yet"):
        asyncio.run(value())
