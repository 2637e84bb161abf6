"""The judging view, in headless Chromium (Debian's) driven by Playwright: a run judged
with the keyboard alone lands in the database exactly; a refused change shows its error
and changes nothing; undo restores; a second page sees a change. The write routes are also
called directly, without a browser."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from click.testing import CliRunner
from psycopg.rows import dict_row

from lora_tracker.cli import cli
from lora_tracker.dashboard import writes
from lora_tracker.dashboard.server import make_server
from lora_tracker.errors import LoraTrackerError
from lora_tracker.settings import Target

from .browser import CHROMIUM, chromium, live_dashboard
from .conftest import ROOT
from .judge_data import JudgingRun, db_rows, make_judging_run

ARTIFACTS = ROOT / "tests" / "artifacts"

needs_chromium = pytest.mark.skipif(
    CHROMIUM is None and not os.environ.get("CI"), reason="chromium is not installed"
)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with chromium() as launched:
        yield launched


@pytest.fixture
def judged(db_url: str, tmp_path: Path) -> JudgingRun:
    """A 10-epoch x 4-prompt run with real images linked as capture links them (one row per
    image, keyed by its SHA-256); epoch 3 has sample images only."""
    return make_judging_run(db_url, tmp_path / "images", samples_only=(3,), linked=True)


@pytest.fixture
def judged_by_hand(db_url: str, tmp_path: Path) -> JudgingRun:
    """The same run, its images recorded as `prompt score --image` records them (the
    person's own row per epoch and prompt)."""
    return make_judging_run(db_url, tmp_path / "images", samples_only=(3,))


@pytest.fixture
def live(db_url: str) -> Iterator[str]:
    with live_dashboard(db_url) as url:
        yield url


class JudgePage:
    """The judging view of one run, with its console errors collected."""

    def __init__(self, browser: Any, url: str, run: str, poll_ms: int = 300) -> None:
        self.context = browser.new_context(viewport={"width": 1400, "height": 900})
        self.page = self.context.new_page()
        self.errors: list[str] = []
        self.page.on("console", lambda m: self.errors.append(m.text) if m.type == "error" else None)
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))
        self.page.goto(f"{url}judge#run={run}&poll={poll_ms}")
        self.page.wait_for_selector("#ready:has-text('ready')", state="attached", timeout=30000)

    def wait_true(self, expression: str, timeout_s: float = 20.0) -> None:
        """Wait until a JavaScript expression is true, polled from here: wait_for_function
        evals a string, which the page's CSP forbids."""
        deadline = time.monotonic() + timeout_s
        while not self.page.evaluate(f"() => Boolean({expression})"):
            assert time.monotonic() < deadline, f"still false after {timeout_s}s: {expression}"
            self.page.wait_for_timeout(30)

    def keys(self, *keys: str) -> None:
        for key in keys:
            self.page.keyboard.press(key)

    def settled(self) -> str:
        """Wait until every write is answered; the status line."""
        self.wait_true("document.getElementById('ready').dataset.pending === '0'")
        return str(self.page.inner_text("#status"))

    def epoch_text(self, number: int) -> str:
        row = self.page.locator("#grid tbody tr", has=self.page.locator(f"th:text-is('{number}')"))
        return str(row.locator("td.epoch-info").inner_text())

    def shot(self, name: str) -> None:
        ARTIFACTS.mkdir(exist_ok=True)
        self.page.screenshot(path=str(ARTIFACTS / name))
        assert (ARTIFACTS / name).stat().st_size > 10_000

    def close(self) -> None:
        self.context.close()


def epoch_rows(url: str, run_id: int) -> dict[int, dict[str, Any]]:
    rows = db_rows(
        url,
        "SELECT * FROM epoch_results WHERE training_run_id = %s ORDER BY epoch_number",
        (run_id,),
    )
    return {r["epoch_number"]: r for r in rows}


SCORED = ("visual_quality_score", "style_match_score", "prompt_adherence_score", "verdict",
          "has_wrong_backgrounds", "has_random_pixels", "is_photorealistic", "production_ready",
          "observations")  # fmt: skip


