"""Fixtures for the dashboard's tests: Debian's chromium driven by Playwright, and screenshots."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, Playwright, sync_playwright

README_IMAGE = Path(__file__).parents[2] / "docs" / "images" / "dashboard.png"


def chromium_path() -> str:
    """Debian's chromium (scripts/install-browser.sh installs it); missing is a failure."""
    for name in ("chromium", "chromium-browser"):
        found = shutil.which(name)
        if found:
            return found
    pytest.fail("chromium is not installed: run scripts/install-browser.sh (make .venv/.browser)")


# Package, not session: Playwright's sync API keeps an event loop running in the main thread
# while it is open, and every later test calling asyncio.run() would fail on it.
@pytest.fixture(scope="package")
def playwright() -> Iterator[Playwright]:
    with sync_playwright() as driver:
        yield driver


@pytest.fixture(scope="package")
def browser(playwright: Playwright) -> Iterator[Browser]:
    # Playwright's own browser download cannot reach its host here; the system's chromium can.
    launched = playwright.chromium.launch(executable_path=chromium_path(), headless=True)
    yield launched
    launched.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    context.set_default_timeout(15_000)
    yield context.new_page()
    context.close()


@pytest.fixture(scope="session")
def screenshots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("screenshots")
