"""The judging view on a 10-epoch x 8-prompt run of 1024x1024 PNG test images (about 2 MB
each, as a diffusion render is), in headless Chromium (Debian's) driven by Playwright.

    python bench/bench_judge.py [--repeat 5] [--database-url URL]

- First load: from navigation start until every grid image in the window is decoded and
  shown (polled in the page every 10 ms), with a fresh browser context (no browser cache).
  Cold: no thumbnail cached yet (each is made from the 1024 px file with Pillow on first
  request); warm: the thumbnails are cached under the data folder (the usual case: they
  are made once).
- Made ahead: the thumbnails the dashboard makes in the background once a run is opened in
  its run view (api/run/ID), before the judging view is.
- Next epoch: from the ArrowDown keydown to the frame that shows the new focus (a
  requestAnimationFrame after the page's handler, then the task after that frame); and
  until the focused epoch's large image (a 512 px thumbnail) is decoded in the side panel.

Prints a markdown table for bench/RESULTS.md.
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
import urllib.request
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from common import machine, table

from lora_tracker import embedded
from lora_tracker.dashboard.server import make_server
from lora_tracker.db import Database
from lora_tracker.image_results import file_sha256
from lora_tracker.settings import Target
from lora_tracker.thumbnails import cached_path
from tests.judge_data import make_judging_run

EPOCHS, PROMPTS, SIZE = 10, 8, 1024

VISIBLE_DONE = """() => {
  const imgs = [...document.querySelectorAll('#grid img')].filter((i) => {
    const r = i.getBoundingClientRect();
    return r.bottom > 0 && r.top < innerHeight && r.right > 0 && r.left < innerWidth;
  });
  const done = imgs.length > 0 && imgs.every((i) => i.complete && i.naturalWidth > 0);
  return done ? { ms: performance.now(), n: imgs.length } : null;
}"""

WATCH_KEYS = """() => {
  window.__moves = [];
  document.addEventListener('keydown', () => {
    const t0 = performance.now();
    requestAnimationFrame(() => setTimeout(() => window.__moves.push(performance.now() - t0), 0));
  }, true);
}"""

PANEL_SHOWN = """(path) => {
  const img = document.getElementById('focus-image');
  const shown = img.dataset.path === path && img.complete && img.naturalWidth > 0;
  return shown ? performance.now() : null;
}"""


def poll(page: Any, script: str, arg: Any = None, timeout_s: float = 60.0) -> Any:
    """Evaluate ``script`` until it returns something (CSP forbids wait_for_function)."""
    deadline = time.monotonic() + timeout_s
    while True:
        found = page.evaluate(script, arg)
        if found:
            return found
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {script[:60]}")
        page.wait_for_timeout(10)


def first_load(browser: Any, url: str) -> tuple[float, int, Any]:
    context = browser.new_context(viewport={"width": 1600, "height": 1000})
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(url)
    found = poll(page, VISIBLE_DONE)
    if errors:
        raise SystemExit(f"page errors: {errors}")
    return float(found["ms"]) / 1000, int(found["n"]), context


def next_epoch(page: Any) -> tuple[list[float], list[float]]:
    """Move down through every epoch; per move: keydown to frame, keydown to large image."""
    page.evaluate(WATCH_KEYS)
    frames: list[float] = []
    images: list[float] = []
    for _ in range(EPOCHS - 1):
        page.wait_for_timeout(150)  # an idle page, as between a person's key presses
        start = page.evaluate("() => performance.now()")
        page.keyboard.press("ArrowDown")
        path = page.evaluate(
            "() => { const c = document.querySelector('#grid td.cell.focus-cell');"
            " return c ? c.querySelector('img').src : null; }"
        )
        shown = poll(page, PANEL_SHOWN, _path_of(path), 10)
        images.append((shown - start) / 1000)
        poll(page, "() => window.__moves.length > 0 || null", None, 10)
        frames.append(page.evaluate("() => window.__moves.shift()") / 1000)
    return frames, images


def _path_of(src: str) -> str:
    from urllib.parse import parse_qs, urlsplit

    return parse_qs(urlsplit(src).query)["path"][0]


def spread(samples: list[float], unit: str = "s") -> str:
    scale, fmt = (1000, "{:.0f} ms") if unit == "ms" else (1, "{:.2f} s")
    return (
        f"median {fmt.format(statistics.median(samples) * scale)}, "
        f"min {fmt.format(min(samples) * scale)}, max {fmt.format(max(samples) * scale)} "
        f"(n={len(samples)})"
    )


def main() -> None:
    from playwright.sync_api import sync_playwright

    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--database-url", help="a database to use (default: the embedded server)")
    args = parser.parse_args()
    home = Path(tempfile.mkdtemp(prefix="lt-bench-judge-"))
    os.environ["LORA_TRACKER_HOME"] = str(home)
    target = Target(args.database_url, "--database-url" if args.database_url else "embedded", home)
    rows: list[tuple[str, str, str]] = []
    try:
        if target.embedded:
            embedded.start(home)
        with Database(target=target) as db:
            conn = db.connect()  # migrates a blank database
            url = args.database_url or conn.info.dsn
        start = time.perf_counter()
        made = make_judging_run(url, home / "images", epochs=EPOCHS, prompts=PROMPTS, size=SIZE,
                                grain=True, linked=True, name="SDXL_bench_judge")  # fmt: skip
        size_mb = sum(p.stat().st_size for p in made.images) / len(made.images) / 2**20
        print(f"made {len(made.images)} images ({size_mb:.1f} MB each) in "
              f"{time.perf_counter() - start:.0f} s", file=sys.stderr)  # fmt: skip
        server = make_server(target, port=0, poll_s=60)
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        page_url = f"{server.url}judge#run={made.name}&poll=60000"
        cold: list[float] = []
        warm: list[float] = []
        frames: list[float] = []
        images: list[float] = []
        shown = 0
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(
                executable_path=shutil.which("chromium"),
                args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"],
            )
            for _ in range(args.repeat):
                shutil.rmtree(home / "thumbnails", ignore_errors=True)
                seconds, shown, context = first_load(browser, page_url)
                cold.append(seconds)
                context.close()
            for _ in range(args.repeat):
                seconds, shown, context = first_load(browser, page_url)
                warm.append(seconds)
                moved, panel = next_epoch(context.pages[0])
                frames += moved
                images += panel
                context.close()
            # the dashboard's run view asks for api/run/ID: the grid's thumbnails are then
            # made ahead, in one background thread
            shutil.rmtree(home / "thumbnails", ignore_errors=True)
            wanted = [
                cached_path(file_sha256(p), size, home) for p in made.images for size in (128, 256)
            ]
            start = time.perf_counter()
            with urllib.request.urlopen(f"{server.url}api/run/{made.run_id}") as response:
                response.read()
            while not all(p.exists() for p in wanted):
                time.sleep(0.05)
            ahead = time.perf_counter() - start
            version = browser.version
            browser.close()
        server.shutdown()
        grid = f"{EPOCHS} x {PROMPTS} grid of {SIZE}x{SIZE} PNGs"
        rows += [
            (f"first load, {grid}, thumbnails not yet made ({shown} in the window)",
             spread(cold), "< 1.5 s"),
            (f"first load, {grid}, thumbnails cached ({shown} in the window)",
             spread(warm), "< 1.5 s"),
            (f"thumbnails made ahead once the run is opened in the dashboard ({len(wanted)}: "
             "128 and 256 px)", f"{ahead:.1f} s", "-"),
            ("next epoch (ArrowDown): keydown to the frame showing the new focus",
             spread(frames, "ms"), "< 100 ms"),
            ("next epoch: keydown to the new epoch's large image shown (512 px thumbnail)",
             spread(images, "ms"), "-"),
        ]  # fmt: skip
    finally:
        if target.embedded:
            embedded.stop(home)
        shutil.rmtree(home, ignore_errors=True)
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"Machine: {machine()}; Chromium {version} headless (no GPU); load average "
          f"at the end {load}\n")  # fmt: skip
    print(table(rows))


if __name__ == "__main__":
    main()