@needs_chromium
def test_keyboard_session_scores_a_run(
    browser: Any, live: str, judged: JudgingRun, db_url: str
) -> None:
    """Scored with the keyboard alone, epoch by epoch and prompt by prompt, the database
    holds exactly the values typed, and nothing else changed."""
    before = epoch_rows(db_url, judged.run_id)
    page = JudgePage(browser, live, judged.name)
    verdicts = ["failure", "skip", "acceptable", "good", "good", "best", "good", "acceptable",
                "skip", "failure"]  # fmt: skip
    verdict_key = {"best": "b", "good": "g", "acceptable": "a", "skip": "s", "failure": "f"}
    prompt_key = {"pass": "z", "partial": "x", "fail": "c"}
    expected: dict[int, dict[str, Any]] = {}
    expected_prompts: dict[tuple[int, str], str] = {}
    try:
        page.wait_true("document.activeElement === document.body")
        for i, number in enumerate(judged.epochs):
            visual, style, adherence = (i + 1) % 10, (i + 3) % 10, (2 * i) % 10
            page.keys(str(visual), "Tab", str(style), "Tab", str(adherence), "Tab")
            if number == 10:  # 10 is 9 and one up
                page.keys("9", "+")
                visual = 10
            page.keys(verdict_key[verdicts[i]])
            row: dict[str, Any] = {
                "visual_quality_score": visual, "style_match_score": style,
                "prompt_adherence_score": adherence, "verdict": verdicts[i],
                "has_wrong_backgrounds": i % 3 == 0, "has_random_pixels": i >= 8,
                "is_photorealistic": False, "production_ready": number == 6,
                "observations": "crisp outlines, slight colour bleed" if number == 6 else None,
            }  # fmt: skip
            if row["has_wrong_backgrounds"]:
                page.keys("w")
            if row["has_random_pixels"]:
                page.keys("r", "p", "p")  # photorealistic on and off again
            if row["production_ready"]:
                page.keys("y", "n")
                page.page.wait_for_selector("#note-editor:not([hidden])")
                page.page.keyboard.type(row["observations"])
                page.keys("Enter")
            expected[number] = row
            if number not in (3,):  # epoch 3 has sample images only
                for j, prompt in enumerate(sorted(judged.prompts)):  # the page's columns
                    mark = ("pass", "partial", "fail")[(i + j) % 3]
                    page.keys(prompt_key[mark], "ArrowRight")
                    expected_prompts[(number, prompt)] = mark
                page.keys(*["ArrowLeft"] * len(judged.prompts))
            page.keys("ArrowDown")
        status = page.settled()
        assert status.startswith("Saved"), status
        assert page.errors == []
        after = epoch_rows(db_url, judged.run_id)
        for number, row in expected.items():
            assert {k: after[number][k] for k in SCORED} == row, f"epoch {number}"
            # what the page does not judge is left alone
            assert after[number]["loss"] == before[number]["loss"]
            assert after[number]["sample_images"] == before[number]["sample_images"]
        results = db_rows(
            db_url,
            "SELECT er.epoch_number, tp.prompt_name, ptr.verdict, ptr.score, ptr.image_path "
            "FROM prompt_test_results ptr JOIN epoch_results er ON er.id = ptr.epoch_result_id "
            "JOIN test_prompts tp ON tp.id = ptr.test_prompt_id WHERE er.training_run_id = %s",
            (judged.run_id,),
        )
        assert len(results) == 9 * 4  # no result made where there was none
        assert {(r["epoch_number"], r["prompt_name"]): r["verdict"] for r in results} == (
            expected_prompts
        )
        assert all(r["score"] is None and r["image_path"] for r in results)
        # the grid shows thumbnails, made once and cached under the data folder
        first = page.page.locator("#grid td.cell img").first
        assert "api/thumb?" in str(first.get_attribute("src"))
        page.wait_true("document.querySelector('#grid td.cell img').naturalWidth > 0")
        cached = list((Path(os.environ["LORA_TRACKER_HOME"]) / "thumbnails").rglob("*.webp"))
        assert len(cached) >= 4
        # the page shows what it saved
        assert "V 10" in page.epoch_text(10) and "failure" in page.epoch_text(10)
        assert "wrong backgrounds" in page.epoch_text(1)
        # screenshots of each view, looked at by a person
        page.keys("ArrowUp", "ArrowUp", "ArrowUp", "ArrowUp", "ArrowRight")
        page.page.wait_for_timeout(1300)  # the saved rows' flash fades
        assert "10 epochs (10 scored)" in page.page.inner_text("#run-meta")
        page.shot("judge-grid.png")
        page.keys("m", "ArrowUp", "v")  # B: epoch 6, A: epoch 5
        page.page.wait_for_selector("#ab-view:not([hidden]) .ab-pair")
        assert "A epoch 5" in page.page.inner_text(".ab-head")
        assert "B epoch 6" in page.page.inner_text(".ab-head")
        page.shot("judge-ab.png")
        page.keys("v")
        page.page.wait_for_selector("#strip-view:not([hidden]) figure")
        assert page.page.locator("#strip-view figure").count() == 10
        page.shot("judge-strip.png")
        page.keys("?")
        assert "production-ready" in page.page.inner_text("#help")
        page.shot("judge-help.png")
        page.keys("Escape", "v", "Enter")
        page.wait_true("document.getElementById('lightbox-image').naturalWidth > 0")
        page.keys("Escape")
        assert page.errors == []
    finally:
        page.close()


