"""The emulator's alias token service, driven by xnatpy, pyxnat and plain HTTP."""

from __future__ import annotations

import re
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pyxnat
import requests
import xnat

from sinagot.testing import EmulatorServer

ISSUE = "/data/services/tokens/issue"


def _get(server: EmulatorServer, path: str, auth: tuple[str, str]) -> requests.Response:
    return requests.get(server.url + path, auth=auth, timeout=10)


def test_a_token_as_xnat_issues_it_logs_in_wherever_a_password_does(
    xnat_server: EmulatorServer,
) -> None:
    xnat_server.create_project("P")
    with xnat.connect(xnat_server.url, user="alice", password="secret", loglevel="ERROR") as s:
        alias, secret = s.services.issue_token()
        document = s.get_json(ISSUE)
    assert re.fullmatch(r"[0-9a-f]{8}(-[0-9a-f]{4}){3}-[0-9a-f]{12}", alias)
    assert re.fullmatch(r"[A-Za-z0-9]{64}", secret)
    assert set(document) >= {
        "alias",
        "secret",
        "xdatUserId",
        "estimatedExpirationTime",
        "singleUse",
        "id",
        "enabled",
        "created",
    }
    assert document["xdatUserId"] == "alice" and document["singleUse"] is False
    # XNAT's default aliasTokenTimeout: 2 days.
    assert document["estimatedExpirationTime"] - document["created"] == 2 * 24 * 3600 * 1000

    # Basic auth, xnatpy's token login (GET / for a cookie), pyxnat, the login form.
    assert _get(xnat_server, "/data/projects", (alias, secret)).status_code == 200
    with xnat.connect(xnat_server.url, user=alias, password=secret, loglevel="ERROR") as s:
        assert s.logged_in_user == "alice" and list(s.projects.keys()) == ["P"]
    interface = pyxnat.Interface(server=xnat_server.url, user=alias, password=secret)
    assert interface.select.projects().get() == ["P"]
    interface.disconnect()
    form = requests.put(
        xnat_server.url + "/data/services/auth",
        data={"username": alias, "password": secret},
        timeout=10,
    )
    assert form.status_code == 200 and form.cookies.get("JSESSIONID")

    assert _get(xnat_server, "/data/projects", (alias, secret[:-1])).status_code == 401
    assert _get(xnat_server, "/data/projects", (alias, "")).status_code == 401


def test_validate_invalidate_and_tokens_for_other_users(
    xnat_server_factory: Callable[..., EmulatorServer],
) -> None:
    server = xnat_server_factory(
        users={"admin": "a", "alice": "secret", "bob": "b"}, project_access={"bob": ["P"]}
    )
    bob = _get(server, ISSUE, ("bob", "b")).json()
    alias, secret = bob["alias"], bob["secret"]
    validate = f"/data/services/tokens/validate/{alias}/{secret}"
    assert _get(server, validate, ("bob", "b")).json() == {"valid": "bob"}
    assert _get(server, validate[:-1] + "x", ("bob", "b")).json() == {}
    # Only its user or a site admin may look at a token; an unknown alias is not found.
    assert _get(server, validate, ("alice", "secret")).json() == {"valid": "bob"}
    assert (
        _get(
            server,
            f"/data/services/tokens/validate/{'0' * 8}-0000-0000-0000-{'0' * 12}/x",
            ("bob", "b"),
        ).status_code
        == 404
    )
    admin_token = _get(server, ISSUE, ("admin", "a")).json()
    other = f"/data/services/tokens/validate/{admin_token['alias']}/{admin_token['secret']}"
    assert _get(server, other, ("bob", "b")).status_code == 403

    # Tokens for another user: site admins only, and only for a user that exists.
    assert _get(server, ISSUE + "/user/alice", ("bob", "b")).status_code == 403
    for_alice = _get(server, ISSUE + "/user/alice", ("admin", "a")).json()
    assert for_alice["xdatUserId"] == "alice"
    assert _get(server, ISSUE + "/user/nobody", ("admin", "a")).status_code == 400
    # A token of bob's opens bob's projects only.
    assert _get(server, "/data/projects/Q", (alias, secret)).status_code in (403, 404)

    invalidate = f"/data/services/tokens/invalidate/{alias}/{secret}"
    assert _get(server, invalidate, ("alice", "secret")).status_code == 200  # an admin
    assert _get(server, "/data/projects", (alias, secret)).status_code == 401
    assert _get(server, validate, ("bob", "b")).json() == {}
    assert requests.post(server.url + ISSUE, auth=("bob", "b"), timeout=10).status_code == 405


def test_tokens_expire_survive_a_restart_and_a_new_password(tmp_path: Path) -> None:
    data = tmp_path / "xnat"
    first = EmulatorServer(data, users={"alice": "old"}, alias_token_timeout=1.0)
    with first.running_in_thread():
        short = _get(first, ISSUE, ("alice", "old")).json()
        first.tokens.timeout = 3600.0  # type: ignore[union-attr]
        long = _get(first, ISSUE, ("alice", "old")).json()
        time.sleep(1.1)
        assert _get(first, "/data/projects", (short["alias"], short["secret"])).status_code == 401
    first.close()

    second = EmulatorServer(data, users={"alice": "new"})
    try:
        with second.running_in_thread():
            assert _get(second, "/data/projects", ("alice", "old")).status_code == 401
            assert (
                _get(second, "/data/projects", (long["alias"], long["secret"])).status_code == 200
            )
    finally:
        second.close()
    # A user no longer on the server has no tokens either.
    third = EmulatorServer(data, users={"bob": "b"})
    try:
        with third.running_in_thread():
            assert _get(third, "/data/projects", (long["alias"], long["secret"])).status_code == 401
    finally:
        third.close()


def test_a_server_without_the_token_service(
    xnat_server_factory: Callable[..., EmulatorServer],
) -> None:
    server = xnat_server_factory(alias_tokens=False)
    assert _get(server, ISSUE, ("alice", "secret")).status_code == 404
    assert not (server.data_dir / "tokens.sqlite3").exists()


def test_the_command_line_options(tmp_path: Path) -> None:
    command = [sys.executable, "-m", "sinagot", "emulator", "--data", str(tmp_path / "d")]
    bad = subprocess.run(
        [*command, "--alias-token-timeout", "0"], capture_output=True, text=True, timeout=60
    )
    assert bad.returncode != 0
    assert bad.stderr.strip().count("\n") == 0, bad.stderr
    assert "--alias-token-timeout 0.0: give a positive number of seconds" in bad.stderr
