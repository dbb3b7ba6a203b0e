"""Fixtures for the browser layer: the real stack (API, worker, emulator) and a headless Debian Chromium driven by
Playwright (never a downloaded browser: ``executable_path`` is the system's). Skips locally when Chromium is
absent; fails under ``CI=true``."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, sync_playwright

from tests.conftest import IN_CI
from tests.integration.harness import emulator, files_dir, isolated_redis_url, processes, rows_for

__all__ = ["emulator", "files_dir", "isolated_redis_url", "processes", "rows_for"]

CHROMIUM = Path(os.environ.get("IMAGEJOBS_TEST_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
ARTIFACTS = Path(__file__).parent / "artifacts"


@pytest.fixture(scope="session")
def chromium_path() -> Path:
    if not CHROMIUM.is_file():
        if IN_CI:
            pytest.fail(f"Chromium is required under CI=true but {CHROMIUM} is missing (apt-get install chromium)")
        pytest.skip(f"Chromium is not installed at {CHROMIUM} (apt-get install chromium)")
    return CHROMIUM


@pytest.fixture
def artifacts(request: pytest.FixtureRequest) -> Path:
    """Where the test's screenshots go (kept after the run; gitignored)."""
    path = ARTIFACTS / str(request.node.name)
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture(scope="module")  # not the session: a running Playwright owns the event loop of the main thread
def browser(chromium_path: Path) -> Iterator[Browser]:
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(chromium_path), args=CHROMIUM_ARGS, headless=True)
        try:
            yield launched
        finally:
            launched.close()