@needs_chromium
def test_refused_change_shows_its_error(
    browser: Any, live: str, judged: JudgingRun, db_url: str
) -> None:
    """`+` at 10 and `-` at 0, a quality of 11 or 2.5 are out of range: the page says so in
    its status line and sends nothing. A best epoch that is no longer recorded is refused by
    the server with the library's one-line error, shown on the page, and changes nothing."""
    page = JudgePage(browser, live, judged.name, poll_ms=60000)  # no refresh during the test
    posted: list[str] = []
    page.page.on("request", lambda r: posted.append(r.url) if r.method == "POST" else None)
    try:
        page.keys("9", "+")
        assert "visual 9 → 10" in page.settled()
        assert len(posted) == 2
        page.keys("+")
        status = page.settled()
        assert status == "Epoch 1 · visual is already 10: scores go from 0 to 10 (nothing sent).", (
            status
        )
        assert page.page.get_attribute("#status", "class") == "err"
        page.shot("judge-already-10.png")
        page.keys("Tab", "0")  # style: 0, then one down
        page.settled()
        page.keys("-")
        status = page.settled()
        assert "style is already 0: scores go from 0 to 10 (nothing sent)" in status, status
        page.keys("+")
        assert "style 0 → 1" in page.settled()
        assert len(posted) == 4, posted  # 9, +, 0, + : neither refused key sent anything
        row = epoch_rows(db_url, judged.run_id)[1]
        assert (row["visual_quality_score"], row["style_match_score"]) == (10, 1)
        assert "V 10" in page.epoch_text(1) and "S 1" in page.epoch_text(1)
        # the form: a quality of 11, then 2.5: said, not sent, the field shows the saved value
        for typed in ("11", "2.5"):
            page.page.fill("#verdict-form [name=quality_score]", typed)
            page.page.keyboard.press("Tab")
            status = page.settled()
            assert status == (f'Not saved · run verdict: quality "{typed}" is not a whole number '
                              "from 0 to 10 (nothing sent)."), status  # fmt: skip
            assert page.page.input_value("#verdict-form [name=quality_score]") == ""
        assert len(posted) == 4, posted
        page.page.fill("#verdict-form [name=quality_score]", "10")
        page.page.keyboard.press("Tab")
        assert "quality (none) → 10" in page.settled()
        # a best epoch removed by someone else after the page loaded: the server refuses it
        result = CliRunner().invoke(
            cli, ["--database-url", db_url, "epoch", "remove", judged.name, "10", "--yes"]
        )
        assert result.exit_code == 0, result.output
        page.page.select_option("#verdict-form [name=best_epoch]", "10")
        status = page.settled()
        assert f"{judged.name} has no epoch 10 recorded" in status, status
        assert page.page.get_attribute("#status", "class") == "err"
        run = db_rows(db_url, "SELECT * FROM training_runs WHERE id = %s", (judged.run_id,))[0]
        assert run["best_epoch"] is None and run["quality_score"] == 10
        # and a good one is saved
        page.page.select_option("#verdict-form [name=best_epoch]", "6")
        assert "best epoch (none) → 6" in page.settled()
        # the browser logs the refused request (and, when the page asked for one of the
        # removed epoch's images before it re-read the run, that 404); nothing else went wrong
        assert len(page.errors) >= 1, page.errors
        assert all(e.startswith("Failed to load resource") and ("400" in e or "404" in e)
                   for e in page.errors), page.errors  # fmt: skip
    finally:
        page.close()


@needs_chromium
def test_undo_restores_the_previous_value(
    browser: Any, live: str, judged: JudgingRun, db_url: str
) -> None:
    """`u` puts back the value before the last change, through the same write route; a
    second `u` the one before that."""
    page = JudgePage(browser, live, judged.name)
    try:
        page.keys("7")
        page.settled()
        page.keys("4", "w")
        page.settled()
        row = epoch_rows(db_url, judged.run_id)[1]
        assert (row["visual_quality_score"], row["has_wrong_backgrounds"]) == (4, True)
        page.keys("u")
        assert "Undone" in page.settled()
        row = epoch_rows(db_url, judged.run_id)[1]
        assert (row["visual_quality_score"], row["has_wrong_backgrounds"]) == (4, False)
        page.keys("u")
        assert "visual 4 → 7" in page.settled()
        page.keys("u")
        page.settled()
        assert epoch_rows(db_url, judged.run_id)[1]["visual_quality_score"] is None
        # a prompt result and the run's verdict undo too
        page.keys("z")
        page.settled()
        page.page.select_option("#verdict-form [name=overall_verdict]", "success")
        page.settled()
        run = db_rows(db_url, "SELECT * FROM training_runs WHERE id = %s", (judged.run_id,))[0]
        assert (run["overall_verdict"], run["status"]) == ("success", "completed")
        page.page.focus("body")
        page.page.evaluate("document.activeElement.blur()")
        page.keys("u")
        page.settled()
        run = db_rows(db_url, "SELECT * FROM training_runs WHERE id = %s", (judged.run_id,))[0]
        assert (run["overall_verdict"], run["status"]) == ("pending", "in_progress")
        assert page.page.input_value("#verdict-form [name=overall_verdict]") == "pending"
        page.keys("u")
        page.settled()
        verdicts = db_rows(
            db_url,
            "SELECT ptr.verdict FROM prompt_test_results ptr "
            "JOIN epoch_results er ON er.id = ptr.epoch_result_id "
            "WHERE er.training_run_id = %s AND ptr.verdict IS NOT NULL",
            (judged.run_id,),
        )
        assert verdicts == []
        page.keys("u")
        assert "Nothing to undo" in page.settled()
        assert page.errors == []
    finally:
        page.close()


