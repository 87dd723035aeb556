"""Property-based tests of the control socket's reading of requests, against a real daemon.

Whatever method, path, query and body a client sends, the daemon answers: a known
request with its document, anything else with a 4xx and a JSON ``{"error": ...}`` of
one line; never a 500 (an exception our handlers did not expect), and it keeps
answering ``status``. Raw bytes that are no HTTP at all get a 400 or a closed socket.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote, urlencode

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from daemon_support import DaemonProcess, daemon_table, raw_request, write_config

FUZZ = settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DaemonProcess]:
    tmp = tmp_path_factory.mktemp("socket-fuzz")
    process = DaemonProcess(tmp, [write_config(tmp, "lab", daemon_table(tmp))]).start()
    try:
        yield process
    finally:
        process.ensure_stopped()


_TEXT = st.text(max_size=12)
_SEGMENTS = st.one_of(
    st.sampled_from(("status", "jobs", "plan", "poll", "pause", "resume", "reload", "metrics")),
    st.builds(lambda job: f"jobs/{job}", _TEXT | st.integers(-5, 10**20).map(str)),
    st.builds(lambda job: f"jobs/{job}/retry", _TEXT | st.integers(-5, 10**20).map(str)),
    _TEXT,
)
_QUERY = st.dictionaries(
    st.sampled_from(("state", "dataset", "session", "limit")) | _TEXT,
    _TEXT | st.sampled_from(("done", "failed", "lab", "0", "1", "10001", "-1", "1e3")),
    max_size=3,
)


@st.composite
def requests(draw: st.DrawFn) -> tuple[str, str, bytes]:
    method = draw(st.sampled_from(("GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS")))
    segment = draw(_SEGMENTS)
    prefix = draw(st.sampled_from(("/v1/", "/v1/", "/v1/", "/", "/v2/")))
    target = quote(prefix + segment, safe="/")
    query = draw(_QUERY)
    if query:
        target += "?" + urlencode(query)
    body = draw(st.binary(max_size=64) | st.builds(lambda v: json.dumps(v).encode(), _TEXT))
    return method, target, body


def _http(method: str, target: str, body: bytes) -> bytes:
    head = (
        f"{method} {target} HTTP/1.1\r\nHost: sinagot\r\nConnection: close\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


@FUZZ
@given(request=requests())
def test_any_request_gets_its_answer_or_one_line_error(
    daemon: DaemonProcess, request: tuple[str, str, bytes]
) -> None:
    method, target, body = request
    status, answer = raw_request(daemon.socket, method, target, _http(method, target, body))
    assert status != 500, answer
    if status >= 400:
        assert isinstance(answer, dict), answer
        error: Any = answer["error"]
        assert isinstance(error, str) and error and "\n" not in error
    assert daemon.call("status")["status"]


@settings(max_examples=100, deadline=None)
@given(payload=st.binary(min_size=1, max_size=200))
def test_bytes_that_are_no_http_get_a_400_or_a_closed_socket(
    daemon: DaemonProcess, payload: bytes
) -> None:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(10)
        sock.connect(str(daemon.socket))
        sock.sendall(payload)
        sock.shutdown(socket.SHUT_WR)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    if answer:
        status = int(answer.split(b" ", 2)[1])
        assert status < 500, answer[:200]
    assert daemon.call("status")["status"]


@pytest.mark.parametrize("target", ["/v1/%0A", "/v1/jobs/%0D%0Ax", "/v1/plan?dataset=a%0Ab"])
def test_an_error_naming_a_path_with_a_newline_is_one_line(
    daemon: DaemonProcess, target: str
) -> None:
    # Found by the property test above: the error quoted the decoded path as it was.
    status, answer = raw_request(daemon.socket, "GET", target)
    assert status in (400, 404)
    assert "\n" not in answer["error"] and "\r" not in answer["error"]
