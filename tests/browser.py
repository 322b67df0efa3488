"""Screenshots of local HTML in Debian's chromium, driven by Playwright, taken only once the page is ready.

Chromium's own ``--screenshot`` fires at the load event: on a busy machine an embedded ``@font-face`` (a
``data:`` URL) may not be applied yet and CJK text shows as missing-glyph boxes. Here the page is opened with
Playwright (``executable_path`` to the system chromium: ``playwright install`` cannot download browsers on
these machines) and the screenshot waits until ``document.fonts.ready`` has resolved, every font face is
loaded and every image has finished decoding.

A missing chromium or Playwright fails the test (never a skip), so CI cannot go green without the browser.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

#: where Debian installs chromium; ``SEGML_CHROMIUM`` overrides it
DEFAULT_CHROMIUM = "/usr/bin/chromium"
#: milliseconds to wait for fonts and images before the test fails
READY_TIMEOUT_MS = 60_000

_READY = """
async () => {
  await document.fonts.ready;
  await Promise.all(Array.from(document.fonts).map((face) => face.status === "loaded" ? null : face.load()));
  // every family the page declares, loaded for the page's own text (a busy machine can lay text out in a
  // fallback font before the embedded face is applied), then one more ready and a short settle
  const text = document.body ? document.body.innerText : "";
  const families = [...new Set(Array.from(document.fonts).map((face) => face.family))];
  await Promise.all(families.map((family) => document.fonts.load(`16px ${family}`, text).catch(() => null)));
  await document.fonts.ready;
  document.body && document.body.offsetHeight;  // force a layout with the loaded faces
  await new Promise((done) => setTimeout(done, 250));
  await Promise.all(Array.from(document.images).map((img) =>
    img.complete ? (img.decode ? img.decode().catch(() => null) : null)
                 : new Promise((done) => { img.onload = img.onerror = done; })));
  await new Promise((done) => requestAnimationFrame(() => requestAnimationFrame(done)));
  return {
    fonts: Array.from(document.fonts).map((face) => [face.family, face.status]),
    images: Array.from(document.images).filter((img) => !img.complete || img.naturalWidth === 0).length,
  };
}
"""


def chromium_path() -> str:
    """The chromium executable; fails the test when there is none."""
    candidates = [os.environ.get("SEGML_CHROMIUM"), DEFAULT_CHROMIUM, shutil.which("chromium")]
    candidates.append(shutil.which("chromium-browser"))
    for candidate in candidates:
        if candidate and Path(candidate).is_file():
            return candidate
    pytest.fail("chromium not installed (Debian: apt-get install -y chromium; .ci/run installs it in CI)")


@contextmanager
def browser() -> Iterator[Any]:
    """A headless Playwright chromium (the system one); fails the test when Playwright is missing."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail("playwright is not installed (it is in the dev extra: pip install -e '.[dev]')")
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=chromium_path(), headless=True, args=["--no-sandbox", "--disable-gpu"]
        )
        try:
            yield launched
        finally:
            launched.close()


def screenshot(page_file: Path, png: Path, size: tuple[int, int] = (1200, 1800)) -> list[str]:
    """Screenshot ``page_file`` once its fonts and images are ready; return the console messages.

    Console messages are ``"<type>: <text>"`` for errors and warnings, and uncaught page errors; a font face
    that failed to load or an image that did not decode fails the test.
    """
    console: list[str] = []
    with browser() as chromium:
        context = chromium.new_context(viewport={"width": size[0], "height": size[1]}, device_scale_factor=1)
        page = context.new_page()
        page.on(
            "console",
            lambda message: (
                console.append(f"{message.type}: {message.text}")
                if message.type in ("error", "warning")
                else None
            ),
        )
        page.on("pageerror", lambda error: console.append(f"pageerror: {error}"))
        page.goto(Path(page_file).resolve().as_uri(), wait_until="load", timeout=READY_TIMEOUT_MS)
        page.set_default_timeout(READY_TIMEOUT_MS)
        state = page.evaluate(_READY)
        failed = [family for family, status in state["fonts"] if status != "loaded"]
        assert not failed, f"{page_file.name}: font face(s) not loaded: {failed}"
        assert state["images"] == 0, f"{page_file.name}: {state['images']} image(s) did not load"
        page.screenshot(path=str(png), full_page=False)
        context.close()
    assert png.is_file(), f"no screenshot of {page_file.name}"
    return console
