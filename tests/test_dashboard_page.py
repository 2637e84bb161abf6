"""The dashboard page as a new user sees it, in headless Chromium (Debian's): chart axes,
empty charts, the epoch table, links to a run, the report's inlined data, and the page's
side of the write gate (ltWrite, read-only). Screenshots go to tests/artifacts/."""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from lora_tracker import runs
from lora_tracker.cli import cli
from lora_tracker.dashboard import writes
from lora_tracker.dashboard.server import DashboardServer, make_server
from lora_tracker.db import Database
from lora_tracker.epochs import upsert_epoch
from lora_tracker.models import EpochFields
from lora_tracker.settings import Target

from . import test_dashboard
from .test_dashboard import ARTIFACTS, Page
from .test_dashboard_security import ROUTE, _set_visual, _visual

browser = test_dashboard.browser  # the Chromium fixture, shared

# what a careless note can hold: the HTML parser's script-data states, a closing tag,
# JavaScript's line separators, an ampersand entity
NASTY_NOTE = "keep <!--<script> as text </script><b>bold</b> &amp; \u2028line\u2029para"


@pytest.fixture
def serve(examples_url: str) -> Iterator[Any]:
    started: list[tuple[DashboardServer, threading.Thread]] = []

    def start(url: str = examples_url, **options: Any) -> str:
        home = Path(os.environ["LORA_TRACKER_HOME"])
        server = make_server(Target(url, "--database-url", home), port=0, poll_s=0.5, **options)
        thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1})
        thread.start()
        started.append((server, thread))
        return server.url

    yield start
    for server, thread in started:
        server.shutdown()
        server.server_close()
        thread.join(5)


def _set_epochs(url: str, run_name: str, **per_epoch: Any) -> None:
    with Database(url) as db, db.transaction() as conn:
        run = runs.get_run(conn, run_name)
        numbers = [r["epoch_number"] for r in conn.execute(
            "SELECT epoch_number FROM epoch_results WHERE training_run_id = %s", (run.id,)
        ).fetchall()]  # fmt: skip
        for number in numbers:
            fields = {k: (v(number) if callable(v) else v) for k, v in per_epoch.items()}
            upsert_epoch(conn, run.id, number, EpochFields(**fields))


# whether the epoch table is wider than its section, and which cells cut their text
EPOCH_TABLE_OVERFLOW = """() => {
  const table = document.getElementById("epochs");
  const box = table.closest("section");
  const cut = [...table.querySelectorAll("td")].filter((td) =>
    td.scrollWidth > td.clientWidth + 1 || td.scrollHeight > td.clientHeight + 1);
  const right = (node) => node.getBoundingClientRect().right;
  return { wider: right(table) > right(box), cut: cut.map((td) => td.textContent) };
}"""


def _fill_every_column(url: str, tmp_path: Path) -> None:
    """Every column of SD15_PERFECT_Nov9's epochs filled: four kohya samples an epoch
    (64 px PNGs), scores, flags, verdict, loss and a long note."""
    from PIL import Image

    paths = []
    for index, colour in enumerate(["red", "green", "blue", "orange"]):
        path = tmp_path / f"pixelbaby_e000006_{index:02d}_20241109100000.png"
        Image.new("RGB", (64, 64), colour).save(path)
        paths.append(str(path))
    _set_epochs(url, "SD15_PERFECT_Nov9", sample_images=paths, verdict="acceptable",
                visual_quality_score=10, style_match_score=10, prompt_adherence_score=10,
                production_ready=True, loss=0.2259,
                has_wrong_backgrounds=True, has_random_pixels=True, is_photorealistic=True,
                observations="slight noise around outlines, but the background is wrong in"
                " the beach prompt")  # fmt: skip


def _ticks(page: Any, axis: str) -> list[str]:
    texts: list[str] = page.page.eval_on_selector_all(
        f"#chart-curves g.{axis}tick text", "nodes => nodes.map((n) => n.textContent)"
    )
    return texts


def _title(page: Any) -> str:
    text: str = page.page.inner_text("#run-title")
    return text


def _wait_title(page: Any, name: str) -> None:
    page.wait_true(f"document.getElementById('run-title').textContent.includes({json.dumps(name)})")


# the thumbnails of each epoch's samples cell: how many rows and columns they stand in
SAMPLE_LAYOUT = """() => [...document.querySelectorAll("#epochs tbody tr")].map((tr) => {
  const imgs = [...tr.querySelectorAll(".thumbs img")].filter((i) => i.complete && i.naturalWidth);
  const at = (f) => new Set(imgs.map((i) => Math.round(i.getBoundingClientRect()[f]))).size;
  return { images: imgs.length, rows: at("top"), columns: at("left") };
})"""


