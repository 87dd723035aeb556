"""Receivers of the daemon's notifications: a real SMTP server and a real webhook, on loopback.

Both run in a thread of the test process and keep what they received, so a daemon in a
subprocess notifies them over real sockets (Apprise's mailto:// and json:// plugins).
"""

from __future__ import annotations

import asyncio
import email
import email.policy
import json
import threading
import time
from dataclasses import dataclass
from email.message import EmailMessage
from typing import Any, Self

from aiohttp import web
from aiosmtpd.smtp import SMTP

from daemon_support import wait_for

HOST = "127.0.0.1"


@dataclass(frozen=True)
class Mail:
    sender: str
    recipients: tuple[str, ...]
    message: EmailMessage

    @property
    def subject(self) -> str:
        return str(self.message["Subject"])

    @property
    def body(self) -> str:
        part = self.message.get_body(("plain", "html"))
        assert part is not None, self.message.as_string()
        return str(part.get_content())


class _MailHandler:
    def __init__(self, inbox: list[Mail], lock: threading.Lock) -> None:
        self._inbox = inbox
        self._lock = lock

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        message = email.message_from_bytes(envelope.original_content, policy=email.policy.default)
        assert isinstance(message, EmailMessage)
        with self._lock:
            self._inbox.append(Mail(envelope.mail_from, tuple(envelope.rcpt_tos), message))
        return "250 Message accepted for delivery"


class _LoopThread:
    """An event loop in a thread of its own, for a server the test process runs."""

    def __init__(self) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)

    def _call(self, coroutine: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(10)

    def _start_loop(self) -> None:
        self._thread.start()

    def _stop_loop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()


class MailServer(_LoopThread):
    """An SMTP server (aiosmtpd) on 127.0.0.1, without TLS or authentication."""

    def __init__(self) -> None:
        super().__init__()
        self.inbox: list[Mail] = []
        self._lock = threading.Lock()
        self._server: asyncio.Server | None = None
        self.port = 0

    async def _start(self) -> None:
        handler = _MailHandler(self.inbox, self._lock)
        self._server = await self._loop.create_server(lambda: SMTP(handler), HOST, 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _stop(self) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()

    def __enter__(self) -> Self:
        self._start_loop()
        self._call(self._start())
        return self

    def __exit__(self, *exc: object) -> None:
        self._call(self._stop())
        self._stop_loop()

    def url(self, to: str = "ops@lab.example.org") -> str:
        # Apprise: mailto:// on a plain (insecure) SMTP at this host and port.
        return (
            f"mailto://{HOST}:{self.port}?smtp={HOST}&mode=insecure"
            f"&from=sinagot@lab.example.org&to={to}"
        )

    def mails(self) -> list[Mail]:
        with self._lock:
            return list(self.inbox)

    def wait(self, count: int, timeout: float = 30.0) -> list[Mail]:
        return wait_for(
            lambda: mails if len(mails := self.mails()) >= count else None,
            timeout,
            f"{count} mail(s)",
        )


class WebhookReceiver(_LoopThread):
    """An aiohttp server on 127.0.0.1 keeping each JSON body POSTed to it.

    ``hang``: answer nothing for that many seconds (a receiver that never answers).
    """

    def __init__(self, hang: float = 0.0) -> None:
        super().__init__()
        self.posts: list[dict[str, Any]] = []
        self._hang = hang
        self._lock = threading.Lock()
        self._runner: web.AppRunner | None = None
        self.port = 0
        self.requests = 0

    async def _receive(self, request: web.Request) -> web.Response:
        with self._lock:
            self.requests += 1
        if self._hang:
            await asyncio.sleep(self._hang)
        body = await request.json()
        with self._lock:
            self.posts.append(body)
        return web.json_response({"ok": True})

    async def _start(self) -> None:
        app = web.Application()
        app.router.add_post("/hook", self._receive)
        self._runner = web.AppRunner(app, shutdown_timeout=0.5)
        await self._runner.setup()
        site = web.TCPSite(self._runner, HOST, 0)
        await site.start()
        self.port = self._runner.addresses[0][1]

    def __enter__(self) -> Self:
        self._start_loop()
        self._call(self._start())
        return self

    def __exit__(self, *exc: object) -> None:
        if self._runner is not None:
            self._call(self._runner.cleanup())
        self._stop_loop()

    @property
    def url(self) -> str:
        return f"json://{HOST}:{self.port}/hook"

    def received(self) -> list[dict[str, Any]]:
        with self._lock:
            return list(self.posts)

    def wait(self, count: int, timeout: float = 30.0) -> list[dict[str, Any]]:
        return wait_for(
            lambda: posts if len(posts := self.received()) >= count else None,
            timeout,
            f"{count} webhook post(s)",
        )

    def wait_for_title(self, part: str, timeout: float = 30.0) -> dict[str, Any]:
        return wait_for(
            lambda: next((p for p in self.received() if part in p["title"]), None),
            timeout,
            f"a post titled ...{part}...",
        )


def notify_table(urls: list[str], **settings: float) -> str:
    lines = ["[notify]", "urls = " + json.dumps(urls)]
    lines += [f"{key} = {value!r}" for key, value in settings.items()]
    return "\n".join(lines) + "\n"


def settle(seconds: float) -> None:
    """Let a daemon run on for ``seconds`` (to show that nothing more arrives)."""
    time.sleep(seconds)
