"""Fixtures of the console tests: real gateway processes and a real headless Chromium.

Chromium is Debian's (``/usr/bin/chromium``), driven by the ``playwright`` package; no
browser is ever downloaded. Each test gets a browser with a fresh profile directory.
Screenshots go to the test's temporary directory, and also to ``docs/screenshots/`` when
``CONSOLE_SCREENSHOTS=update``.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from servers import GatewayProcess

CHROMIUM = Path(os.environ.get("CONSOLE_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
DESKTOP = {"width": 1280, "height": 800}
SCREENSHOTS = Path(__file__).resolve().parents[2] / "docs" / "screenshots"


@pytest.fixture
def start_dev_gateway(tmp_path: Path) -> Iterator[Callable[..., GatewayProcess]]:
    """``start_dev_gateway(AGENTMEM_X="…")``: a gateway without ``AGENTMEM_JWT_SECRET`` (it
    signs with its development secret), stopped after the test."""
    started: list[GatewayProcess] = []

    def start(**env: str) -> GatewayProcess:
        data_dir = tmp_path / f"dev-data-{len(started)}"
        data_dir.mkdir()
        process = GatewayProcess(data_dir, extra_env=env)
        process.env.pop("AGENTMEM_JWT_SECRET", None)
        started.append(process)
        return process.start()

    yield start
    for process in started:
        process.stop()


@pytest.fixture
def dev_gateway(start_dev_gateway: Callable[..., GatewayProcess]) -> GatewayProcess:
    """A development gateway without the memory pipeline (the default of test gateways)."""
    return start_dev_gateway()


@pytest.fixture
def page(tmp_path: Path) -> Iterator[Any]:
    """A page of a fresh Chromium profile at 1280x800; page errors fail the test."""
    sync_api = pytest.importorskip(
        "playwright.sync_api",
        reason="the console tests need the `playwright` package (pip install playwright)",
    )
    if not CHROMIUM.exists():
        pytest.skip(f"the console tests need Chromium at {CHROMIUM} (apt-get install chromium)")
    errors: list[str] = []
    with sync_api.sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            tmp_path / "chromium-profile",
            executable_path=str(CHROMIUM),
            headless=True,
            args=CHROMIUM_ARGS,
            viewport=DESKTOP,
            reduced_motion="reduce",
        )
        context.set_default_timeout(15_000)
        page = context.pages[0] if context.pages else context.new_page()
        page.on("pageerror", lambda error: errors.append(str(error)))
        try:
            yield page
        finally:
            context.close()
    assert errors == [], f"the page threw: {errors}"


@pytest.fixture
def screenshot(tmp_path: Path) -> Callable[[Any, str], Path]:
    """``screenshot(page, "console-desktop")``: the viewport, as PNG."""

    def take(page: Any, name: str) -> Path:
        path = tmp_path / f"{name}.png"
        page.screenshot(path=path)
        assert path.stat().st_size > 10_000, "the screenshot looks empty"
        if os.environ.get("CONSOLE_SCREENSHOTS") == "update":
            SCREENSHOTS.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, SCREENSHOTS / path.name)
        return path

    return take
