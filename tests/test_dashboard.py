"""The dashboard and the report, rendered in headless Chromium (Debian's), driven by
Playwright with the system browser: no console errors, charts drawn, runs shown."""

from __future__ import annotations

import os
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from click.testing import CliRunner

from lora_tracker.cli import cli

from .browser import CHROMIUM, chromium, live_dashboard
from .conftest import ROOT
from .image_makers import picture
from .kohya_sim import PNG

ARTIFACTS = ROOT / "tests" / "artifacts"
CHARTS = ("chart-curves", "chart-dim", "chart-alpha", "chart-resolution", "chart-model",
          "chart-success", "chart-issues")  # fmt: skip
RUN_NAMES = ("SD15_PERFECT_Nov9", "SD15_bespoke_baby_Nov7", "SDXL_Current_Nov12")

if CHROMIUM is None and not os.environ.get("CI"):  # pragma: no cover - CI installs it
    pytest.skip("chromium is not installed (apt-get install chromium)", allow_module_level=True)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with chromium() as launched:
        yield launched


class Page:
    """A page with its console errors collected."""

    def __init__(self, browser: Any, url: str) -> None:
        self.context = browser.new_context(viewport={"width": 1400, "height": 1000})
        self.page = self.context.new_page()
        self.errors: list[str] = []
        self.requests: list[str] = []
        self.page.on("request", lambda r: self.requests.append(r.url))
        self.page.on("console", lambda m: self.errors.append(m.text) if m.type == "error" else None)
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))
        self.page.goto(url)
        self.page.wait_for_selector("#ready:has-text('ready')", state="attached", timeout=30000)

    def check(self, screenshot: str) -> str:
        """No errors, every chart drawn; returns the page text."""
        assert self.errors == []
        assert self.page.inner_text("#js-errors") == ""
        for chart in CHARTS:
            drawn = self.page.eval_on_selector(
                f"#{chart}", "e => e.querySelectorAll('svg.main-svg *').length"
            )
            assert drawn > 10, f"{chart} has no chart drawn"
        ARTIFACTS.mkdir(exist_ok=True)
        shot = ARTIFACTS / screenshot
        self.page.screenshot(path=str(shot), full_page=True)
        assert shot.stat().st_size > 10_000
        text: str = self.page.inner_text("body")
        return text

    def wait_true(self, expression: str, timeout_s: float = 20.0) -> None:
        """Wait until a JavaScript expression is true. Polled from here, not with
        wait_for_function, whose polling evals a string: the live page's CSP forbids that."""
        deadline = time.monotonic() + timeout_s
        while not self.page.evaluate(f"() => Boolean({expression})"):
            assert time.monotonic() < deadline, f"still false after {timeout_s}s: {expression}"
            self.page.wait_for_timeout(50)

    def close(self) -> None:
        self.context.close()


def _server_name(admin_url: str) -> str:
    return "pg15" if "54315" in admin_url or "127.0.0.1" in admin_url else "embedded"


def add_prompt_result_with_image(url: str, tmp_path: Path) -> Path:
    image = tmp_path / "e7_sitting.png"
    image.write_bytes(PNG)
    runner = CliRunner()
    runner.invoke(cli, ["--database-url", url, "prompt", "add", "baby_sitting", "--text", "x"])
    result = runner.invoke(cli, ["--database-url", url, "prompt", "score", "SD15_PERFECT_Nov9",
                                 "7", "baby_sitting", "--score", "9", "--verdict", "pass",
                                 "--image", str(image)])  # fmt: skip
    assert result.exit_code == 0, result.output
    return image


