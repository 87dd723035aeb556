"""The status page in a real browser (Debian's chromium, driven by Playwright), served by
the real daemon following a project on the emulator; and its HTTP face without a browser."""

from __future__ import annotations

import base64
import http.client
import json
import re
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import pytest

from daemon_support import raw_request, wait_for
from daemon_xnat_support import PROJECT, XnatDaemon, add_session, write_project
from sinagot.testing import EmulatorServer
from sinagot.testing.pytest_plugin import XNAT_PASSWORD, XNAT_USER

if TYPE_CHECKING:
    from playwright.sync_api import BrowserContext, Page

# What the failing script raises: markup and script that must reach the page as text.
ATTACK = 'boom <img src=x onerror="window.__pwned=1"> <script>window.__pwned=2</script>'


@pytest.fixture
def daemon(tmp_path: Path, lab: EmulatorServer) -> Iterator[XnatDaemon]:
    """Two sessions done, a third failed by a script whose error is :data:`ATTACK`."""
    for label in ("REC-200101-A", "REC-200101-B"):
        add_session(lab, label)
    config, control = write_project(tmp_path, lab.url, {"metrics_address": "0"})
    process = XnatDaemon(tmp_path, config).start()
    try:
        process.wait_settled({"REC-200101-A", "REC-200101-B"})
        (control / "fail").write_text(ATTACK)
        add_session(lab, "REC-200101-C")
        process.wait_settled({"REC-200101-C"}, state="failed")
        (control / "fail").unlink()
        yield process
    finally:
        process.ensure_stopped()


def _control(daemon: XnatDaemon, method: str, target: str) -> Any:
    # A plain blocking socket: Playwright's sync API keeps an event loop in this thread.
    status, answer = raw_request(daemon.socket, method, target)
    assert status == 200, answer
    return answer


def _page_url(daemon: XnatDaemon) -> str:
    url: str = _control(daemon, "GET", "/v1/status")["metrics_url"]
    return url.removesuffix("metrics")


def _job_id(daemon: XnatDaemon, session: str) -> int:
    (job,) = [j for j in _control(daemon, "GET", "/v1/jobs")["jobs"] if j["session"] == session]
    return int(job["id"])


def _shot(page: Page, artifacts: Path, name: str) -> None:
    page.screenshot(path=str(artifacts / f"{name}.png"), full_page=True)


def _rows(page: Page, table: str) -> list[str]:
    return page.locator(f"#{table} tbody tr").all_inner_texts()


def _get(
    url: str, host: str | None = None, method: str = "GET"
) -> tuple[int, dict[str, str], bytes]:
    parts = urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=10)
    try:
        headers = {} if host is None else {"Host": host}
        connection.request(
            method, parts.path + (f"?{parts.query}" if parts.query else ""), headers=headers
        )
        response = connection.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        connection.close()


def _server_get(url: str) -> int:
    """GET ``url`` on the emulator as the project's user (the page's links are followed)."""
    token = base64.b64encode(f"{XNAT_USER}:{XNAT_PASSWORD}".encode()).decode()
    request = urllib.request.Request(url, headers={"Authorization": f"Basic {token}"})
    with urllib.request.urlopen(request, timeout=10) as response:
        status: int = response.status
        return status


