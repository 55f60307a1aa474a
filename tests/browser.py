"""Serve a dashboard with `streamlit run` and drive it in Debian's Chromium through Playwright (tests and the
screenshot script share this)."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np

from dashboards import APPS

ROOT = Path(__file__).resolve().parents[1]
BROWSER_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                "--disable-component-update", "--disable-sync"]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _serve(app: str, env: dict, port: int) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-m", "streamlit", "run", str(APPS[app]), "--server.headless", "true",
                             "--server.port", str(port), "--server.address", "127.0.0.1",
                             "--browser.gatherUsageStats", "false"], env={**os.environ, **env}, cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(120):
        try:
            if urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=1).read() == b"ok":
                return proc
        except OSError:
            time.sleep(0.5)
    proc.kill()
    raise RuntimeError(f"streamlit {app} did not start on port {port}")


@contextlib.contextmanager
def app_in_browser(app: str, env: dict, chromium_path: str = "/usr/bin/chromium"):
    """Serve a dashboard with streamlit and yield (browser, base URL); both are stopped after."""
    from playwright.sync_api import sync_playwright

    port = _free_port()
    server = _serve(app, env, port)
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=chromium_path, args=BROWSER_ARGS)
            yield browser, f"http://127.0.0.1:{port}"
            browser.close()
    finally:
        server.kill()


def open_app(browser, base: str, query: str = "", width: int = 1400, height: int = 1000):
    """A page on the app, once its first metric has rendered (the results and dataset apps both show some)."""
    page = browser.new_page(viewport={"width": width, "height": height})
    page.goto(f"{base}/{query}")
    page.wait_for_selector("[data-testid='stApp']")
    page.locator("[data-testid='stMetric']").first.wait_for(timeout=90_000)
    page.wait_for_load_state("networkidle")
    tables = page.locator("[data-testid='stDataFrame']")
    for i in range(tables.count()):  # the grids draw on a canvas once their data arrived
        tables.nth(i).locator("canvas").first.wait_for(timeout=30_000)
    page.wait_for_timeout(3000)  # charts, grids and images finish drawing
    return page


def save_screenshot(page, path: Path, width: int = 900) -> Path:
    """A full-page screenshot, scaled to `width` and stored as a palette PNG (small enough to track in git)."""
    from io import BytesIO

    from PIL import Image

    image = Image.open(BytesIO(page.screenshot(full_page=True))).convert("RGB")
    image = image.resize((width, round(image.height * width / image.width)), Image.LANCZOS)
    path.parent.mkdir(parents=True, exist_ok=True)
    image.quantize(colors=128, method=Image.Quantize.MEDIANCUT).save(path, optimize=True)
    return path


def image_stats(path: Path) -> tuple[tuple[int, int], float]:
    """(width, height) and the pixel standard deviation of a PNG (a blank page has almost none)."""
    from PIL import Image

    image = Image.open(path).convert("L")
    return image.size, float(np.asarray(image, np.float32).std())
