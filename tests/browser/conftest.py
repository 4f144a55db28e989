"""Headless Chromium (Debian's /usr/bin/chromium, driven by Playwright) against the shared demo server.

Playwright cannot download its own browser here, so the system one is used; without it every test is
skipped with the reason. Screenshots go to artifacts/screenshots/ (gitignored) for people to look at.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

# The server harness lives beside the server tests; both directories share its one server per session.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "server"))

from server_harness import PASSWORD, REPO_ROOT, USER, WenmoServer, shared_server  # noqa: E402

CHROMIUM = os.environ.get("WENMO_TEST_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
SCREENSHOTS = REPO_ROOT / "artifacts" / "screenshots"


@pytest.fixture(scope="session")
def server(request, tmp_path_factory) -> WenmoServer:
    return shared_server(request.config, tmp_path_factory.mktemp("wenmo"))


@pytest.fixture(scope="module")
def browser():
    # Module scope, not session: Playwright's sync API keeps an event loop running in the main thread while it
    # is open, and every later test that calls asyncio.run() there would fail ("cannot be called from a
    # running event loop") — in random order, the browser module may come first.
    if not Path(CHROMIUM).exists():
        pytest.skip(f"no Chromium at {CHROMIUM} (apt-get install chromium, or set WENMO_TEST_CHROMIUM)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("the playwright package is not installed (pip install -r tests/requirements.txt)")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            b.close()


@pytest.fixture()
def page(browser, server):
    """A logged-in page (HTTP basic auth, as a person answering the browser's prompt) on the home page,
    allowed to use the clipboard."""
    context = browser.new_context(http_credentials={"username": USER, "password": PASSWORD},
                                  viewport={"width": 1400, "height": 1000}, accept_downloads=True)
    context.grant_permissions(["clipboard-read", "clipboard-write"], origin=server.url)
    context.set_default_timeout(30_000)
    pg = context.new_page()
    pg.goto(server.url + "/")
    pg.wait_for_selector("#sim-run")
    try:
        yield pg
    finally:
        context.close()


@pytest.fixture()
def shot(page):
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)

    def take(name: str, *, full_page: bool = True) -> Path:
        # Toasts are fixed to the viewport: take those with full_page=False so they are in the picture.
        path = SCREENSHOTS / f"{name}.png"
        if not full_page:
            page.wait_for_timeout(600)  # let a toast finish sliding in
        page.screenshot(path=str(path), full_page=full_page)
        return path

    return take
