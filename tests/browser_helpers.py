"""What the Chromium tests share: the browser's start (Debian's /usr/bin/chromium driven by
Playwright, never `playwright install`), a check for both, and how to wait for Streamlit, move
between pages and keep screenshots."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

from conftest import CHROMIUM, missing_resource

CHROME_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
               "--disable-sync", "--no-first-run", "--disable-quic"]


def require_browser() -> None:
    """Skip (fail on CI) when Chromium or Playwright is missing."""
    if not CHROMIUM.exists():
        missing_resource(f"{CHROMIUM} not installed (bash scripts/setup_env.sh --with-browser)")
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError as exc:
        missing_resource(f"playwright not importable: {exc}")


@contextlib.contextmanager
def browser_page(width: int, height: int = 1000, timeout_ms: int = 60_000) -> Iterator:
    """A Playwright page of a fresh headless Chromium at ``width`` x ``height`` px (downloads on)."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROME_ARGS, headless=True)
        try:
            ctx = browser.new_context(viewport={"width": width, "height": height}, accept_downloads=True)
            pg = ctx.new_page()
            pg.set_default_timeout(timeout_ms)
            yield pg
        finally:
            browser.close()


def idle(pg, ms: int = 400, timeout_ms: int = 300_000) -> None:
    """Wait until Streamlit has finished the current script run."""
    pg.wait_for_timeout(ms)
    pg.locator('[data-testid="stStatusWidget"]').wait_for(state="hidden", timeout=timeout_ms)
    pg.wait_for_timeout(250)


def shot(pg, folder: Path, name: str) -> None:
    """A full-page screenshot ``folder/name.png``."""
    folder.mkdir(parents=True, exist_ok=True)
    pg.screenshot(path=str(folder / f"{name}.png"), full_page=True)


def nav(pg, label: str) -> None:
    """Open a page from the sidebar navigation and wait for it."""
    pg.locator('[data-testid="stSidebarNav"]').get_by_text(label, exact=True).click()
    idle(pg)
    pg.locator("h1").first.wait_for()


def kmeans_run_options(pg, n_clusters: int, name: str) -> None:
    """On the Data page's new-run form: C = ``n_clusters`` (not automatic), k-means, run name ``name``."""
    pg.get_by_text("Number of clusters: automatic").click()
    idle(pg)
    c_input = pg.get_by_label("Number of clusters C")
    c_input.fill(str(n_clusters))
    c_input.press("Enter")
    idle(pg)
    pg.get_by_text("k-means (fast baseline)").click()
    idle(pg)
    pg.get_by_label("Run name (optional)").fill(name)
    pg.get_by_label("Run name (optional)").press("Enter")
    idle(pg)
