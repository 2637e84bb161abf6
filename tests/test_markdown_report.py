"""`report --format md`: the timeline and the comparison analysis, read back with a real
Markdown parser (markdown-it-py, GFM tables) and compared byte for byte across runs."""

from __future__ import annotations

import re
from datetime import datetime, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg
import pytest
from click.testing import CliRunner
from hypothesis import example, given, settings
from hypothesis import strategies as st
from markdown_it import MarkdownIt
from markdown_it.token import Token
from psycopg.rows import dict_row

from lora_tracker import epochs, markdown, runs
from lora_tracker.cli import cli
from lora_tracker.markdown import DASH
from lora_tracker.markdown_report import ReportScope, render
from lora_tracker.models import EpochFields, RunCreate

GFM = MarkdownIt("commonmark").enable(["table", "strikethrough"])


def invoke(url: str, *args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, ["--database-url", url, *args])
    return result.exit_code, result.output


# -- reading Markdown back --------------------------------------------------------------------


def plain(inline: Token) -> str:
    """The text a reader sees in an inline token (code spans as their text)."""
    out = []
    for child in inline.children or []:
        if child.type in ("text", "code_inline"):
            out.append(child.content)
        elif child.type == "softbreak":
            out.append(" ")
        elif child.type == "hardbreak":
            out.append("\n")
        elif child.type in ("html_inline", "html_block"):
            raise AssertionError(f"user text became HTML: {child.content!r}")
    return "".join(out)


def tables(source: str) -> list[list[list[str]]]:
    """Every table in the document: rows (header first) of cell texts."""
    found: list[list[list[str]]] = []
    inside = False
    for token in GFM.parse(source):
        if token.type in ("table_open", "table_close"):
            inside = token.type == "table_open"
            if inside:
                found.append([])
        elif inside and token.type == "tr_open":
            found[-1].append([])
        elif inside and token.type == "inline":
            found[-1][-1].append(plain(token))
    return found


def structure(source: str) -> list[tuple[str, str]]:
    """Headings and paragraphs/list items as (kind, plain text), in order."""
    tokens = GFM.parse(source)
    out = []
    for i, token in enumerate(tokens):
        if token.type != "inline":
            continue
        opener = tokens[i - 1].type
        if opener == "heading_open":
            out.append((tokens[i - 1].tag, plain(token)))
        elif opener == "paragraph_open":
            kind = "li" if i >= 2 and tokens[i - 2].type == "list_item_open" else "p"
            out.append((kind, plain(token)))
    assert not any(t.type.startswith("html") for t in tokens)
    return out


def table_after(source: str, heading: str) -> list[list[str]]:
    """The first table that follows the heading (or paragraph) starting with ``heading``."""
    tokens = GFM.parse(source)
    seen = False
    rows: list[list[str]] = []
    row: list[str] = []
    in_table = False
    for token in tokens:
        if token.type == "inline" and not in_table and plain(token).startswith(heading):
            seen = True
        elif seen and token.type == "table_open":
            in_table = True
        elif in_table and token.type == "tr_open":
            row = []
        elif in_table and token.type == "inline":
            row.append(plain(token))
        elif in_table and token.type == "tr_close":
            rows.append(row)
        elif in_table and token.type == "table_close":
            return rows
    raise AssertionError(f"no table after {heading!r}")


# -- the reference document's data ------------------------------------------------------------