@needs_chromium
def test_second_page_sees_a_change(
    browser: Any, live: str, judged: JudgingRun, db_url: str
) -> None:
    """Two pages on the same run: each shows the other's change, and the CLI's, within its
    refresh."""
    first = JudgePage(browser, live, judged.name)
    second = JudgePage(browser, live, judged.name)
    try:
        first.keys("6", "g")
        first.settled()
        second.wait_true(
            "document.querySelector('#grid tbody tr td.epoch-info').innerText.includes('good')", 10
        )
        assert "V 6" in second.epoch_text(1)
        second.keys("ArrowDown", "ArrowDown", "c")  # epoch 3 has no prompt results: refused
        assert "no prompt results" in second.page.inner_text("#status")
        second.keys("ArrowUp", "x")
        second.settled()
        first.page.wait_for_selector("#grid tbody tr[data-row='1'] .badge:has-text('partial')")
        result = CliRunner().invoke(
            cli, ["--database-url", db_url, "score", judged.name, "9", "--visual", "2"]
        )
        assert result.exit_code == 0, result.output
        for page in (first, second):
            page.wait_true(
                "document.querySelector('#grid tbody tr[data-row=\"8\"] td.epoch-info')"
                ".innerText.includes('V 2')",
                10,
            )
        assert first.errors == [] and second.errors == []
    finally:
        first.close()
        second.close()


