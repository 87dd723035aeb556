"""The private asynchronous HTTP client of :class:`XnatStore`.

One pooled ``aiohttp`` session per client (bounded connections), one login
(a JSESSION obtained with basic auth, then only the cookie is sent), a
transparent re-login when the server answers 401 to an expired session, and
retries with tenacity (exponential backoff with jitter, bounded attempts,
``Retry-After`` honoured) on connection errors, timeouts, 429 and 5xx. Other
4xx answers are never retried: they become one-line :mod:`sinagot.errors`.

Given a :class:`~._server_pace.ServerPace` (the daemon shares one per server), every
request waits for the pace's slot, tells the pace how the server answered, and is
retried only as often as the pace allows: a struggling server gets fewer requests.

At login the client exchanges what it was given (a password, or an alias token)
for an alias token of its own (XNAT's advice for scripted clients) and forgets the
password: later logins, after a session expired or the server restarted, use the
token, which it replaces at half its lifetime (see :mod:`._xnat_tokens`). A server
without the token service keeps getting the password, with one log line saying so.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import functools
import hashlib
import json
import logging
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Any, TypeVar
from urllib.parse import unquote, urlsplit

import aiohttp
import tenacity
from yarl import URL

from .._counters import COUNTERS
from ..errors import (
    AccessDeniedError,
    AuthenticationError,
    RemoteNotFoundError,
    RequestRefusedError,
    ServerError,
    SinagotError,
)
from ._server_pace import ServerPace
from ._xnat_credentials import PASSWORD_ENV, Credentials
from ._xnat_tokens import ISSUE_PATH, IssuedToken, is_alias, parse_issued_token
from ._xnat_upload import UploadBody

__all__ = ["CHUNK_SIZE", "RetryPolicy", "XnatClient", "result_rows"]

logger = logging.getLogger(__name__)
T = TypeVar("T")

CHUNK_SIZE = 1 << 20
_JSESSION = "/data/JSESSION"
# What a server without the token service (or one refusing it to this user) answers.
_NO_TOKEN_SERVICE = frozenset({403, 404, 405, 501})
# Servers already said to have no token service: one log line each per process.
_without_tokens: set[str] = set()


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How hard to try one request before giving up."""

    attempts: int = 5
    initial_delay: float = 0.5
    max_delay: float = 30.0
    max_retry_after: float = 120.0

    def backoff(self, attempt: int) -> float:
        """Delay before try ``attempt + 1``: exponential, capped, with full jitter on top."""
        base = min(self.max_delay, self.initial_delay * 2.0 ** max(0, attempt - 1))
        return min(self.max_delay, base + random.uniform(0, self.initial_delay))


class _TransientStatus(Exception):
    """A 429 or 5xx answer, worth another try."""

    def __init__(self, status: int, retry_after: float | None) -> None:
        super().__init__(f"HTTP {status}")
        self.status = status
        self.retry_after = retry_after


_TRANSIENT = (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError, TimeoutError)


def _parse_retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _delay(policy: RetryPolicy, error: BaseException | None, attempt: int) -> float:
    """Seconds to wait after failed try ``attempt``: the server's Retry-After, else backoff."""
    if isinstance(error, _TransientStatus) and error.retry_after is not None:
        return min(error.retry_after, policy.max_retry_after)
    return policy.backoff(attempt)


class _Stop(tenacity.stop.stop_base):
    """Tenacity's stop after ``done`` first tries, at the tries allowed when each one ends
    (the server's pace may take some away meanwhile)."""

    def __init__(self, allowed: Callable[[], int], done: int) -> None:
        self._allowed = allowed
        self._done = done

    def __call__(self, retry_state: tenacity.RetryCallState) -> bool:
        return retry_state.attempt_number + self._done >= self._allowed()


# The last path segments that name a collection: a request's kind for its latency.
_COLLECTIONS = frozenset(
    {"projects", "subjects", "experiments", "scans", "resources", "files", "JSESSION", "auth"}
)