@pytest.mark.both_servers
def test_example_timeline(examples_url: str, tmp_path: Path) -> None:
    """The timeline lists the three runs in date order, every column filled from the record,
    the run still training marked, and the same bytes on a second run."""
    target = tmp_path / "TRAINING_TIMELINE_TABLE.md"
    code, out = invoke(examples_url, "report", "--format", "md", "--timeline-only",
                       "-o", str(target))  # fmt: skip
    assert code == 0, out
    assert f"Wrote {target}" in out
    source = target.read_text(encoding="utf-8")
    rows = table_after(source, "Epochs: recorded / planned")
    assert rows[0] == ["Date", "Run", "Model", "Base model", "Dim / alpha", "Resolution",
                       "Images", "Captions", "Epochs", "Best epoch", "Quality", "Verdict",
                       "Production ready", "Key findings"]  # fmt: skip
    body = {r[1]: r for r in rows[1:]}
    assert [r[1] for r in rows[1:]] == ["SD15_bespoke_baby_Nov7", "SD15_PERFECT_Nov9",
                                        "SDXL_Current_Nov12"]  # fmt: skip
    assert body["SD15_PERFECT_Nov9"] == [
        "2025-11-09", "SD15_PERFECT_Nov9", "SD15", "runwayml/stable-diffusion-v1-5", "32 / 16",
        "512x512", "203", "civitai_v2_7_training", "3 / 10", "7", "9/10", "success", "yes",
        "dim=32 forces the network to simplify: clean pixel art, correct palette, plain "
        "backgrounds.",
    ]  # fmt: skip
    assert body["SD15_bespoke_baby_Nov7"][8:13] == ["2 / 10", DASH, "0/10", "failure", "no"]
    assert body["SDXL_Current_Nov12"][4] == "128 / 64"
    assert body["SDXL_Current_Nov12"][11] == "partial (in progress)"
    assert (
        "3 runs from 2025-11-07 to 2025-11-12: 1 success, 1 partial and 1 failure; 1 still "
        "in progress." in source
    )
    assert "TRAINING_COMPARISON" not in source and "# Training comparison" not in source
    # aligned in the source: every line of the table has the same width
    table_lines = [line for line in source.splitlines() if line.startswith("|")]
    assert len(table_lines) == 5 and len({markdown.width(line) for line in table_lines}) == 1
    again = tmp_path / "again.md"
    code, _ = invoke(examples_url, "report", "--format", "md", "--timeline-only", "-o",
                     str(again))  # fmt: skip
    assert again.read_bytes() == target.read_bytes()


@pytest.mark.both_servers
def test_example_analysis_says_what_the_reference_says(examples_url: str, tmp_path: Path) -> None:
    """The analysis states the reference document's findings in words: dim 32 at 512x512 on
    SD15 succeeded (9/10), dim 64 failed (0/10, photorealistic), SDXL at dim 128 / 1024x1024
    is partial (4/10), and all three used civitai_v2_7_training."""
    target = tmp_path / "TRAINING_COMPARISON_ANALYSIS.md"
    code, out = invoke(examples_url, "report", "--format", "md", "--analysis-only",
                       "-o", str(target))  # fmt: skip
    assert code == 0, out
    source = target.read_text(encoding="utf-8")
    parsed = structure(source)
    start = parsed.index(("h2", "In short"))
    end = next(i for i, (kind, _) in enumerate(parsed) if i > start and kind == "h2")
    short = [t for kind, t in parsed[start:end] if kind == "li"]

    def saying(*words: str) -> str:
        found = [t for t in short if all(w in t for w in words)]
        assert len(found) == 1, (words, short)
        return found[0]

    assert "SD15_PERFECT_Nov9" in saying("SD15", "dim 32", "512x512", "succeeded (9/10")
    failed = saying("SD15", "dim 64", "failed (0/10")
    assert "photorealistic" in failed and "SD15_bespoke_baby_Nov7" in failed
    partial = saying("SDXL", "dim 128", "1024x1024", "partial", "(4/10")
    assert "still in progress (8 of 10 epochs recorded)" in partial
    assert saying("All 3 runs used", "civitai_v2_7_training", "1 success, 1 partial and 1 "
                  "failure", "did not decide the outcome")  # fmt: skip
    assert saying("network dim 32 and network alpha 16", "no failed run did")
    # run by run: what changed from the run before with the same model type, and the outcome
    assert ("h3", "2025-11-09 · SD15_PERFECT_Nov9") in parsed
    changed = table_after(source, "Changed from SD15_bespoke_baby_Nov7 (2025-11-07)")
    assert changed == [["Setting", "Before", "Now"], ["network dim", "64", "32"],
                       ["network alpha", "32", "16"]]  # fmt: skip
    assert ("p", "Outcome: failure (0/10) → success (9/10), 9 points better.") in parsed
    assert any(t.startswith("First SDXL run in this report:") for _, t in parsed)
    # the stats tables, filled from the same queries as `stats`
    rates = table_after(source, "Success rate by model type")
    assert rates[1:] == [["SD15", "2", "1", "50%", "4.5"], ["SDXL", "1", "0", "0%", "4"]]
    by_setting = table_after(source, "How the runs with each value")
    assert ["caption version", "civitai_v2_7_training", "3", "1", "1", "1", "0", "4.33"] in (
        by_setting
    )
    assert ["", "64", "1", "0", "0", "1", "0", "0"] in by_setting
    issues = table_after(source, "Issues found most often")
    assert issues[1] == ["photorealistic babies", "1", "1", "SD15_bespoke_baby_Nov7"]
    flags = table_after(source, "Flags set on epochs")
    assert ["photorealistic", "2", "SD15_bespoke_baby_Nov7 (5, 10)"] in flags
    assert ["random pixels", "8", f"SDXL_Current_Nov12 (1{DASH}8)"] in flags
    ready = table_after(source, "Production-ready epochs")
    assert ready[1:] == [["SD15_PERFECT_Nov9", "7", "9/9/9", "best",
                          "/training/pixelbaby_sd15_dim32/pixelbaby_sd15_dim32-000007.safetensors",
                          "not checked"]]  # fmt: skip
    assert source.rstrip().endswith(
        "*Written by `lora-tracker report --format md --analysis-only` from the training "
        "record. Regenerate it after a run rather than editing it by hand.*"
    )