def test_a_change_committed_while_the_view_is_read_is_never_missed(
    judged: JudgingRun, db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each statement of the judging view sees what is committed when it starts. A change
    committed just before its version is read must be in the view's data, or its version
    must differ from the run's version after the change (then the page's poll reloads).
    With the version read last, the data lacked the change and the version held it: the
    page never showed it (test_second_page_sees_a_change failed so, once in a while)."""
    from lora_tracker.dashboard import data

    original = data.judging_version
    changed: list[bool] = []

    def change_first(conn: Any, run_id: int) -> str:
        if not changed:  # another page's write, committed at this moment
            changed.append(True)
            with psycopg.connect(db_url, autocommit=True) as other:
                other.execute(
                    "UPDATE epoch_results SET verdict = 'good' "
                    "WHERE training_run_id = %s AND epoch_number = 1",
                    (run_id,),
                )
        return original(conn, run_id)

    monkeypatch.setattr(data, "judging_version", change_first)
    with psycopg.connect(db_url, row_factory=dict_row) as conn, conn.transaction():
        view = data.judging_view(conn, judged.name)
    with psycopg.connect(db_url, row_factory=dict_row) as conn:
        now = original(conn, judged.run_id)
    first = next(e for e in view["epochs"] if e["epoch_number"] == 1)
    assert changed and (first["verdict"] == "good" or view["version"] != now)


# -- the write routes, without a browser ----------------------------------------------------


@pytest.fixture
def wconn(db_url: str) -> Iterator[psycopg.Connection[dict[str, Any]]]:
    with psycopg.connect(db_url, row_factory=dict_row) as conn:
        yield conn


def test_write_routes_call_the_judging_rules(
    wconn: psycopg.Connection[dict[str, Any]], judged_by_hand: JudgingRun
) -> None:
    """Each route changes what it names and says what changed; a bad value, an unknown
    field, an unrecorded epoch or a missing run is refused with one line and changes
    nothing."""
    judged = judged_by_hand
    route = writes.WRITE_ROUTES
    with wconn.transaction():
        done = route["/api/judge/epoch"](
            wconn, {"run": judged.name, "epoch": 2, "fields": {"visual_quality_score": 8}}
        )
    assert done["epoch"]["visual_quality_score"] == 8
    assert done["changes"] == [{"field": "visual_quality_score", "before": None, "after": 8}]
    refused: list[tuple[str, dict[str, Any], str]] = [
        ("/api/judge/epoch", {"run": judged.name, "epoch": 2,
                              "fields": {"visual_quality_score": 11}}, "11"),
        ("/api/judge/epoch", {"run": judged.name, "epoch": 2,
                              "fields": {"checkpoint_path": "/x"}}, "checkpoint_path"),
        ("/api/judge/epoch", {"run": judged.name, "epoch": 99,
                              "fields": {"visual_quality_score": 1}}, "1-10 recorded"),
        ("/api/judge/epoch", {"run": judged.name, "epoch": True,
                              "fields": {"verdict": "good"}}, "whole number"),
        ("/api/judge/epoch", {"run": "nope_no_run", "epoch": 1,
                              "fields": {"verdict": "good"}}, "nope_no_run"),
        ("/api/judge/prompt", {"run": judged.name, "epoch": 1, "prompt": judged.prompts[0],
                               "fields": {"verdict": "great"}}, "verdict"),
        ("/api/judge/verdict", {"run": judged.name, "fields": {"best_epoch": 42}},
         "no epoch 42 recorded"),
        ("/api/judge/verdict", {"run": judged.name, "fields": {}}, "nothing to set"),
    ]  # fmt: skip
    for path, body, words in refused:
        with pytest.raises(LoraTrackerError) as error, wconn.transaction():
            route[path](wconn, body)
        message = str(error.value)
        assert words in message and "\n" not in message, message
    epoch = wconn.execute(
        "SELECT visual_quality_score, checkpoint_path FROM epoch_results "
        "WHERE training_run_id = %s AND epoch_number = 2",
        (judged.run_id,),
    ).fetchone()
    assert epoch is not None and epoch["visual_quality_score"] == 8
    assert epoch["checkpoint_path"] != "/x"
    with wconn.transaction():
        done = route["/api/judge/verdict"](
            wconn, {"run": judged.run_id, "fields": {"best_epoch": 2, "issues_found": ["halo"]}}
        )
    assert done["run"]["best_epoch"] == 2 and done["run"]["issues_found"] == ["halo"]
    with wconn.transaction():
        done = route["/api/judge/prompt"](
            wconn,
            {"run": judged.name, "epoch": 1, "prompt": judged.prompts[1],
             "fields": {"verdict": "pass", "score": 7}},
        )  # fmt: skip
    assert (done["result"]["verdict"], done["result"]["score"]) == ("pass", 7)
    assert done["result"]["image_path"]  # the image row was judged, not a new one made


@needs_chromium
def test_dashboard_links_to_the_judging_view_and_read_only_judges_nothing(
    browser: Any, judged: JudgingRun, db_url: str
) -> None:
    """The run view links to the judging view of its run; on a --read-only server the view
    shows the run but a key changes nothing and says why."""
    home = Path(os.environ["LORA_TRACKER_HOME"])
    server = make_server(Target(db_url, "--database-url", home), port=0, read_only=True)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1})
    thread.start()
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    try:
        page = context.new_page()
        page.goto(server.url + f"#run={judged.name}")
        page.wait_for_selector("#ready:has-text('ready')", state="attached", timeout=30000)
        page.click("#judge-link")
        page.wait_for_selector("#ready:has-text('ready')", state="attached", timeout=30000)
        assert page.url.endswith(f"/judge#run={judged.name}")
        assert page.inner_text("#title") == f"Judge {judged.name}"
        assert "Read-only" in page.inner_text("#status")
        page.keyboard.press("7")
        page.keyboard.press("z")
        assert "read-only" in page.inner_text("#status")
        assert page.is_disabled("#verdict-form [name=overall_verdict]")
        assert epoch_rows(db_url, judged.run_id)[1]["visual_quality_score"] is None
        assert "V \u2013" in page.inner_text("#grid tbody tr td.epoch-info")  # no score
    finally:
        context.close()
        server.shutdown()
        server.server_close()
        thread.join(5)


def test_write_route_scores_a_linked_image_by_its_id(
    wconn: psycopg.Connection[dict[str, Any]], judged: JudgingRun
) -> None:
    """A linked image's result is scored on its own row (no second row for the epoch and
    prompt); a result id of another run is refused and changes nothing."""
    from lora_tracker import runs
    from lora_tracker.models import RunCreate

    image_rows = wconn.execute(
        "SELECT ptr.id, ptr.result_key FROM prompt_test_results ptr "
        "JOIN epoch_results er ON er.id = ptr.epoch_result_id "
        "WHERE er.training_run_id = %s AND er.epoch_number = 2 ORDER BY ptr.id",
        (judged.run_id,),
    ).fetchall()
    assert len(image_rows) == 4 and all(r["result_key"].startswith("image:") for r in image_rows)
    route = writes.WRITE_ROUTES["/api/judge/prompt"]
    with wconn.transaction():
        done = route(wconn, {"run": judged.name, "result": image_rows[1]["id"],
                             "fields": {"verdict": "partial"}})  # fmt: skip
    assert done["result"]["id"] == image_rows[1]["id"]
    assert done["changes"] == [{"field": "verdict", "before": None, "after": "partial"}]
    with wconn.transaction():
        other = runs.create_run(wconn, RunCreate(run_name="another_run"))
    with pytest.raises(LoraTrackerError, match="not one of another_run's"), wconn.transaction():
        route(wconn, {"run": other.id, "result": image_rows[2]["id"],
                      "fields": {"verdict": "fail"}})  # fmt: skip
    after = wconn.execute(
        "SELECT ptr.id, ptr.verdict FROM prompt_test_results ptr "
        "JOIN epoch_results er ON er.id = ptr.epoch_result_id "
        "WHERE er.training_run_id = %s AND er.epoch_number = 2 ORDER BY ptr.id",
        (judged.run_id,),
    ).fetchall()
    assert [r["verdict"] for r in after] == [None, "partial", None, None]


def test_judging_reads_refuse_bad_requests(
    live: str, judged: JudgingRun, db_url: str, tmp_path: Path
) -> None:
    """The view's data, version and thumbnails: one-line JSON refusals for a bad run, a NUL,
    a non-ASCII digit, a size not offered, an unknown or non-raster image; a recorded image's
    thumbnail is a WebP."""
    import json
    import urllib.error
    import urllib.parse
    import urllib.request

    def get(path: str) -> tuple[int, str, bytes]:
        try:
            with urllib.request.urlopen(live + path) as response:
                return response.status, response.headers["Content-Type"], response.read()
        except urllib.error.HTTPError as error:
            return error.code, error.headers["Content-Type"], error.read()

    status, kind, body = get(f"api/judge?run={judged.name}")
    assert status == 200 and len(json.loads(body)["epochs"]) == 10
    image = urllib.parse.quote(str(judged.images[-1]))
    status, kind, body = get(f"api/thumb?size=128&path={image}")
    assert (status, kind, body[:4], body[8:12]) == (200, "image/webp", b"RIFF", b"WEBP")
    svg = tmp_path / "drawing.svg"
    svg.write_text('<svg xmlns="http://www.w3.org/2000/svg"><script>alert(1)</script></svg>')
    result = CliRunner().invoke(cli, ["--database-url", db_url, "prompt", "score", judged.name,
                                      "2", judged.prompts[0], "--image", str(svg)])  # fmt: skip
    assert result.exit_code == 0, result.output
    refused = {
        "api/judge?run=no_such_run": 404,
        "api/judge?run=%00": 400,
        "api/judge/version?run=%D9%A3": 400,  # an Arabic-Indic 3
        f"api/thumb?size=300&path={image}": 400,
        "api/thumb?path=%2Fetc%2Fpasswd": 404,
        "api/thumb?path=a%00b": 400,
        f"api/thumb?path={urllib.parse.quote(str(svg))}": 404,
    }
    for path, expected in refused.items():
        status, kind, body = get(path)
        assert (status, kind) == (expected, "application/json"), path
        assert "\n" not in json.loads(body)["error"]


def test_a_run_looked_at_has_its_thumbnails_made_ahead(live: str, judged: JudgingRun) -> None:
    """Opening a run in the dashboard (api/run/ID) makes its judging grid's thumbnails in
    the background, before the judging view asks for them."""
    import urllib.request

    from lora_tracker.image_results import file_sha256
    from lora_tracker.thumbnails import cached_path

    home = Path(os.environ["LORA_TRACKER_HOME"])
    wanted = [cached_path(file_sha256(p), size, home) for p in judged.images for size in (128, 256)]
    assert not any(p.exists() for p in wanted)
    with urllib.request.urlopen(f"{live}api/run/{judged.run_id}") as response:
        assert response.status == 200
    deadline = time.monotonic() + 60
    while not all(p.exists() for p in wanted):
        assert time.monotonic() < deadline, [p for p in wanted if not p.exists()][:3]
        time.sleep(0.1)


def test_the_newest_runs_have_their_thumbnails_made_at_start(
    db_url: str, judged: JudgingRun
) -> None:
    """`lora-tracker dashboard` makes the newest runs' thumbnails in the background as it
    starts, so a judging view opened at once on a new run finds them made."""
    from lora_tracker.image_results import file_sha256
    from lora_tracker.thumbnails import cached_path

    home = Path(os.environ["LORA_TRACKER_HOME"])
    wanted = [cached_path(file_sha256(p), size, home) for p in judged.images for size in (128, 256)]
    assert not any(p.exists() for p in wanted)
    server = make_server(Target(db_url, "--database-url", home), port=0)
    try:
        server.warm_recent().join(10)
        deadline = time.monotonic() + 60
        while not all(p.exists() for p in wanted):
            assert time.monotonic() < deadline, [p for p in wanted if not p.exists()][:3]
            time.sleep(0.1)
    finally:
        server.server_close()


@needs_chromium
def test_prompt_headers_tell_prompts_with_the_same_start_apart(
    browser: Any, live: str, db_url: str, tmp_path: Path
) -> None:
    """`lora-tracker images` names a new test prompt by its text, and a person's test prompts
    often start alike ("pixel art baby, ..."): the grid's column headers wrap rather than cut
    each name to the same first words, and the header counts prompts, not columns."""
    judged = make_judging_run(db_url, tmp_path / "images", epochs=2, prompts=2, linked=True)
    names = ["pixel art baby, sitting on the floor, simple background",
             "pixel art baby, waving hand, simple background"]  # fmt: skip
    with psycopg.connect(db_url) as conn:
        ids = [r[0] for r in conn.execute("SELECT id FROM test_prompts ORDER BY id").fetchall()]
        for prompt_id, name in zip(ids, names, strict=True):
            conn.execute(
                "UPDATE test_prompts SET prompt_name = %s WHERE id = %s", (name, prompt_id)
            )
        long_text = ", ".join(["pixel art baby"] + [f"detail {n}" for n in range(80)])
        conn.execute("UPDATE test_prompts SET prompt_text = %s", (long_text,))
    page = JudgePage(browser, live, judged.name, poll_ms=60000)
    try:
        heads = page.page.locator("#grid thead th .pname")
        assert sorted(heads.all_inner_texts()) == names
        clipped = page.page.evaluate(
            "() => [...document.querySelectorAll('#grid thead th')].slice(2).map((th) => {"
            " const name = th.querySelector('.pname');"
            " return name.scrollHeight > name.clientHeight || th.scrollWidth > th.clientWidth; })"
        )
        assert clipped == [False, False]
        assert page.page.inner_text("#run-meta").endswith("2 prompts")
        # a long prompt's text under the focused image is cut to 3 lines, its file first
        caption = page.page.locator("#focus-caption")
        assert ".png — pixel art baby, detail 0" in caption.inner_text()
        assert caption.evaluate("(c) => c.scrollHeight > c.clientHeight && c.clientHeight < 60")
        assert "detail 79" in str(caption.get_attribute("title"))
        assert page.errors == []
    finally:
        page.close()


@needs_chromium
def test_unknown_run_shows_one_line_and_no_form(browser: Any, live: str, db_url: str) -> None:
    """A mistyped run in the link: the page says so in one line and shows no buttons or
    verdict form to click (they could only be refused); keys do nothing."""
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    try:
        page.goto(f"{live}judge#run=no_such_run_here")
        page.wait_for_selector("#status.err")
        assert "Cannot show no_such_run_here: no run named" in page.inner_text("#status")
        assert not page.is_visible("aside") and not page.is_visible("#verdict-form")
        page.keyboard.press("g")
        page.keyboard.press("5")
        assert errors == []
    finally:
        context.close()


@needs_chromium
def test_prompt_columns_follow_the_prompts_file(
    browser: Any, live: str, db_url: str, tmp_path: Path
) -> None:
    """A run whose sample images capture linked from its kohya prompts file: the judging
    view's columns and the dashboard's epoch x prompt grid follow the file's lines (not the
    names, which sort the other way), a prompt scored by hand after them."""
    from .test_kohya_samples import PROMPTS_TXT, RUN_1, sim, watch_once

    prompts = tmp_path / "prompts.txt"
    prompts.write_text(PROMPTS_TXT)
    sim(tmp_path / "out").run()
    watch_once(db_url, tmp_path / "out", "--prompts", str(prompts))
    for args in (["prompt", "add", "a close-up", "--text", "close-up of pixelbaby"],
                 ["prompt", "score", RUN_1, "2", "a close-up", "--verdict", "pass"]):  # fmt: skip
        result = CliRunner().invoke(cli, ["--database-url", db_url, *args])
        assert result.exit_code == 0, result.output
    wanted = ["portrait of pixelbaby", "pixelbaby on a beach", "# pixelbaby, hashtag style",
              "a close-up"]  # fmt: skip
    page = JudgePage(browser, live, RUN_1, poll_ms=60000)
    try:
        assert page.page.locator("#grid thead th .pname").all_inner_texts() == wanted
        page.shot("judge-prompts-file-order.png")
        assert page.errors == []
    finally:
        page.close()
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    dashboard = context.new_page()
    try:
        dashboard.goto(f"{live}#run={RUN_1}")
        dashboard.wait_for_selector(f"#grid thead th:text-is('{wanted[0]}')")
        assert dashboard.locator("#grid thead th").all_inner_texts() == ["epoch", *wanted]
    finally:
        context.close()


@needs_chromium
def test_judging_view_on_a_phone(browser: Any, live: str, judged: JudgingRun) -> None:
    """At 375 px (a phone) and 700 px the judging page does not scroll sideways: the grid
    comes first (scrolling in its own box when wider), the scores and the verdict form
    below it at the screen's width, every score button on screen; a tap on a score saves."""
    page = JudgePage(browser, live, judged.name, poll_ms=60000)
    try:
        for width in (375, 700):
            page.page.set_viewport_size({"width": width, "height": 800})
            page.page.wait_for_timeout(150)
            found = page.page.evaluate(
                """() => {
                  const r = (s) => document.querySelector(s).getBoundingClientRect();
                  const buttons = [...document.querySelectorAll('#scores button')]
                    .map((b) => b.getBoundingClientRect());
                  return {
                    page_scrolls: document.documentElement.scrollWidth > window.innerWidth,
                    board_width: Math.round(r('#board').width),
                    aside_below: r('aside').top >= r('#board').bottom - 1,
                    aside_width: Math.round(r('aside').width),
                    off_screen: buttons.filter((b) => b.right > window.innerWidth).length,
                  };
                }"""
            )
            assert found == {"page_scrolls": False, "board_width": width, "aside_below": True,
                             "aside_width": width, "off_screen": 0}, (width, found)  # fmt: skip
            page.page.screenshot(path=str(ARTIFACTS / f"judge-{width}.png"), full_page=True)
        page.page.locator("#scores .score-row").first.locator("button", has_text="7").click()
        assert "visual (none) → 7" in page.settled()
        assert page.errors == []
    finally:
        page.close()