def test_epoch_samples_stand_two_abreast(
    serve: Any, browser: Any, examples_url: str, tmp_path: Path
) -> None:
    """kohya renders one sample per test prompt at each epoch: four samples stand two by two
    on a wide screen (not four high), and one above the other where the screen is narrow;
    with every column filled the table is never wider than its section, down to a small
    laptop's screen."""
    _fill_every_column(examples_url, tmp_path)
    page = Page(browser, serve() + "#run=SD15_PERFECT_Nov9")
    try:
        _wait_title(page, "SD15_PERFECT_Nov9")
        page.wait_true("document.querySelectorAll('#epochs .thumbs img').length === 12")
        page.wait_true("[...document.querySelectorAll('#epochs .thumbs img')]"
                       ".every((i) => i.complete && i.naturalWidth > 0)")  # fmt: skip
        wide = page.page.evaluate(SAMPLE_LAYOUT)
        assert wide == [{"images": 4, "rows": 2, "columns": 2}] * 3
        assert page.page.evaluate(EPOCH_TABLE_OVERFLOW)["wider"] is False
        for width in (900, 800):
            page.page.set_viewport_size({"width": width, "height": 1000})
            page.page.wait_for_timeout(100)
            narrow = page.page.evaluate(SAMPLE_LAYOUT)
            assert narrow == [{"images": 4, "rows": 4, "columns": 1}] * 3, width
            assert page.page.evaluate(EPOCH_TABLE_OVERFLOW) == {"wider": False, "cut": []}, width
        ARTIFACTS.mkdir(exist_ok=True)
        page.page.screenshot(path=str(ARTIFACTS / "dashboard-run-samples.png"), full_page=True)
    finally:
        page.close()


def test_run_chart_epoch_table_and_links(serve: Any, browser: Any, examples_url: str) -> None:
    """Epoch ticks are whole numbers, loss has its own axis, the epoch table fits with
    its observations whole, flags are words; #run=NAME opens a run; back and forward
    move between the runs clicked."""
    _set_epochs(examples_url, "SDXL_Current_Nov12", loss=lambda e: 0.05 + 0.14 * math.exp(-e / 4))
    url = serve()
    page = Page(browser, url + "#run=SD15_PERFECT_Nov9")
    try:
        _wait_title(page, "SD15_PERFECT_Nov9")
        assert _ticks(page, "x") == ["6", "7", "8"]  # three epochs: no "6 6 7 7 8"
        page.page.click("#runs tbody tr:has-text('SDXL_Current_Nov12')")
        _wait_title(page, "SDXL_Current_Nov12")
        assert page.page.evaluate("location.hash") == "#run=SDXL_Current_Nov12"
        page.wait_true("document.querySelectorAll('#chart-curves g.y2tick').length > 0")
        assert _ticks(page, "x") == [str(n) for n in range(1, 9)]
        loss_ticks = _ticks(page, "y2")
        assert len(loss_ticks) >= 3 and all(float(t) < 1 for t in loss_ticks)
        legend = page.page.eval_on_selector("#chart-curves g.legend", "g => g.textContent")
        assert "loss" in legend and "visual" in legend
        # the epoch table: every epoch a row, nothing wider than its section, no cut text
        assert page.page.locator("#epochs tbody tr").count() == 8
        for width in (1400, 800):  # a wide screen and a small laptop's
            page.page.set_viewport_size({"width": width, "height": 1000})
            page.page.wait_for_timeout(100)
            overflow = page.page.evaluate(EPOCH_TABLE_OVERFLOW)
            assert overflow == {"wider": False, "cut": []}, width
        observations = page.page.inner_text("#epochs tbody tr:nth-child(6)")
        assert "Best SDXL epoch so far, but not production quality: edges never crisp." in (
            observations
        )
        table = page.page.inner_text("#epochs")
        assert "wrong backgrounds, random pixels" in table and " BG" not in table
        ARTIFACTS.mkdir(exist_ok=True)
        page.page.screenshot(path=str(ARTIFACTS / "dashboard-run-loss.png"), full_page=True)
        # back and forward
        page.page.click("#runs tbody tr:has-text('SD15_bespoke_baby_Nov7')")
        _wait_title(page, "SD15_bespoke_baby_Nov7")
        page.page.go_back()
        _wait_title(page, "SDXL_Current_Nov12")
        page.page.go_back()
        _wait_title(page, "SD15_PERFECT_Nov9")
        page.page.go_forward()
        _wait_title(page, "SDXL_Current_Nov12")
        # the header: one time format, counts in words
        meta = page.page.inner_text("#meta")
        assert re.fullmatch(r"3 runs · data of \d{4}-\d\d-\d\d \d\d:\d\d:\d\d", meta), meta
        page.wait_true("document.getElementById('live-status').textContent.includes('checked')")
        status = page.page.inner_text("#live-status")
        assert re.fullmatch(r"live · checked \d{4}-\d\d-\d\d \d\d:\d\d:\d\d", status), status
        assert page.errors == []
    finally:
        page.close()