def test_stable_bytes_whatever_the_time_zone(examples_url: str) -> None:
    """The same data gives the same bytes: twice in a row, and from a session in another
    time zone (dates are UTC dates)."""
    with psycopg.connect(examples_url, autocommit=True, row_factory=dict_row) as conn:
        first = render(conn).encode()
        assert render(conn).encode() == first
        conn.execute("SET TimeZone = 'Pacific/Kiritimati'")  # UTC+14: other dates locally
        assert render(conn).encode() == first
    assert first.count(b"# Training timeline") == 1
    assert first.count(b"# Training comparison analysis") == 1
    assert first.count(b"*Written by") == 1  # one footer for the two documents together
    assert b"\r" not in first and first.endswith(b"\n")


def test_filters_like_runs(examples_url: str) -> None:
    """--model-type, --since and --caption-version narrow both documents and the stats."""
    code, out = invoke(examples_url, "report", "--format", "md", "--model-type", "SD15")
    assert code == 0, out
    assert "2 runs (model type SD15) from 2025-11-07 to 2025-11-09: 1 success and 1 failure." in (
        out
    )
    assert "SDXL_Current_Nov12" not in out
    assert table_after(out, "Success rate by model type")[1:] == [["SD15", "2", "1", "50%",
                                                                   "4.5"]]  # fmt: skip
    assert "--model-type SD15" in out.splitlines()[-1]
    code, out = invoke(examples_url, "report", "--format", "md", "--since", "2025-11-10")
    assert code == 0, out
    assert (
        "1 run (started on or after 2025-11-10) on 2025-11-12: 1 partial; 1 still in "
        "progress." in out
    )
    assert "SD15_PERFECT" not in out
    flags = table_after(out, "Flags set on epochs")
    assert [r[0] for r in flags[1:]] == ["wrong backgrounds", "random pixels"]  # SDXL's only
    code, out = invoke(examples_url, "report", "--format", "md", "--since", "36500d")
    assert code == 0, out
    assert "3 runs (started on or after " in out  # an age counts from the start of a UTC day
    assert re.search(r"--since \d{4}-\d\d-\d\d` from the training record", out)
    code, out = invoke(examples_url, "report", "--format", "md", "--caption-version", "nope")
    assert code == 0, out
    assert "No runs match (caption version nope)." in [t for _, t in structure(out)]