@pytest.mark.both_servers
def test_report_renders(browser: Any, examples_url: str, tmp_path: Path, server: str) -> None:
    """`report` writes one self-contained file that renders offline, charts and all."""
    add_prompt_result_with_image(examples_url, tmp_path)
    target = tmp_path / "report.html"
    result = CliRunner().invoke(cli, ["--database-url", examples_url, "report", "-o", str(target)])
    assert result.exit_code == 0, result.output
    page = Page(browser, target.as_uri())
    try:
        # self-contained: the page loads nothing but itself and inlined data
        assert {url.split(":", 1)[0] for url in page.requests} <= {"file", "data"}
        text = page.check(f"report-{_server_name(server)}.png")
        for name in RUN_NAMES:
            assert name in text
        assert "Run SDXL_Current_Nov12: partial 4/10" in text  # the newest scored run
        page.page.click("#runs tbody tr:has-text('SD15_PERFECT_Nov9')")
        page.page.wait_for_function(
            "document.getElementById('run-title').textContent.includes('SD15_PERFECT_Nov9')"
        )
        # the epoch x prompt grid shows the thumbnail (never the full file), inlined
        src = page.page.eval_on_selector("#grid img", "e => e.src")
        assert src.startswith("data:image/png;base64,")  # a 1-pixel PNG Pillow cannot decode
        assert "9 pass" in page.page.inner_text("#grid")
        # filter and sort the runs table
        page.page.fill("#filter", "bespoke")
        assert page.page.locator("#runs tbody tr").count() == 1
        page.page.fill("#filter", "")
        page.page.click("#runs th[data-key='quality_score']")
        first = page.page.inner_text("#runs tbody tr:first-child td:first-child")
        assert first == "SD15_PERFECT_Nov9"
        page.page.click("#runs tbody tr:has-text('SDXL_Current_Nov12')")
        page.page.wait_for_function(
            "document.getElementById('run-title').textContent.includes('SDXL_Current_Nov12')"
        )
        assert page.page.locator("#epochs tbody tr").count() == 8
    finally:
        page.close()


@pytest.fixture
def live_server(examples_url: str) -> Iterator[str]:
    with live_dashboard(examples_url) as url:
        yield url


def test_live_dashboard_refreshes(
    browser: Any, examples_url: str, live_server: str, tmp_path: Path, server: str
) -> None:
    """The live page shows the runs, serves recorded images, and refreshes when a run
    records a new epoch."""
    image = add_prompt_result_with_image(examples_url, tmp_path)
    page = Page(browser, live_server)
    try:
        text = page.check(f"dashboard-{_server_name(server)}.png")
        assert all(url.startswith((live_server, "data:")) for url in page.requests)
        for name in RUN_NAMES:
            assert name in text
        page.page.click("#runs tbody tr:has-text('SD15_PERFECT_Nov9')")
        page.page.wait_for_selector("#grid img")
        page.wait_true("document.querySelector('#grid img').complete")
        loaded = page.page.eval_on_selector("#grid img", "e => e.naturalWidth > 0")
        assert loaded, "the prompt-result thumbnail is served"
        runner = CliRunner()
        runner.invoke(
            cli,
            [
                "--database-url",
                examples_url,
                "new",
                "SD15_live_run",
                "--model-type",
                "SD15",
                "--network-dim",
                "16",
            ],
        )
        runner.invoke(
            cli, ["--database-url", examples_url, "score", "SD15_live_run", "1", "--visual", "10"]
        )
        page.wait_true("document.getElementById('runs').innerText.includes('SD15_live_run')")
        assert page.errors == []
    finally:
        page.close()
    # only images the database knows are served
    with urllib.request.urlopen(live_server + "api/image?path=" + str(image)) as response:
        assert response.status == 200 and response.read() == PNG
    for path in ("/etc/passwd", str(tmp_path / "other.png")):
        for route in ("api/image", "api/thumb"):
            with pytest.raises(urllib.error.HTTPError) as refused:
                urllib.request.urlopen(f"{live_server}{route}?path={path}")
            assert refused.value.code == 404
    # a grid thumbnail: a small WebP made once, cached under the data folder (the 1-pixel
    # PNG above, which Pillow cannot decode, is served as it is)
    with urllib.request.urlopen(live_server + "api/thumb?path=" + str(image)) as response:
        assert response.read() == PNG
    big = tmp_path / "big.png"
    picture((1024, 1024)).save(big)
    with psycopg.connect(examples_url, autocommit=True) as conn:
        conn.execute("UPDATE prompt_test_results SET image_path = %s", (str(big),))
    with urllib.request.urlopen(live_server + "api/thumb?path=" + str(big)) as response:
        assert response.headers["Content-Type"] == "image/webp"
        body = response.read()
    assert body[8:12] == b"WEBP" and len(body) < big.stat().st_size / 10
    assert list((Path(os.environ["LORA_TRACKER_HOME"]) / "thumbnails").rglob("*-256.webp"))


def test_dashboard_command_errors(examples_url: str) -> None:
    """A port in use is one line, exit 1; so is an unreachable database."""
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = str(taken.getsockname()[1])
        result = CliRunner().invoke(
            cli, ["--database-url", examples_url, "dashboard", "--port", port]
        )
    assert result.exit_code == 1 and f"cannot listen on 127.0.0.1:{port}" in result.output
    result = CliRunner().invoke(
        cli, ["--database-url", "postgresql://x@127.0.0.1:1/x", "dashboard"]
    )
    assert result.exit_code == 1 and "cannot connect to" in result.output
