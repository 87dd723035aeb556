"""Notifications end to end: the daemon (a subprocess) mails a real SMTP server and posts to
a real webhook on loopback, through Apprise; grouped, rate-limited, never in the way."""

from __future__ import annotations

import json
import re
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from daemon_support import DaemonProcess, add_session, daemon_table, wait_for, write_config
from notify_support import MailServer, WebhookReceiver, notify_table, settle
from sinagot.config import load_settings
from sinagot.daemon.internals import banners
from sinagot.errors import ConfigError

HOST = socket.gethostname()
PREFIX = f"[sinagot@{HOST}]"


@pytest.fixture
def mail() -> Iterator[MailServer]:
    with MailServer() as server:
        yield server


@pytest.fixture
def webhook() -> Iterator[WebhookReceiver]:
    with WebhookReceiver() as receiver:
        yield receiver


@pytest.fixture
def started() -> Iterator[list[DaemonProcess]]:
    daemons: list[DaemonProcess] = []
    yield daemons
    for daemon in daemons:
        daemon.ensure_stopped()


def _daemon(
    tmp: Path, started: list[DaemonProcess], notify: str, **daemon: object
) -> tuple[DaemonProcess, Path]:
    config = write_config(tmp, "lab", {**daemon_table(tmp), **daemon})
    config.write_text(config.read_text() + notify)
    process = DaemonProcess(tmp, [config])
    started.append(process)
    return process, config


def test_failed_jobs_are_mailed_and_posted_as_one_message_with_ids_and_first_error_lines(
    tmp_path: Path,
    mail: MailServer,
    webhook: WebhookReceiver,
    started: list[DaemonProcess],
) -> None:
    notify = notify_table([mail.url(), webhook.url], group_window=5.0)
    daemon, config = _daemon(tmp_path, started, notify)
    for label in ("REC-1", "REC-2", "REC-3"):
        add_session(config, label, fail=f"{label}: <img src=x> broke\nsecond line of {label}")
    add_session(config, "REC-4")
    daemon.start()

    up = webhook.wait_for_title("started")
    assert up["title"] == f"{PREFIX} started"
    assert f"pid {daemon.pid}" in up["message"] and "1 dataset(s): lab" in up["message"]
    assert up["type"] == "info"

    failed = daemon.wait_jobs("failed", 3)
    ids = sorted(job["id"] for job in failed)
    post = webhook.wait_for_title("jobs failed")
    assert post["title"] == f"{PREFIX} 3 jobs failed"
    assert post["type"] == "failure"
    body = post["message"]
    for job in failed:
        # The first line of each error, as the script wrote it (plain text, no markup).
        assert f"job {job['id']}, lab/{job['session']}: {job['session']}: <img src=x> broke" in body
        assert f"second line of {job['session']}" not in body
    # Listed in the order they failed; the hint names the first.
    first = int(body.split("\n")[2].split(",")[0].removeprefix("job "))
    assert first in ids and body.endswith(f"sinagot retry {first}.")
    daemon.wait_jobs("done", 1)

    assert daemon.stop() == 0
    down = webhook.wait_for_title("stopped")
    assert down["message"].endswith("stop requested.")
    # One message per event, each once: started, the failures (grouped), stopped.
    assert [p["title"] for p in webhook.received()] == [
        f"{PREFIX} started",
        f"{PREFIX} 3 jobs failed",
        f"{PREFIX} stopped",
    ]

    mails = mail.wait(3)
    assert [m.subject for m in mails] == [p["title"] for p in webhook.received()]
    failure = mails[1]
    assert failure.recipients == ("ops@lab.example.org",)
    assert failure.message.get_content_type() == "text/plain"
    assert failure.body.replace("\r\n", "\n").strip() == body.strip()
    assert "Traceback" not in daemon.log_text()


def test_an_unhealthy_dataset_is_announced_once_then_its_recovery(
    tmp_path: Path, webhook: WebhookReceiver, started: list[DaemonProcess]
) -> None:
    notify = notify_table([webhook.url], unhealthy_after=1.0)
    daemon, config = _daemon(tmp_path, started, notify)
    switch = config.parent / "data" / ".down"
    switch.write_text("")
    daemon.start()

    post = webhook.wait_for_title("unhealthy")
    assert post["title"] == f"{PREFIX} lab unhealthy"
    assert post["type"] == "warning"
    assert "has not answered for" in post["message"]
    assert "Last error: server of lab is down" in post["message"]
    # Still down: announced once, however many listings fail.
    wait_for(lambda: daemon.call("status")["datasets"][0]["failures"] >= 4, 30, "4 failed listings")
    switch.unlink()
    back = webhook.wait_for_title("recovered")
    assert back["title"] == f"{PREFIX} lab recovered"
    assert back["type"] == "success"
    assert re.search(r"answers again, after \d+ s unhealthy", back["message"])
    assert daemon.stop() == 0
    titles = [p["title"] for p in webhook.wait(4)]
    assert titles.count(f"{PREFIX} lab unhealthy") == 1
    assert titles.count(f"{PREFIX} lab recovered") == 1


