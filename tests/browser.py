"""Debian's Chromium through Playwright, for the dashboard and judging-page tests."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]  # fmt: skip


@contextmanager
def chromium() -> Iterator[Any]:
    """A headless Chromium (the machine's own: CI installs Debian's), closed after."""
    from playwright.sync_api import sync_playwright

    assert CHROMIUM is not None, "CI must install Debian's chromium"
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield launched
        finally:
            launched.close()


@contextmanager
def live_dashboard(url: str, poll_s: float = 0.5) -> Iterator[str]:
    """A dashboard server on the database ``url`` in a thread (any free port), the test's
    data folder as its home; yields the page's address, stops it after."""
    import os
    import threading
    from pathlib import Path

    from lora_tracker.dashboard.server import make_server
    from lora_tracker.settings import Target

    home = Path(os.environ["LORA_TRACKER_HOME"])
    server = make_server(Target(url, "--database-url", home), port=0, poll_s=poll_s)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1})
    thread.start()
    try:
        yield server.url
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