@pytest.mark.parametrize(
    ("args", "exit_code", "message"),
    [
        (["--timeline-only"], 2, "--timeline-only applies to --format md"),
        (["--model-type", "SD15"], 2, "--model-type applies to --format md"),
        (["--format", "md", "--epochs-for", "3"], 2, "--epochs-for applies to --format html"),
        (["--format", "md", "--timeline-only", "--analysis-only"], 2, "exclude each other"),
        (["--format", "md", "--since", "yesterday"], 2, "'yesterday' is not a date like"),
        (["--format", "md", "--model-type", "sd99"], 2, "'sd99' is not one of"),
        (["--format", "md", "-o", "/no/such/dir/x.md"], 1, "cannot write /no/such/dir/x.md"),
    ],
)
def test_report_refusals(examples_url: str, args: list[str], exit_code: int, message: str) -> None:
    """Bad combinations are refused in one line with the right exit code."""
    code, out = invoke(examples_url, "report", *args)
    assert code == exit_code, out
    assert message in out and "Traceback" not in out


# -- a history with awkward text, runs in progress and runs not judged ----------------------

NASTY = "a | b `tick` *star* <b>bold</b> [link](x) &amp; _under_ \\ ~~gone~~"


@pytest.fixture
def awkward_url(db_url: str) -> str:
    """Runs whose text holds pipes, backticks, newlines and Markdown; one still training,
    one never judged, one with nothing but a name."""
    with psycopg.connect(db_url, autocommit=True, row_factory=dict_row) as conn:
        first = runs.create_run(conn, RunCreate(
            run_name="pipe|run`1`", run_date=datetime(2026, 1, 2, 23, 30, tzinfo=timezone.utc),
            status="completed", model_type="Flux", base_model="black-forest-labs/FLUX.1-dev",
            network_dim=16, network_alpha=Decimal("8"), resolution="1024x1024",
            caption_version="caps|v`2`", learning_rate=0.0004, optimizer="Prodigy",
            num_epochs=4, overall_verdict="failure", quality_score=2,
            key_findings=f"# not a heading\n- not a list\n1. not numbered\n{NASTY}",
            issues_found=["blurry | soft", "`code` issue\nsecond line"],
        ))  # fmt: skip
        epochs.upsert_epoch(conn, first.id, 1, EpochFields(
            visual_quality_score=2, has_random_pixels=True, verdict="failure",
            checkpoint_path="/out/a|b`c`.safetensors", production_ready=True,
            checkpoint_on_disk=False,
        ))  # fmt: skip
        second = runs.create_run(conn, RunCreate(
            run_name="flux_retry", run_date=datetime(2026, 1, 5, tzinfo=timezone.utc),
            status="in_progress", model_type="Flux", base_model="black-forest-labs/FLUX.1-dev",
            network_dim=32, network_alpha=Decimal("16.0"), resolution="1024x1024",
            caption_version="caps|v`2`", learning_rate=0.0004, optimizer="Prodigy",
            num_epochs=10, key_findings="too early to say",
        ))  # fmt: skip
        for n in (1, 2, 3):
            epochs.upsert_epoch(conn, second.id, n, EpochFields())
        runs.create_run(conn, RunCreate(
            run_name="bare", run_date=datetime(2026, 1, 6, tzinfo=timezone.utc),
            status="planned",
        ))  # fmt: skip
    return db_url


def test_awkward_history_timeline(awkward_url: str) -> None:
    """User text with pipes, backticks and newlines stays inside its cell, as the same text;
    runs in progress, planned and not judged are marked; nothing becomes HTML."""
    code, out = invoke(awkward_url, "report", "--format", "md", "--timeline-only")
    assert code == 0, out
    rows = table_after(out, "Epochs: recorded / planned")
    assert all(len(r) == 14 for r in rows)
    first, retry, bare = rows[1:]
    assert first[:2] == ["2026-01-02", "pipe|run`1`"]
    assert first[7] == "caps|v`2`"
    assert first[13] == f"# not a heading - not a list 1. not numbered {NASTY}"  # one line
    assert retry[4] == "32 / 16" and retry[8] == "3 / 10"
    assert retry[11] == "not judged (in progress)" and retry[10] == DASH
    assert bare == ["2026-01-06", "bare", DASH, DASH, DASH, DASH, DASH, DASH, "0 / ?", DASH, DASH,
                    "not judged (planned)", "no", DASH]  # fmt: skip
    assert (
        "3 runs from 2026-01-02 to 2026-01-06: 1 failure and 2 not judged; 2 still in "
        "progress." in out
    )