def _kind(method: str, path: str) -> str:
    """What kind of request this is, for the pace's latency medians: a project listing
    and a file's metadata are not expected to take as long."""
    last = unquote(urlsplit(path).path.rstrip("/").rsplit("/", 1)[-1])
    return f"{method} {last if last in _COLLECTIONS else 'item'}"


class _Wait(tenacity.wait.wait_base):
    """Tenacity's wait for tries after the ``done`` first ones (see :meth:`XnatClient._retried`)."""

    def __init__(self, policy: RetryPolicy, done: int) -> None:
        self._policy = policy
        self._done = done

    def __call__(self, retry_state: tenacity.RetryCallState) -> float:
        outcome = retry_state.outcome
        error = outcome.exception() if outcome is not None else None
        return _delay(self._policy, error, retry_state.attempt_number + self._done)


def result_rows(document: Any, what: str) -> list[dict[str, str]]:
    """The rows of an XNAT ``ResultSet`` listing, or ServerError if it has another shape."""
    try:
        rows = document["ResultSet"]["Result"]
    except (KeyError, TypeError):
        rows = None
    if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
        raise ServerError(f"the listing of {what} is not an XNAT ResultSet: check [store] server")
    return [{str(k): "" if v is None else str(v) for k, v in row.items()} for row in rows]