def test_past_max_per_hour_messages_wait_and_go_as_one_at_stop(
    tmp_path: Path, webhook: WebhookReceiver, started: list[DaemonProcess]
) -> None:
    notify = notify_table([webhook.url], group_window=1.0, max_per_hour=2)
    daemon, config = _daemon(tmp_path, started, notify)
    daemon.start()
    webhook.wait_for_title("started")
    add_session(config, "REC-1", fail="first failure")
    webhook.wait_for_title("job")  # the second message of the hour
    add_session(config, "REC-2", fail="second failure")
    daemon.wait_jobs("failed", 2)
    wait_for(
        lambda: "held back by the rate limit" in daemon.log_text(), 30, "the rate limit to hold"
    )
    settle(1.5)  # past the group window: the second failure is held, not sent
    assert len(webhook.received()) == 2

    assert daemon.stop() == 0
    last = webhook.wait(3)[2]
    assert last["title"] == f"{PREFIX} 2 notification(s)"
    assert "held back by the rate limit" in last["message"]
    assert "REC-2: second failure" in last["message"]
    assert f"{PREFIX} stopped" in last["message"]
    assert last["type"] == "failure"


def test_a_notification_that_fails_is_logged_once_and_the_daemon_goes_on(
    tmp_path: Path, started: list[DaemonProcess]
) -> None:
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        closed = probe.getsockname()[1]
    notify = notify_table([f"json://127.0.0.1:{closed}/hook"], group_window=0.2)
    daemon, config = _daemon(tmp_path, started, notify)
    daemon.start()
    for n in range(3):
        add_session(config, f"REC-{n}", fail="broken")
        daemon.wait_jobs("failed", n + 1)
        settle(0.5)  # each failure in a group of its own: a send each
    add_session(config, "REC-9")
    daemon.wait_jobs("done", 1)
    assert daemon.stop() == 0
    log = daemon.log_text()
    warnings = [line for line in log.splitlines() if "could not be delivered" in line]
    assert len(warnings) == 1, warnings
    assert "Connection error" in warnings[0]
    assert "further failures are not logged" in warnings[0]


def test_a_webhook_that_never_answers_holds_neither_jobs_nor_status_nor_stop(
    tmp_path: Path, started: list[DaemonProcess]
) -> None:
    with WebhookReceiver(hang=120.0) as silent:
        notify = notify_table([silent.url], group_window=0.2)
        daemon, config = _daemon(tmp_path, started, notify)
        daemon.start()
        wait_for(lambda: silent.requests >= 1, 30, "the start message to be sent")
        add_session(config, "REC-1", fail="broken")
        add_session(config, "REC-2")
        daemon.wait_jobs("failed", 1)
        daemon.wait_jobs("done", 1)
        assert daemon.call("status")["status"] == "running"
        begin = time.monotonic()
        assert daemon.stop() == 0
        stopped_in = time.monotonic() - begin
        assert silent.received() == []
    # The stop waited for its last message a bounded time (FINAL_TIMEOUT), never 120 s.
    assert stopped_in < 60, stopped_in
    assert "could not be delivered" in daemon.log_text()


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ('urls = "json://127.0.0.1/x"', "notify.urls: must be a list of notification URLs"),
        ('urls = ["nosuch://host/x"]', r"notify.urls\[0\]: Apprise cannot notify it"),
        (
            'urls = ["mailto://user:hunter2@127.0.0.1?from=nobody"]',
            r"notify.urls\[0\]: Apprise cannot notify it \(Invalid ~From~ email",
        ),
        ('urls = ["json://a/x", "json://a/x"]', "lists a URL twice"),
        (
            "unhealthy_afer = 60",
            "notify.unhealthy_afer: unknown key; did you mean 'unhealthy_after'",
        ),
        ("max_per_hour = 0", "notify.max_per_hour: got 0; set it to an integer >= 1"),
        ("group_window = -1", "notify.group_window: got -1; set it to a positive number"),
    ],
)
def test_a_wrong_notify_table_is_one_clear_error_without_the_secret(
    tmp_path: Path, table: str, message: str
) -> None:
    config = write_config(tmp_path, "lab")
    config.write_text(config.read_text() + "[notify]\n" + table + "\n")
    with pytest.raises(ConfigError, match=message) as error:
        load_settings(config)
    assert "hunter2" not in str(error.value)


def test_notify_settings_keep_their_urls_out_of_reprs(tmp_path: Path) -> None:
    config = write_config(tmp_path, "lab")
    config.write_text(
        config.read_text()
        + notify_table(["json://127.0.0.1/hook?token=hunter2"], unhealthy_after=60)
    )
    settings = load_settings(config)
    assert settings.notify.urls == ("json://127.0.0.1/hook?token=hunter2",)
    assert settings.notify.unhealthy_after == 60.0
    assert "hunter2" not in repr(settings)


def test_a_pipeline_change_that_stales_sessions_is_announced_once(
    tmp_path: Path, webhook: WebhookReceiver, started: list[DaemonProcess]
) -> None:
    notify = notify_table([webhook.url])
    daemon, config = _daemon(tmp_path, started, notify, pipeline_check_interval=0.1)
    steps = config.parent / "pipeline.json"
    steps.write_text(json.dumps({"RS/EEG/preprocess": "1"}))
    for label in ("REC-1", "REC-2"):
        add_session(config, label)
    daemon.start()
    daemon.wait_jobs("done", 2)
    steps.write_text(json.dumps({"RS/EEG/preprocess": "2"}))
    post = webhook.wait_for_title("stale")
    assert post["title"] == f"{PREFIX} lab: 2 stale"
    assert post["type"] == "info"
    assert "  RS/EEG/preprocess: 2 session(s)" in post["message"]
    wait_for(
        lambda: all(job["state"] == "done" for job in daemon.jobs()) and len(daemon.jobs()) == 2,
        30,
        "both processed again",
    )
    # Banners of the status page, from the same status document.
    assert banners(daemon.call("status")) == []
    assert daemon.stop() == 0
    titles = [p["title"] for p in webhook.wait(3)]
    assert titles == [f"{PREFIX} started", f"{PREFIX} lab: 2 stale", f"{PREFIX} stopped"]
