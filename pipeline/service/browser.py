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
from urllib.parse import urlsplit

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
    images: bool = True   # False: images blocked, as Outlook does by default
    styles: bool = True   # False: every <style> removed, as Gmail does for non-Google accounts in its apps


IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".gif", ".webp", ".svg")

VIEWS = [View("mobile-320", 320, 640), View("mobile-375", 375, 812), View("desktop-1024", 1024, 900),
         View("dark-375", 375, 812, "dark"), View("images-off-375", 375, 812, images=False),
         View("no-styles-375", 375, 812, styles=False)]

STRIP_STYLES = "() => document.querySelectorAll('style').forEach(style => style.remove())"


def chromium_path() -> str:
    path = os.environ.get("PIPELINE_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    if not path:
        raise PipelineError("no Chromium found: install Debian's chromium package or set $PIPELINE_CHROMIUM")
    return path


@contextmanager
def chromium() -> Iterator:
    """A fresh headless browser (new empty profile each time)."""
    try:
        from playwright.sync_api import sync_playwright  # optional: the preview extra
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


def published_file(url: str, folder: Path) -> Path | None:
    """The file in the output folder that a published URL names: the longest tail of its path found there."""
    parts = [part for part in urlsplit(url).path.split("/") if part]
    for start in range(len(parts)):
        candidate = folder.joinpath(*parts[start:]).resolve()
        if candidate.is_relative_to(folder.resolve()) and candidate.is_file():
            return candidate
    return None


def serve_images_from(page, folder: Path) -> None:
    """Answer the digest's image requests from the output folder, so pages show the images as published."""
    def answer(route) -> None:
        found = published_file(route.request.url, folder)
        route.fulfill(path=str(found)) if found else route.abort()
    page.route(lambda url: url.startswith("https://") and url.lower().endswith(IMAGE_SUFFIXES), answer)


def show_digest(page, digest: Path, view: View) -> None:
    """Load the digest as this view sees it: images from the output folder or blocked, styles kept or stripped."""
    if view.images:
        serve_images_from(page, digest.parent)
    page.goto(digest.resolve().as_uri())
    if not view.styles:
        page.evaluate(STRIP_STYLES)


def screenshot_digest(digest: Path, folder: Path) -> list[Path]:
    """Full-page screenshots of the digest at phone and desktop widths, in dark mode, with images off
    and with styles stripped: a record of what readers in each kind of client see."""
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    with chromium() as browser:
        for view in VIEWS:
            page = open_page(browser, view)
            show_digest(page, digest, view)
            path = folder / f"digest-{view.name}.png"
            page.screenshot(path=str(path), full_page=True)
            page.context.close()
            written.append(path)
    return written