def test_awkward_history_analysis(awkward_url: str) -> None:
    """The analysis of the same history: every table parses back to its cells, user text
    that looks like Markdown stays text, and the runs not judged are listed."""
    code, out = invoke(awkward_url, "report", "--format", "md", "--analysis-only")
    assert code == 0, out
    parsed = structure(out)
    headings = [t for kind, t in parsed if kind in ("h1", "h2")]
    assert headings == ["Training comparison analysis", "In short", "Success rate by model type",
                        "What the successful runs share", "Run by run",
                        "Issues found most often", "Production-ready epochs"]  # fmt: skip
    assert ("h3", "2026-01-02 · pipe|run`1`") in parsed
    findings = [t for kind, t in parsed if t.startswith("Key findings: # not a heading")]
    assert findings == [f"Key findings: # not a heading\n- not a list\n1. not numbered\n{NASTY}"]
    short = [t for kind, t in parsed if kind == "li"]
    assert any(t.startswith("Flux at dim 16 / alpha 8, 1024x1024 failed (2/10: blurry | soft, "
                            "`code` issue second line): pipe|run`1`") for t in short)  # fmt: skip
    assert "Not judged yet: flux_retry (3 of 10 epochs recorded), bare (0 epochs recorded)." in (
        short
    )
    assert ("p", "No run has succeeded yet.") in parsed
    changed = table_after(out, "Changed from pipe|run`1` (2026-01-02)")
    assert changed[1:] == [["network dim", "16", "32"], ["network alpha", "8", "16"],
                           ["epochs planned", "4", "10"]]  # fmt: skip
    assert ("p", "Outcome: failure (2/10) → not judged yet.") in parsed
    issues = table_after(out, "Issues found most often")
    assert issues[1:] == [["`code` issue second line", "1", "1", "pipe|run`1`"],
                          ["blurry | soft", "1", "1", "pipe|run`1`"]]  # fmt: skip
    ready = table_after(out, "Production-ready epochs")
    assert ready[1] == ["pipe|run`1`", "1", f"2/{DASH}/{DASH}", "failure",
                        "/out/a|b`c`.safetensors", "removed"]  # fmt: skip
    by_setting = table_after(out, "How the runs with each value")
    assert ["caption version", "caps|v`2`", "2", "0", "0", "1", "1", "2"] in by_setting
    assert ["learning rate", "4e-4", "2", "0", "0", "1", "1", "2"] in by_setting
    for table in tables(out):
        assert len({len(row) for row in table}) == 1, table


def test_awkward_history_stable(awkward_url: str) -> None:
    """Byte-stable on the awkward history too."""
    outputs = {invoke(awkward_url, "report", "--format", "md")[1] for _ in range(2)}
    assert len(outputs) == 1


def test_empty_database(db_url: str) -> None:
    """No runs: both documents say so, and still parse."""
    code, out = invoke(db_url, "report", "--format", "md")
    assert code == 0, out
    texts = [t for _, t in structure(out)]
    assert texts.count("No runs recorded yet.") == 2
    assert tables(out) == []


# -- the escaping itself, on any text ---------------------------------------------------------

LOOKS_LIKE_MARKDOWN = ["1. one", "2) two", "# h", "- x", "> q", "+ y", "a\n===", "a\n---",
                       "a\n1) b", "x | y\n--- | ---", "*a* _b_ __c__", "<div>", "&copy;",
                       "[a](b)", "`a`", "a\\", "~~s~~", "    code", "a_b_c", "_a_b"]  # fmt: skip
