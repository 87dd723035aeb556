"""The XNAT client lives on alias tokens: traded for the password at login, renewed, used
again after a session expired or the server restarted, against the emulator."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from sinagot.connectors import RetryPolicy
from sinagot.connectors.internals import Credentials, XnatClient, resolve_credentials
from sinagot.errors import AuthenticationError, ConfigError
from sinagot.testing import EmulatorServer

PROJECT = "P"
PASSWORD = "secret"
FAST_RETRY = RetryPolicy(attempts=4, initial_delay=0.01, max_delay=0.05)


def _client(server: EmulatorServer, user: str = "alice", password: str = PASSWORD) -> XnatClient:
    return XnatClient(server.url, Credentials(user, password), project=PROJECT, retry=FAST_RETRY)


async def _projects(client: XnatClient) -> list[str]:
    rows = await client.list_rows("/data/projects", "the projects")
    return [row["ID"] for row in rows]


def _strings(obj: object, depth: int = 5) -> Iterator[str]:
    """Every string reachable from ``obj`` through attributes and containers (not through
    the connection pool, which holds no credentials)."""
    if isinstance(obj, str):
        yield obj
        return
    if depth == 0 or type(obj).__module__.startswith(("aiohttp", "asyncio", "yarl")):
        return
    if isinstance(obj, dict):
        children: list[Any] = [*obj.keys(), *obj.values()]
    elif isinstance(obj, list | tuple | set | frozenset):
        children = list(obj)
    else:
        children = list(getattr(obj, "__dict__", {}).values())
        for cls in type(obj).__mro__:
            children += [getattr(obj, s) for s in getattr(cls, "__slots__", ()) if hasattr(obj, s)]
    for child in children:
        yield from _strings(child, depth - 1)


@pytest.fixture
def server(xnat_server_factory: Callable[..., EmulatorServer]) -> EmulatorServer:
    started = xnat_server_factory(users={"alice": PASSWORD})
    started.create_project(PROJECT)
    return started


async def test_the_password_is_traded_for_a_token_at_login_and_forgotten(
    server: EmulatorServer,
) -> None:
    client = _client(server)
    try:
        assert await _projects(client) == [PROJECT]
        assert client.uses_alias_token
        assert client.user == "alice"
        assert PASSWORD not in set(_strings(client))
        assert "secret" not in repr(client)
        counts = server.request_counts()
        assert counts["GET /data/JSESSION"] == 1
        assert counts["GET /data/services/tokens/issue"] == 1
        await client.aclose()
        # Used again after closing (the blocking store does so): it logs in with its token.
        assert await _projects(client) == [PROJECT]
        assert server.request_counts()["GET /data/JSESSION"] == 2
    finally:
        await client.aclose()
    assert server.tokens is not None
    [token] = server.tokens._tokens.values()
    assert token.user == "alice" and token.enabled


async def test_a_new_session_after_expiry_and_a_restart_with_another_password(
    tmp_path: Path,
) -> None:
    data = tmp_path / "xnat"
    first = EmulatorServer(data, users={"alice": PASSWORD}, session_expiry=0.2)
    first.create_project(PROJECT)
    with first.running_in_thread():
        port = int(first.url.rsplit(":", 1)[1])
        client = XnatClient(
            first.url, Credentials("alice", PASSWORD), project=PROJECT, retry=FAST_RETRY
        )
        assert await _projects(client) == [PROJECT]
        await asyncio.sleep(0.4)  # the session expires on the server
        assert await _projects(client) == [PROJECT]
        assert first.request_counts()["GET /data/JSESSION"] == 2
    first.close()
    # The server restarts on the same port; its sessions are gone and the password is new.
    second = EmulatorServer(data, users={"alice": "changed"}, port=port)
    try:
        with second.running_in_thread():
            assert await _projects(client) == [PROJECT]
            counts = second.request_counts()
            # One refused request, one login with the token, the request again.
            assert counts["GET /data/JSESSION"] == 1
            assert counts["GET /data/projects"] == 2
            await client.aclose()
    finally:
        second.close()


async def test_the_token_is_renewed_before_it_expires(
    xnat_server_factory: Callable[..., EmulatorServer],
) -> None:
    server = xnat_server_factory(alias_token_timeout=2.0, session_expiry=0.3)
    server.create_project(PROJECT)
    client = _client(server, "alice", "secret")
    try:
        # Over two token lifetimes, with sessions expiring between some of the requests.
        for _ in range(20):
            assert await _projects(client) == [PROJECT]
            await asyncio.sleep(0.25)
    finally:
        await client.aclose()
    assert server.tokens is not None
    *old, last = sorted(server.tokens._tokens.values(), key=lambda t: t.id)
    assert len(old) >= 3  # renewed at half of each lifetime
    assert not any(t.enabled for t in old) and last.enabled  # each old one invalidated


async def test_an_alias_token_as_the_credential(server: EmulatorServer) -> None:
    assert server.tokens is not None
    given = server.tokens.issue("alice")
    client = _client(server, given.alias, given.secret)
    try:
        assert await _projects(client) == [PROJECT]
        assert client.user == "alice"  # the account's name, not the alias
        assert client.uses_alias_token
    finally:
        await client.aclose()
    # Renewed with a token of the client's own; the one given is the user's to keep.
    assert server.tokens.user_of(given.alias, given.secret) == "alice"
    assert len(server.tokens._tokens) == 2


async def test_a_server_without_the_token_service_gets_the_password_with_one_log_line(
    xnat_server_factory: Callable[..., EmulatorServer], caplog: pytest.LogCaptureFixture
) -> None:
    server = xnat_server_factory(alias_tokens=False, session_expiry=0.2)
    server.create_project(PROJECT)
    caplog.set_level(logging.DEBUG, logger="sinagot")
    for _ in range(2):
        client = _client(server)
        try:
            assert await _projects(client) == [PROJECT]
            await asyncio.sleep(0.3)
            assert await _projects(client) == [PROJECT]  # logged in again with the password
            assert not client.uses_alias_token
        finally:
            await client.aclose()
    lines = [r.getMessage() for r in caplog.records if "issues no alias token" in r.getMessage()]
    assert lines == [
        f"{server.url} issues no alias token (HTTP 404): logging in with the password each time"
    ]
    assert PASSWORD not in caplog.text


async def test_a_token_gone_on_the_server_is_a_clear_error(
    xnat_server_factory: Callable[..., EmulatorServer], caplog: pytest.LogCaptureFixture
) -> None:
    server = xnat_server_factory(session_expiry=0.2)
    server.create_project(PROJECT)
    caplog.set_level(logging.DEBUG, logger="sinagot")
    client = _client(server)
    try:
        assert await _projects(client) == [PROJECT]
        assert server.tokens is not None
        [token] = server.tokens._tokens.values()
        server.tokens.invalidate(token.alias)  # as an admin revoking it would
        await asyncio.sleep(0.3)
        with pytest.raises(AuthenticationError) as raised:
            await _projects(client)
    finally:
        await client.aclose()
    message = str(raised.value)
    assert "no longer accepts the alias token" in message and "'alice'" in message
    assert token.secret not in message and token.alias not in message
    assert token.secret not in caplog.text and token.alias not in caplog.text


async def test_concurrent_requests_share_one_login_and_one_renewal(
    xnat_server_factory: Callable[..., EmulatorServer],
) -> None:
    server = xnat_server_factory(alias_token_timeout=2.0)
    server.create_project(PROJECT)
    client = _client(server)
    try:
        await asyncio.gather(*(_projects(client) for _ in range(8)))
        await asyncio.sleep(1.1)  # past half the token's lifetime
        await asyncio.gather(*(_projects(client) for _ in range(8)))
    finally:
        await client.aclose()
    counts = server.request_counts()
    assert counts["GET /data/JSESSION"] == 1
    assert counts["GET /data/services/tokens/issue"] == 2


def test_netrc_is_read_as_xnatpy_reads_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    netrc = tmp_path / "netrc"
    netrc.write_text(
        "machine 127.0.0.1 login bob password by-host\n"
        "machine 127.0.0.1:8104 login alice password by-host-and-port\n"
        "default login carol password by-default\n"
    )
    netrc.chmod(0o600)
    monkeypatch.delenv("SINAGOT_XNAT_PASSWORD", raising=False)
    monkeypatch.setenv("NETRC", str(netrc))  # xnatpy's way to name the file
    found = resolve_credentials("http://127.0.0.1:8104", None, None)
    assert (found.user, found.password) == ("alice", "by-host-and-port")
    found = resolve_credentials("http://127.0.0.1:9000", None, None)
    assert (found.user, found.password) == ("bob", "by-host")
    found = resolve_credentials("http://xnat.example.org", None, None)
    assert (found.user, found.password) == ("carol", "by-default")
    monkeypatch.setenv("NETRC", str(tmp_path / "missing"))
    with pytest.raises(ConfigError, match="no password for XNAT user 'alice'"):
        resolve_credentials("http://127.0.0.1:8104", "alice", None)
