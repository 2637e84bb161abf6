"""The dashboard page for 10,000 runs (100,000 epochs): time until the page has drawn
everything, in headless Chromium (Debian's), for the live page and the report.

    python bench/bench_dashboard.py [--runs 10000] [--repeat 3]

"Rendered" is the page's own mark (performance.now() when every chart and table is
drawn), measured from navigation start. Prints a markdown table for bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench_cli import FILL, FILL_EPOCHS
from common import machine, table

from lora_tracker import embedded
from lora_tracker.dashboard.server import make_server, write_report
from lora_tracker.db import Database
from lora_tracker.settings import Target


def render_times(browser, url: str, repeat: int) -> list[float]:
    times = []
    for _ in range(repeat):
        context = browser.new_context(viewport={"width": 1400, "height": 1000})
        page = context.new_page()
        errors: list[str] = []

        def collect(error: object, found: list[str] = errors) -> None:
            found.append(str(error))

        page.on("pageerror", collect)
        page.goto(url)
        page.wait_for_selector("#ready:has-text('ready')", state="attached", timeout=60000)
        times.append(float(page.eval_on_selector("#ready", "e => e.dataset.ms")) / 1000)
        if errors:
            raise SystemExit(f"page errors: {errors}")
        context.close()
    return times


def main() -> None:
    from playwright.sync_api import sync_playwright

    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    home = Path(tempfile.mkdtemp(prefix="lt-bench-dash-"))
    os.environ["LORA_TRACKER_HOME"] = str(home)
    target = Target(None, "embedded", home)
    rows: list[tuple[str, str, str]] = []
    try:
        embedded.start(home)
        with Database(target=target) as db:
            conn = db.connect()
            with conn.transaction():
                conn.execute(FILL, {"runs": args.runs})
                conn.execute(FILL_EPOCHS, {"epochs": 10})
            conn.execute("ANALYZE")
        start = time.perf_counter()
        report = write_report(target)
        built = time.perf_counter() - start
        report_file = home / "report.html"
        report_file.write_text(report, encoding="utf-8")
        server = make_server(target, port=0)
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        chromium = shutil.which("chromium")
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(
                executable_path=chromium,
                args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"],
            )
            live = render_times(browser, server.url, args.repeat)
            offline = render_times(browser, report_file.as_uri(), args.repeat)
            browser.close()
        server.shutdown()
        size = len(report) / 1024 / 1024
        rows += [
            (f"live dashboard, {args.runs:,} runs: page rendered",
             f"median {statistics.median(live):.2f} s, max {max(live):.2f} s (n={args.repeat})",
             "< 2 s"),
            (f"report file ({size:.1f} MB), {args.runs:,} runs: page rendered",
             f"median {statistics.median(offline):.2f} s, max {max(offline):.2f} s "
             f"(n={args.repeat})", "< 2 s"),
            ("`lora-tracker report`: query and build the file", f"{built:.2f} s", "-"),
        ]  # fmt: skip
    finally:
        embedded.stop(home)
        shutil.rmtree(home, ignore_errors=True)
    print(f"Machine: {machine()}\n")
    print(table(rows))


if __name__ == "__main__":
    main()