@needs_chromium
def test_a_run_deleted_while_its_page_is_open(
    browser: Any, live: str, judged: JudgingRun, db_url: str
) -> None:
    """`lora-tracker delete` while judging pages are open: a page says the run is no longer
    recorded (not that the server stopped answering), greys the grid and sends nothing
    more, whether it notices by polling or by a key pressed before it knew."""
    keyed = JudgePage(browser, live, judged.name, poll_ms=60000)  # notices on a write
    polled = JudgePage(browser, live, judged.name)  # notices by polling
    posted: list[str] = []
    keyed.page.on("request", lambda r: posted.append(r.url) if r.method == "POST" else None)
    try:
        result = CliRunner().invoke(cli, ["--database-url", db_url, "delete", judged.name, "--yes"])
        assert result.exit_code == 0, result.output
        for page in (polled, keyed):
            if page is keyed:
                page.keys("5")  # sent before the page knows: refused by the server
            page.page.wait_for_selector("body.run-gone")
            status = page.page.inner_text("#status")
            assert f"{judged.name} is no longer recorded (deleted?)" in status, status
            assert page.page.inner_text("#live") == "run deleted"
        sent = len(posted)
        keyed.keys("6", "g")
        assert f"{judged.name} is no longer recorded" in keyed.page.inner_text("#status")
        assert len(posted) == sent  # nothing more sent
    finally:
        keyed.close()
        polled.close()