class XnatClient:
    """Requests to one XNAT server as one user; must be used from a single event loop."""

    def __init__(
        self,
        server: str,
        credentials: Credentials,
        *,
        project: str,
        max_connections: int = 8,
        retry: RetryPolicy | None = None,
        timeout: float = 60.0,
        pace: ServerPace | None = None,
    ) -> None:
        self.server = server.rstrip("/")
        # The server's pace, if requests follow one (see the module docstring).
        self.pace = pace
        self.project = project
        # What logins use: the credentials given until they are exchanged for our token.
        self._credentials = credentials
        # The account's name, for messages: an alias given as the user is no name.
        self._account = credentials.user
        self._own_token: IssuedToken | None = None
        self._max_connections = max_connections
        self._retry = retry or RetryPolicy()
        self._timeout = timeout
        self._session: aiohttp.ClientSession | None = None
        self._token: str | None = None
        self._login_lock: asyncio.Lock | None = None

    def __repr__(self) -> str:
        return f"XnatClient({self.server!r}, user={self._account!r})"

    @property
    def user(self) -> str:
        return self._account

    @property
    def uses_alias_token(self) -> bool:
        """Whether logins use an alias token of this client's own (not the password)."""
        return self._own_token is not None

    @property
    def retry(self) -> RetryPolicy:
        return self._retry

    def _attempts(self) -> int:
        """Tries of one request now: the policy's, less what the server's pace takes off."""
        attempts = self._retry.attempts
        return attempts if self.pace is None else self.pace.retry_attempts(attempts)

    # -- session and login ---------------------------------------------------------------

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=self._max_connections),
                # The session cookie is sent by hand: aiohttp's jar drops cookies of IP hosts.
                cookie_jar=aiohttp.DummyCookieJar(),
                timeout=aiohttp.ClientTimeout(
                    total=None, sock_connect=self._timeout, sock_read=self._timeout
                ),
                read_bufsize=CHUNK_SIZE,
            )
        return self._session

    def _url(self, path: str) -> URL:
        return URL(self.server + path, encoded=True)

    async def login(self) -> None:
        """Open a JSESSION unless one is open (one login per client, not per request), and
        replace our alias token when it is due."""
        if self._token is None:
            await self._relogin(None)
        elif self._own_token is not None and self._own_token.due(time.monotonic()):
            await self._renew()

    def _lock(self) -> asyncio.Lock:
        if self._login_lock is None:
            self._login_lock = asyncio.Lock()
        return self._login_lock

    async def _relogin(self, stale: str | None) -> None:
        async with self._lock():
            if self._token != stale:
                return  # another task already logged in again
            await self._open_session()
            logger.info("logged in to %s as %s", self.server, self.user)
            if self._own_token is None:
                await self._exchange()

    async def _open_session(self) -> None:
        try:
            self._token = await self._retried(self._login_once)
        except (*_TRANSIENT, _TransientStatus) as exc:
            # Not retryable any more: the caller's own retries must not multiply these.
            raise self._giving_up(exc, "GET", _JSESSION) from exc

    async def _exchange(self) -> None:
        """Trade the credentials given for an alias token of our own; forget the password."""
        issued = await self._issue()
        if issued is None:
            return
        given_alias = self._credentials.user if is_alias(self._credentials.user) else None
        self._adopt(issued)
        how = "the alias token it was given" if given_alias else "the password"
        logger.info(
            "%s: logging in with an alias token from now on (%s forgotten)", self.server, how
        )

    async def _renew(self) -> None:
        """Replace our alias token with a new one before it expires; the old one is
        invalidated (it is ours: nobody else uses it)."""
        async with self._lock():
            old = self._own_token
            if old is None or not old.due(time.monotonic()):
                return  # another task renewed it
            issued = await self._issue()
            if issued is None:
                # The service went away: keep the token until it expires.
                self._own_token = dataclasses.replace(old, renew_at=None)
                return
            self._adopt(issued)
            await self._invalidate(old)
            logger.info("%s: alias token renewed", self.server)

    def _adopt(self, issued: IssuedToken) -> None:
        self._own_token = issued
        self._credentials = Credentials(issued.alias, issued.secret)
        if issued.user:
            self._account = issued.user

    async def _issue(self) -> IssuedToken | None:
        """A new alias token for our user from the token service, or None if it has none.

        Asked with the session: when that expired meanwhile, log in again once first.
        """
        for fresh in (False, True):
            try:
                status, body = await self._retried(self._issue_once)
            except (*_TRANSIENT, _TransientStatus) as exc:
                raise self._giving_up(exc, "GET", ISSUE_PATH) from exc
            if status == 401 and not fresh:
                await self._open_session()
                continue
            if status in _NO_TOKEN_SERVICE or status == 401:
                self._no_token_service(f"HTTP {status}")
                return None
            try:
                issued = parse_issued_token(json.loads(body))
            except ValueError:
                issued = None
            if issued is None:
                self._no_token_service("its answer holds no alias token")
            return issued
        raise AssertionError("unreachable: the second try always returns")

    async def _issue_once(self) -> tuple[int, bytes]:
        headers = {"Cookie": f"JSESSIONID={self._token}"}
        response = await self._counted(
            "GET", ISSUE_PATH, lambda: self._http().get(self._url(ISSUE_PATH), headers=headers)
        )
        async with response:
            body = await response.read()
        if response.status == 429 or (response.status >= 500 and response.status != 501):
            raise _TransientStatus(
                response.status, _parse_retry_after(response.headers.get("Retry-After"))
            )
        return response.status, body

    def _no_token_service(self, why: str) -> None:
        if self.server not in _without_tokens:
            _without_tokens.add(self.server)
            logger.warning(
                "%s issues no alias token (%s): logging in with the password each time",
                self.server,
                why,
            )

    async def _invalidate(self, token: IssuedToken) -> None:
        """Invalidate a token of ours (best effort: it expires anyway)."""
        path = f"/data/services/tokens/invalidate/{token.alias}/{token.secret}"
        try:
            response = await self._counted(
                "GET",
                path,
                lambda: self._http().get(
                    self._url(path),
                    headers={"Cookie": f"JSESSIONID={self._token}"},
                    timeout=aiohttp.ClientTimeout(total=5),
                ),
            )
            response.release()
        except (*_TRANSIENT, aiohttp.ClientError):
            logger.debug("could not invalidate an old alias token on %s; it expires", self.server)

    async def _login_once(self) -> str:
        pair = f"{self._credentials.user}:{self._credentials.password}".encode()
        auth = {"Authorization": f"Basic {base64.b64encode(pair).decode()}"}
        response = await self._counted(
            "GET", _JSESSION, lambda: self._http().get(self._url(_JSESSION), headers=auth)
        )
        async with response:
            body = await response.read()
            self._check_status(response, "GET", _JSESSION, "the login service")
            token = body.decode(errors="replace").strip()
            if not token or len(token) > 256 or any(c in token for c in ";, \r\n<"):
                cookie = response.cookies.get("JSESSIONID")
                token = cookie.value if cookie is not None else ""
            if not token:
                raise ServerError(
                    f"{self.server} answered the login without a session id: is it an XNAT server?"
                )
            return token

    async def aclose(self) -> None:
        """End the JSESSION (best effort) and close the connection pool; the client logs in
        again (with its alias token) if used afterwards."""
        session, self._session = self._session, None
        if session is None:
            return
        # The alias token stays: a client used again after closing logs in with it.
        token, self._token = self._token, None
        try:
            if token is not None:
                async with session.delete(
                    self._url(_JSESSION),
                    headers={"Cookie": f"JSESSIONID={token}"},
                    timeout=aiohttp.ClientTimeout(total=5),
                ):
                    pass
        except (*_TRANSIENT, aiohttp.ClientError):
            logger.debug("could not end the session on %s; it will expire", self.server)
        finally:
            await session.close()

    # -- errors and retries --------------------------------------------------------------

    async def _retried(self, fn: Callable[..., Awaitable[T]], *args: Any, **kwargs: Any) -> T:
        """``fn(*args, **kwargs)`` retried on transient errors, up to the policy's attempts.

        The first try runs bare and tenacity takes over after a failure: setting
        tenacity up costs more than a small request, and nearly all first tries succeed.
        """
        try:
            return await fn(*args, **kwargs)
        except (*_TRANSIENT, _TransientStatus) as exc:
            if self._attempts() <= 1:
                raise
            delay = _delay(self._retry, exc, 1)
            self._log_retry(exc, 1, delay)
            await asyncio.sleep(delay)
        retrying = tenacity.AsyncRetrying(
            stop=_Stop(self._attempts, done=1),
            wait=_Wait(self._retry, done=1),
            retry=tenacity.retry_if_exception_type((*_TRANSIENT, _TransientStatus)),
            before_sleep=self._log_tenacity_retry,
            reraise=True,
        )
        return await retrying(fn, *args, **kwargs)

    def _log_tenacity_retry(self, state: tenacity.RetryCallState) -> None:
        outcome = state.outcome
        delay = state.next_action.sleep if state.next_action is not None else 0.0
        error = outcome.exception() if outcome is not None else None
        self._log_retry(error, state.attempt_number + 1, delay)

    def _log_retry(self, error: BaseException | None, failed: int, delay: float) -> None:
        logger.warning(
            "%s: %s; try %d of %d in %.1f s",
            self.server,
            _describe(error),
            failed + 1,
            self._attempts(),
            delay,
        )

    def _check_status(
        self, response: aiohttp.ClientResponse, method: str, path: str, what: str
    ) -> None:
        status = response.status
        if status < 300:
            return
        if status == 429 or status >= 500:
            raise _TransientStatus(status, _parse_retry_after(response.headers.get("Retry-After")))
        if status == 401 and self._own_token is not None:
            raise AuthenticationError(
                f"{self.server} no longer accepts the alias token sinagot obtained for user"
                f" {self.user!r} (HTTP 401: expired or invalidated on the server): start again"
                " to log in with the password"
            )
        if status == 401:
            raise AuthenticationError(
                f"{self.server} refused user {self.user!r} (HTTP 401): check user/password"
                f" ([store] user and password, ${PASSWORD_ENV} or ~/.netrc)"
            )
        if status == 403:
            raise AccessDeniedError(
                f"user {self.user!r} has no access to project {self.project} on {self.server}"
                f" (HTTP 403, {what}): ask the project owner for access or fix [store] project"
            )
        if status == 404:
            raise RemoteNotFoundError(
                f"no such session/resource {what} in project {self.project} on {self.server}"
                " (HTTP 404): check the name, or that it still exists"
            )
        raise RequestRefusedError(
            f"{self.server} refused {method} {path} (HTTP {status} {response.reason}):"
            " check the request's names and your permissions"
        )

    def _giving_up(self, error: BaseException, method: str, path: str) -> ServerError:
        tries = self._attempts()
        slowed = (
            f" (of {self._retry.attempts}: the server's pace is slowed)"
            if tries < self._retry.attempts
            else ""
        )
        return ServerError(
            f"{self.server} failed {method} {path} {tries} times{slowed}"
            f" (last: {_describe(error)}): check that the server is up, then try again"
        )

    # -- requests ------------------------------------------------------------------------

    async def _counted(
        self,
        method: str,
        path: str,
        send: Callable[[], Awaitable[aiohttp.ClientResponse]],
        *,
        judged: bool = True,
    ) -> aiohttp.ClientResponse:
        """The response to the request ``send()`` makes, counted for the metrics (no answer
        counts as an error) and, with a pace, sent in its slot and told to it. ``judged``:
        its latency says something of the server's health (not a download's, whose first
        byte may wait for a zip to be built)."""
        if self.pace is None:
            return await self._count(send())
        pace = self.pace
        async with pace.slot():
            start = time.monotonic()
            try:
                response = await self._count(send())
            except _TRANSIENT as exc:
                # A body of ours that failed (a local file) is no sign of the server's.
                if not isinstance(exc.__cause__, SinagotError):
                    pace.unanswered(exc)
                raise
        latency = time.monotonic() - start if judged else None
        retry_after = _parse_retry_after(response.headers.get("Retry-After"))
        pace.answered(response.status, latency, _kind(method, path), retry_after)
        return response

    async def _count(self, request: Awaitable[aiohttp.ClientResponse]) -> aiohttp.ClientResponse:
        try:
            response = await request
        except _TRANSIENT:
            COUNTERS.request(self.server, failed=True)
            raise
        COUNTERS.request(self.server, failed=response.status >= 400)
        return response

    async def _send(
        self,
        method: str,
        path: str,
        what: str,
        *,
        params: Mapping[str, str] | None = None,
        body: bytes | UploadBody | None = None,
        headers: Mapping[str, str] | None = None,
        judged: bool = True,
    ) -> aiohttp.ClientResponse:
        """One try: send (re-logging in once on 401), check the status; the caller releases.
        ``judged``: see :meth:`_counted`."""
        await self.login()
        for relogged in (False, True):
            token = self._token
            all_headers = {"Cookie": f"JSESSIONID={token}", **(headers or {})}
            sent = (
                body.size
                if isinstance(body, UploadBody)
                else len(body)
                if isinstance(body, bytes)
                else 0
            )
            try:
                response = await self._counted(
                    method,
                    path,
                    functools.partial(
                        self._http().request,
                        method,
                        self._url(path),
                        params=params,
                        data=body.payload() if isinstance(body, UploadBody) else body,
                        headers=all_headers,
                    ),
                    # An upload's time is its body's, not the server's answer.
                    judged=judged and not sent,
                )
            except aiohttp.ClientConnectionError as exc:
                # aiohttp wraps whatever stopped the body: ours (a local file) is no network
                # fault, and the same one at each try.
                if isinstance(exc.__cause__, SinagotError):
                    raise exc.__cause__ from None
                raise
            if response.status == 401 and not relogged:
                response.release()
                logger.info("session on %s expired; logging in again", self.server)
                await self._relogin(token)
                continue
            try:
                self._check_status(response, method, path, what)
            except BaseException:
                response.release()
                raise
            if sent:
                COUNTERS.uploaded(self.server, sent)
            return response
        raise AssertionError("unreachable: the second try always returns or raises")

    async def _read(
        self,
        method: str,
        path: str,
        what: str,
        params: Mapping[str, str] | None,
        body: bytes | UploadBody | None,
    ) -> bytes:
        async with await self._send(method, path, what, params=params, body=body) as response:
            data = await response.read()
        COUNTERS.downloaded(self.server, len(data))
        return data

    async def request(
        self,
        method: str,
        path: str,
        what: str,
        *,
        params: Mapping[str, str] | None = None,
        body: bytes | UploadBody | None = None,
    ) -> bytes:
        """The whole (small) answer to a request, retried as a unit (a body from its start)."""
        try:
            return await self._retried(self._read, method, path, what, params, body)
        except (*_TRANSIENT, _TransientStatus) as exc:
            raise self._giving_up(exc, method, path) from exc

    async def _get_json_body(self, path: str, what: str, params: Mapping[str, str] | None) -> bytes:
        return await self.request("GET", path, what, params={"format": "json", **(params or {})})

    def _decode(self, data: bytes, path: str) -> Any:
        try:
            return json.loads(data)
        except ValueError:
            raise ServerError(
                f"{self.server} answered GET {path} with something that is not JSON:"
                " check [store] server"
            ) from None

    async def get_json(self, path: str, what: str, params: Mapping[str, str] | None = None) -> Any:
        return self._decode(await self._get_json_body(path, what, params), path)

    async def list_rows(
        self, path: str, what: str, params: Mapping[str, str] | None = None
    ) -> list[dict[str, str]]:
        return result_rows(await self.get_json(path, what, params), what)

    async def list_rows_if_changed(
        self, path: str, what: str, params: Mapping[str, str] | None, digest: bytes | None
    ) -> tuple[bytes, list[dict[str, str]] | None]:
        """The digest of a listing's body and its rows; None for the rows when the body's
        digest is still ``digest``. A long listing polled again costs its request then,
        not the parsing of every row (most of the CPU)."""
        data = await self._get_json_body(path, what, params)
        fresh = hashlib.blake2b(data, digest_size=16).digest()
        if fresh == digest:
            return fresh, None
        return fresh, result_rows(self._decode(data, path), what)

    async def stream(
        self, path: str, offset: int, what: str, end: int | None = None
    ) -> AsyncIterator[bytes]:
        """The bytes of a file from ``offset`` on (to ``end``, exclusive, if given),
        resuming with Range after a broken body."""
        position = offset
        failures = 0
        last = "" if end is None else str(end - 1)
        while True:
            headers = {"Range": f"bytes={position}-{last}"} if position or last else {}
            try:
                response: aiohttp.ClientResponse = await self._retried(
                    self._send, "GET", path, what, headers=headers, judged=False
                )
            except (*_TRANSIENT, _TransientStatus) as exc:
                raise self._giving_up(exc, "GET", path) from exc
            try:
                async with response:
                    # A server that ignores Range sends everything: skip what we have.
                    skip = position if response.status != 206 else 0
                    # As received: the cache gathers chunks itself, a second copy is waste.
                    async for chunk in response.content.iter_any():
                        if skip:
                            dropped = min(skip, len(chunk))
                            skip -= dropped
                            chunk = chunk[dropped:]
                            if not chunk:
                                continue
                        if end is not None:
                            # ...and past the end asked for: stop there.
                            chunk = chunk[: end - position]
                        position += len(chunk)
                        COUNTERS.downloaded(self.server, len(chunk))
                        yield chunk
                        if end is not None and position >= end:
                            return
                return
            except _TRANSIENT as exc:
                failures += 1
                if failures >= self._attempts():
                    raise self._giving_up(exc, "GET", path) from exc
                logger.warning(
                    "%s: download of %s broke at byte %d (%s); resuming",
                    self.server,
                    path,
                    position,
                    _describe(exc),
                )
                await asyncio.sleep(self._retry.backoff(failures))


def _describe(error: BaseException | None) -> str:
    if isinstance(error, _TransientStatus):
        return str(error)
    if error is None:
        return "no error"
    # aiohttp messages name the URL at most (never credentials); keep them short.
    text = str(error).splitlines()[0] if str(error) else ""
    return f"{type(error).__name__}: {text}" if text else type(error).__name__
