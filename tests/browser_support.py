"""A real browser for the status page tests: Debian's chromium, driven by Playwright.

Playwright never downloads a browser here: it drives ``/usr/bin/chromium`` (apt package
``chromium``), headless, with a fresh profile and none of Chromium's background traffic
(the network is closed; without these flags it hangs on connections). Without chromium
or Playwright the tests are skipped with the reason, unless ``SINAGOT_REQUIRE_BROWSER=1``
(CI sets it where chromium is installed): then they fail.

Screenshots go to ``$SINAGOT_TEST_ARTIFACTS/status-page/`` (default: ``artifacts/`` in
pytest's base temporary folder).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from playwright.sync_api import BrowserContext

CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def _chromium() -> str | None:
    return shutil.which("chromium") or (
        "/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None
    )


def _unavailable(reason: str) -> None:
    if os.environ.get("SINAGOT_REQUIRE_BROWSER") == "1":
        pytest.fail(f"SINAGOT_REQUIRE_BROWSER=1 but {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def artifacts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where the browser tests leave their screenshots (``$SINAGOT_TEST_ARTIFACTS``)."""
    given = os.environ.get("SINAGOT_TEST_ARTIFACTS")
    root = Path(given) if given else tmp_path_factory.getbasetemp() / "artifacts"
    folder = root / "status-page"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[BrowserContext]:
    """A headless chromium with a fresh profile (closed at the end of the test)."""
    chromium = _chromium()
    if chromium is None:
        _unavailable("no chromium to drive (apt-get install chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _unavailable("Playwright is not installed (pip install -e '.[test]')")
    assert chromium is not None
    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(tmp_path / "chromium-profile"),
            executable_path=chromium,
            headless=True,
            args=CHROMIUM_FLAGS,
            viewport={"width": 1280, "height": 720},
            timeout=60_000,
        )
        context.set_default_timeout(30_000)
        try:
            yield context
        finally:
            context.close()