@needs_chromium
def test_judging_on_a_touch_phone(browser: Any, live: str, judged: JudgingRun) -> None:
    """A touch phone (375 px): tapping a cell of the grid brings the scores into view (they
    sit below the grid), the score buttons are a finger high, the key hints are not shown,
    and "back to the grid" returns to the cell being judged; a tapped score saves."""
    context = browser.new_context(
        viewport={"width": 375, "height": 700}, is_mobile=True, has_touch=True
    )
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    try:
        page.goto(f"{live}judge#run={judged.name}&poll=60000")
        page.wait_for_selector("#ready:has-text('ready')", state="attached", timeout=30000)
        cell = page.locator('#grid tbody tr[data-row="7"] td.cell').first
        cell.scroll_into_view_if_needed()
        cell.tap()
        seen = page.evaluate(
            """() => {
              const aside = document.querySelector('aside').getBoundingClientRect();
              const buttons = [...document.querySelectorAll('#scores .score-row button')];
              return {
                aside_on_screen: aside.top >= -1 && aside.top < window.innerHeight / 2,
                lowest_button: Math.min(...buttons.map((b) => b.getBoundingClientRect().height)),
                keys_shown: [...document.querySelectorAll('kbd')]
                  .filter((k) => k.getClientRects().length > 0).length,
                off_screen: buttons
                  .filter((b) => b.getBoundingClientRect().right > innerWidth).length,
              };
            }"""
        )  # fmt: skip
        assert seen["aside_on_screen"] and seen["keys_shown"] == 0, seen
        assert seen["lowest_button"] >= 40 and seen["off_screen"] == 0, seen
        page.screenshot(path=str(ARTIFACTS / "judge-touch-scores.png"))
        page.locator("#scores .score-row").first.locator("button", has_text="6").tap()
        page.wait_for_selector("#status.ok")
        assert "visual (none) → 6" in page.inner_text("#status")
        page.tap("#to-grid")
        box = page.locator('#grid tbody tr[data-row="7"]').bounding_box()
        assert box is not None and 0 <= box["y"] < 700, box
        page.screenshot(path=str(ARTIFACTS / "judge-touch-grid.png"))
        assert errors == []
    finally:
        context.close()
