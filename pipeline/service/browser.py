"""Headless Chromium (Debian's, driven by Playwright) for looking at the digest as readers see it.

Playwright's own browser download does not work on machines without the
internet, so the system Chromium is used: $PIPELINE_CHROMIUM or `chromium` on PATH.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from ..errors import PipelineError

CHROMIUM_FLAGS = [
    "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
    "--no-first-run", "--disable-sync", "--disable-quic", "--disable-dev-shm-usage",
]


@dataclass(frozen=True)
class View:
    name: str
    width: int
    height: int
    color_scheme: str = "light"


VIEWS = [View("mobile-320", 320, 640), View("mobile-375", 375, 812), View("desktop-1024", 1024, 900),
         View("dark-375", 375, 812, "dark")]


def chromium_path() -> str:
    path = os.environ.get("PIPELINE_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    if not path:
        raise PipelineError("no Chromium found: install Debian's chromium package or set $PIPELINE_CHROMIUM")
    return path


@contextmanager
def chromium() -> Iterator:
    """A fresh headless browser (new empty profile each time)."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        raise PipelineError("screenshots need Playwright: pip install -e '.[preview]'") from None
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium_path(), headless=True, args=CHROMIUM_FLAGS)
        try:
            yield browser
        finally:
            browser.close()


def open_page(browser, view: View, offline: bool = True):
    """A page at this viewport and colour scheme; offline pages abort every non-local request at once."""
    context = browser.new_context(viewport={"width": view.width, "height": view.height},
                                  color_scheme=view.color_scheme, device_scale_factor=1)
    page = context.new_page()
    if offline:
        page.route("**/*", lambda route: route.continue_() if route.request.url.startswith(("file:", "data:",
                   "http://127.0.0.1", "http://localhost")) else route.abort())
    return page


def screenshot_digest(digest: Path, folder: Path) -> list[Path]:
    """Full-page screenshots of the digest at phone and desktop widths, and in dark mode."""
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    with chromium() as browser:
        for view in VIEWS:
            page = open_page(browser, view)
            page.goto(digest.resolve().as_uri())
            path = folder / f"digest-{view.name}.png"
            page.screenshot(path=str(path), full_page=True)
            page.context.close()
            written.append(path)
    return written