# at a phone's width: does the page scroll sideways, is the epoch table's box inside its
# section, and can each of its cells be read (not cut, not squeezed to a letter per line)
PAGE_FITS = """() => {
  const table = document.getElementById("epochs");
  const box = table.parentElement;
  const section = table.closest("section");
  const cells = [...table.querySelectorAll("th, td")].filter((c) => c.getClientRects().length);
  const cut = cells.filter((c) => c.scrollWidth > c.clientWidth + 1).map((c) => c.textContent);
  // a word broken in the middle: a cell narrower than its longest word
  const squeezed = cells.filter((c) => {
    const longest = Math.max(0, ...c.textContent.split(/\\s+/).map((w) => w.length));
    return longest > 0 && c.clientWidth < 0.45 * longest * 7;
  }).map((c) => c.textContent);
  const r = (n) => n.getBoundingClientRect();
  return {
    page_scrolls: document.documentElement.scrollWidth > window.innerWidth,
    box_outside: r(box).right > r(section).right + 0.5 || r(box).left < r(section).left - 0.5,
    cut, squeezed,
    table_scrolls: box.scrollWidth > box.clientWidth,
  };
}"""


def test_epoch_table_on_a_phone_and_a_small_window(
    serve: Any, browser: Any, examples_url: str, tmp_path: Path
) -> None:
    """At 375 px (a phone) and 700 px the page never scrolls sideways and the epoch table
    is a card per epoch: each value labelled ("visual 10"), nothing cut or squeezed, nothing
    to scroll in its box, the note as wide as the card; at 1280 px it is a table again."""
    _fill_every_column(examples_url, tmp_path)
    page = Page(browser, serve() + "#run=SD15_PERFECT_Nov9")
    try:
        _wait_title(page, "SD15_PERFECT_Nov9")
        page.wait_true("[...document.querySelectorAll('#epochs .thumbs img')]"
                       ".every((i) => i.complete && i.naturalWidth > 0)")  # fmt: skip
        ARTIFACTS.mkdir(exist_ok=True)
        for width in (375, 700, 1280):
            page.page.set_viewport_size({"width": width, "height": 900})
            with contextlib.suppress(AssertionError):  # Plotly redraws its charts a moment later
                page.wait_true("document.documentElement.scrollWidth <= window.innerWidth", 5)
            fits = page.page.evaluate(PAGE_FITS)
            assert fits == {"page_scrolls": False, "box_outside": False, "cut": [],
                            "squeezed": [], "table_scrolls": False}, (width, fits)  # fmt: skip
            header = page.page.is_visible("#epochs thead")
            assert header is (width == 1280), width
            first = page.page.locator("#epochs tbody tr").first
            if width < 1280:  # each value says what it is
                label = first.locator("td[data-key=visual_quality_score]").evaluate(
                    "td => getComputedStyle(td, '::before').content"
                )
                assert label == '"visual "', label
                note = first.locator("td[data-key=observations]").evaluate(
                    "td => td.getBoundingClientRect().width / td.closest('tr').clientWidth"
                )
                assert note > 0.9, note
            page.page.locator("#epochs").scroll_into_view_if_needed()
            page.page.screenshot(path=str(ARTIFACTS / f"dashboard-epochs-{width}.png"))
        assert page.errors == []
    finally:
        page.close()


def test_empty_charts_say_so(serve: Any, browser: Any, db_url: str) -> None:
    """One run without epochs or verdicts: "1 run", and every chart says in words that it
    has nothing to draw (no bare axes, no -1 tick)."""
    result = CliRunner().invoke(cli, ["--database-url", db_url, "new", "only_run",
                                      "--model-type", "SD15"])  # fmt: skip
    assert result.exit_code == 0, result.output
    page = Page(browser, serve(db_url))
    try:
        assert page.page.inner_text("#run-count") == "1 of 1 run"
        assert page.page.inner_text("#meta").startswith("1 run · data of ")
        notes = {
            chart: page.page.inner_text(f"#{chart}")
            for chart in ("chart-curves", "chart-dim", "chart-alpha", "chart-resolution",
                          "chart-model", "chart-issues")
        }  # fmt: skip
        assert notes["chart-curves"] == "No epochs recorded for this run yet."
        assert notes["chart-issues"].startswith("No failed run with issues recorded")
        assert all("quality score" in notes[c] for c in ("chart-dim", "chart-model"))
        drawn = page.page.evaluate(
            "() => document.querySelectorAll('#chart-curves svg, #chart-issues svg').length"
        )
        assert drawn == 0
        # the success chart has one bar (0 %): drawn, with no tick below zero
        ticks = page.page.eval_on_selector_all(
            "#chart-success g.ytick text", "nodes => nodes.map((n) => n.textContent)"
        )
        assert ticks and not any(t.startswith(("-", "\u2212")) for t in ticks)
        assert "No epoch is marked production-ready yet." in page.page.inner_text("#ready-epochs")
        ARTIFACTS.mkdir(exist_ok=True)
        page.page.screenshot(path=str(ARTIFACTS / "dashboard-empty.png"), full_page=True)
        assert page.errors == []
    finally:
        page.close()