def test_the_page_shows_datasets_jobs_and_a_job_escaped_refreshed_and_read_only(
    daemon: XnatDaemon, lab: EmulatorServer, browser: BrowserContext, artifacts: Path
) -> None:
    base = _page_url(daemon)
    origin = base.rstrip("/")
    page = browser.new_page()
    requested: list[str] = []
    page.on("request", lambda request: requested.append(request.url))
    page.goto(base)

    # Datasets: health, last and next poll, counts by state.
    page.wait_for_selector("#datasets tbody tr[data-dataset='lab']")
    row = page.locator("#datasets tbody tr[data-dataset='lab']")
    wait_for(lambda: "ok" in row.inner_text(), 10, "the dataset's health")
    cells = row.locator("td").all_inner_texts()
    headers = page.locator("#datasets thead th").all_inner_texts()
    shown = dict(zip(headers, cells, strict=True))
    assert shown["Health"].startswith("ok")
    assert shown["done"] == "2" and shown["failed"] == "1" and shown["Sessions"] == "3"
    # Polls every 0.2 s: "now", or a few seconds either way.
    assert re.fullmatch(r"now|\d+ s ago", shown["Last poll"]), shown
    assert re.fullmatch(r"now|in \d+ s", shown["Next poll"]), shown
    assert page.locator(".banner").count() == 0
    _shot(page, artifacts, "datasets")

    # Jobs, filtered by state, then by a part of the session label.
    page.click("#datasets tbody tr[data-dataset='lab'] a:text-is('1')")
    page.wait_for_selector("#jobs tbody tr")
    failed_id = _job_id(daemon, "REC-200101-C")
    assert [r.split("\t")[0] for r in _rows(page, "jobs")] == [str(failed_id)]
    assert page.locator("#filter-state").input_value() == "failed"
    page.select_option("#filter-state", "")
    wait_for(lambda: len(_rows(page, "jobs")) == 3, 10, "the three jobs")
    page.fill("#filter-session", "101-a")
    wait_for(lambda: len(_rows(page, "jobs")) == 1, 10, "the session search")
    assert "REC-200101-A" in _rows(page, "jobs")[0]
    assert page.locator("#filter-session").input_value() == "101-a"  # kept across refreshes
    page.fill("#filter-session", "")
    wait_for(lambda: len(_rows(page, "jobs")) == 3, 10, "every job again")
    _shot(page, artifacts, "jobs")

    # The failed job: the script's markup is text, and nothing of it ran.
    page.click(f"#jobs tbody tr[data-job='{failed_id}'] a >> nth=0")
    page.wait_for_selector("#job-error")
    assert ATTACK in page.locator("#job-error").inner_text()
    assert ATTACK in page.locator("#job-log").inner_text()
    assert page.locator("#view img, #view script").count() == 0
    assert page.evaluate("window.__pwned") is None
    history = page.locator("#job-history tbody tr").all_inner_texts()
    assert any("failed" in line for line in history)
    _shot(page, artifacts, "job-failed")

    # A done job: links to its derivatives and their provenance on the server, which work.
    done_id = _job_id(daemon, "REC-200101-A")
    page.goto(f"{base}#/jobs/{done_id}")
    session = f"{lab.url}/data/projects/{PROJECT}/experiments/REC-200101-A/resources"

    def shown_links() -> list[str]:
        return [a.get_attribute("href") or "" for a in page.locator("#job-links a").all()]

    # Only the hash changed: the view of the failed job stays until the new one is drawn.
    wait_for(lambda: any(session in link for link in shown_links()), 10, "the done job's links")
    links = shown_links()
    assert links == [
        f"{session}/RS_EEG_filter___at___sinagot/files",
        f"{session}/PROVENANCE/files/RS_EEG_filter___at___sinagot.json",
        f"{session}/RS_EEG_stats___at___sinagot/files",
        f"{session}/PROVENANCE/files/RS_EEG_stats___at___sinagot.json",
    ]
    assert all(_server_get(link) == 200 for link in links)
    assert page.locator("#job-links a").first.get_attribute("rel") == "noopener noreferrer"
    _shot(page, artifacts, "job-done")

    # It refreshes in place: a new session shows up without a reload.
    page.goto(base)
    page.wait_for_selector("#datasets tbody tr")
    page.evaluate("window.__sameDocument = true")
    add_session(lab, "REC-200101-D")
    wait_for(
        lambda: page.locator("#datasets tbody tr td").nth(4).inner_text() == "4",
        30,
        "the fourth session on the page",
    )
    assert page.evaluate("window.__sameDocument") is True

    # The paused banner, then gone on resume.
    _control(daemon, "POST", "/v1/pause")
    page.wait_for_selector(".banner.paused")
    assert "Paused" in page.locator(".banner.paused").inner_text()
    _shot(page, artifacts, "paused")
    _control(daemon, "POST", "/v1/resume")
    page.wait_for_selector(".banner.paused", state="detached")

    # Read only, and everything from the daemon itself (no CDN).
    assert page.locator("form, button, [contenteditable]").count() == 0
    assert requested and all(url.startswith(origin) for url in requested), requested
    page.close()


def test_the_page_answers_get_only_with_a_strict_policy_and_refuses_other_hosts(
    tmp_path: Path, lab: EmulatorServer
) -> None:
    config, _ = write_project(tmp_path, lab.url, {"metrics_address": "0"})
    daemon = XnatDaemon(tmp_path, config).start()
    try:
        base = _page_url(daemon)
        status, headers, body = _get(base)
        assert status == 200 and headers["Content-Type"].startswith("text/html")
        policy = headers["Content-Security-Policy"]
        assert "script-src 'self'" in policy and "default-src 'none'" in policy
        assert headers["X-Content-Type-Options"] == "nosniff"
        assert b'<script src="/assets/app.js"' in body
        for asset in ("app.js", "app.css"):
            assert _get(f"{base}assets/{asset}")[0] == 200
        assert _get(f"{base}assets/..%2f_status_page.py")[0] == 404
        status, headers, body = _get(f"{base}api/status")
        document: dict[str, Any] = json.loads(body)
        assert status == 200 and document["datasets"][0]["name"] == "lab"
        assert document["banners"] == []
        status, _, body = _get(f"{base}api/jobs?state=nonsense")
        assert status == 400 and "nonsense" in json.loads(body)["error"]
        assert _get(f"{base}api/jobs/12345")[0] == 404
        # Nothing changes anything here: no route takes another method.
        for path in ("", "api/status", "api/jobs", "api/jobs/1", "api/jobs/1/retry", "metrics"):
            assert _get(f"{base}{path}", method="POST")[0] in (404, 405), path
        # A page elsewhere pointing its own name at 127.0.0.1 (DNS rebinding) reads nothing.
        assert _get(f"{base}api/status", host="attacker.example:80")[0] == 421
        assert _get(base, host="attacker.example")[0] == 421
        assert _get(f"{base}api/status", host=f"localhost:{urlsplit(base).port}")[0] == 200
        # Prometheus scrapes by whatever name it knows the host.
        assert _get(f"{base}metrics", host="lab-server.example:9464")[0] == 200
    finally:
        daemon.ensure_stopped()