AWKWARD_TEXT = st.text(alphabet=st.sampled_from(list("ab1 _*`|\\[]<>#&;-+=.)~!:\n\tx#é字")))


def _with_examples(test: Any) -> Any:
    for case in LOOKS_LIKE_MARKDOWN:
        test = example(case)(test)
    return test


@settings(max_examples=300, deadline=None)
@given(AWKWARD_TEXT)
@_with_examples
def test_text_reads_back_as_itself(value: str) -> None:
    """Any text, escaped, renders as exactly that text (whitespace collapsed): in a
    paragraph, in a list item and in a table cell."""
    expected = " ".join(value.split())
    if not expected:
        return
    escaped = markdown.text(value)
    assert "\n" not in escaped
    assert structure(f"Note: {escaped}\n") == [("p", f"Note: {expected}")]
    assert structure(f"{escaped}\n") == [("p", expected)]
    assert structure(f"- {escaped}\n") == [("li", expected)]
    source = markdown.table(["h", "value"], [["x", escaped]])
    assert tables(source) == [[["h", "value"], ["x", expected]]]


@settings(max_examples=300, deadline=None)
@given(AWKWARD_TEXT)
@_with_examples
def test_code_and_paragraph_read_back(value: str) -> None:
    """A code span shows its text, in a table cell as outside one; a paragraph keeps the
    lines of the text, each as itself."""
    expected = " ".join(value.split())
    if not expected:
        return
    source = markdown.table(["value"], [[markdown.code(value, in_table=True)]])
    assert tables(source) == [[["value"], [expected]]]
    assert structure(f"see {markdown.code(value)}\n") == [("p", f"see {expected}")]
    lines = [" ".join(line.split()) for line in value.splitlines() if line.split()]
    assert structure(markdown.paragraph(value) + "\n") == [("p", "\n".join(lines))]


def test_numbers_as_people_write_them() -> None:
    """16 not 16.0, 4.5 not 4.50, 1e-4 for learning rates, a dash for nothing."""
    cases = [(16, "16"), (Decimal("16.0"), "16"), (Decimal("4.50"), "4.5"), (0.5, "0.5"),
             (0.0001, "1e-4"), (0.00005, "5e-5"), (2.5e-4, "2.5e-4"), (0.0, "0"),
             (None, DASH), (Decimal("100"), "100")]  # fmt: skip
    assert [markdown.number(v) for v, _ in cases] == [s for _, s in cases]


def test_scope_options_round_trip() -> None:
    """The footer names the options that select the same runs again."""
    scope = ReportScope(model_type="SDXL", caption_version="my caps",
                        since=datetime(2025, 11, 1, tzinfo=timezone.utc))  # fmt: skip
    assert scope.options() == "--model-type SDXL --caption-version 'my caps' --since 2025-11-01"


def test_summaries_refuse_unknown_columns(examples_conn: psycopg.Connection[Any]) -> None:
    """Extra columns are names of training_runs columns, never SQL text."""
    with pytest.raises(ValueError, match="training_runs has no column"):
        runs.list_summaries(examples_conn, extra_columns=["id; DROP TABLE training_runs"])
    found = runs.list_summaries(examples_conn, extra_columns=["num_epochs", "issues_found"],
                                since=datetime(2025, 11, 9, tzinfo=timezone.utc))  # fmt: skip
    assert [(r["run_name"], r["num_epochs"]) for r in found] == [
        ("SDXL_Current_Nov12", 10), ("SD15_PERFECT_Nov9", 10)
    ]  # fmt: skip


def test_since_in_utc(examples_url: str) -> None:
    """--since takes a date, a moment with Z or an offset, and counts in UTC."""
    for since in ("2025-11-09T09:00Z", "2025-11-09T10:00+01:00"):
        code, out = invoke(examples_url, "report", "--format", "md", "--since", since)
        assert code == 0, out
        assert "2 runs (started on or after 2025-11-09T09:00:00Z)" in out