def test_report_with_script_in_a_note_renders(
    browser: Any, examples_url: str, tmp_path: Path
) -> None:
    """A note holding "<!--<script>", "</script>" and U+2028 is inlined as escaped JSON:
    the report renders and shows the note as it was written."""
    _set_epochs(examples_url, "SD15_PERFECT_Nov9", observations=NASTY_NOTE)
    target = tmp_path / "report.html"
    result = CliRunner().invoke(cli, ["--database-url", examples_url, "report", "-o", str(target)])
    assert result.exit_code == 0, result.output
    html = target.read_text(encoding="utf-8")
    inlined = re.search(r'<script type="application/json" id="data">(.*?)</script>', html, re.S)
    assert inlined is not None
    assert not re.search("[<>&\u2028\u2029]", inlined.group(1))
    assert NASTY_NOTE in json.dumps(json.loads(inlined.group(1)), ensure_ascii=False)
    # a file has no headers: the report's own policy runs only its own scripts
    policy = re.search(r'<meta http-equiv="Content-Security-Policy" content="([^"]+)">', html)
    assert policy is not None and "script-src 'sha256-" in policy.group(1)
    assert html.index(policy.group(0)) < html.index("<script")
    page = Page(browser, target.as_uri() + "#run=SD15_PERFECT_Nov9")
    try:
        _wait_title(page, "SD15_PERFECT_Nov9")
        cells = page.page.eval_on_selector_all(
            "#epochs td.text", "nodes => nodes.map((n) => n.textContent)"
        )
        assert cells == [NASTY_NOTE] * 3
        assert page.page.locator("#epochs b").count() == 0  # text, never markup
        ARTIFACTS.mkdir(exist_ok=True)
        page.page.screenshot(path=str(ARTIFACTS / "report-script-note.png"), full_page=True)
        assert page.errors == []
    finally:
        page.close()


def test_page_writes_through_the_gate(
    serve: Any, browser: Any, examples_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """ltWrite.post (static/write.js) writes with the page's token; on a --token server
    it asks for the token once; on a --read-only server it refuses and the page says
    read-only."""
    monkeypatch.setitem(writes.WRITE_ROUTES, ROUTE, _set_visual)
    post = "(v) => ltWrite.post('api/test/visual', {run: 'SD15_PERFECT_Nov9', epoch: 7, visual: v})"
    page = Page(browser, serve())
    try:
        assert page.page.evaluate("ltWrite.mode") == "on"
        assert page.page.evaluate(post, 3) == {"visual": 3}
        assert _visual(examples_url) == 3
        refused = page.page.evaluate(f"({post})(11).then(() => 'saved', (e) => e.message)")
        assert "visual_quality_score" in refused and _visual(examples_url) == 3
        assert page.page.is_hidden("#write-mode")
    finally:
        page.close()
    page = Page(browser, serve(token="a-token-to-type-in"))
    asked: list[str] = []

    def answer(dialog: Any) -> None:
        asked.append(dialog.message)
        dialog.accept("a-token-to-type-in")

    page.page.on("dialog", answer)
    try:
        assert page.page.evaluate("ltWrite.mode") == "ask"
        assert page.page.evaluate(post, 4) == {"visual": 4}
        assert page.page.evaluate(post, 5) == {"visual": 5}
        assert len(asked) == 1  # once per tab
        assert _visual(examples_url) == 5
    finally:
        page.close()
    page = Page(browser, serve(read_only=True))
    try:
        assert page.page.inner_text("#write-mode") == "read-only"
        assert page.page.evaluate("document.documentElement.classList.contains('lt-writes-off')")
        refused = page.page.evaluate(f"({post})(1).then(() => 'saved', (e) => e.message)")
        assert "read-only" in refused and _visual(examples_url) == 5
        assert page.errors == []
    finally:
        page.close()
