"""The CLI fits a person (issue 11) and refuses bad input cleanly (issue 9's CLI points):
no phantom epochs, tables that fit the terminal, confirmations that say what changed,
errors that help, kohya_ss GUI configs, escaped control characters. Real databases."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import psycopg
import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st
from psycopg.rows import dict_row

from lora_tracker import runs as runs_module
from lora_tracker.cli import cli
from lora_tracker.cli.browse_commands import RUN_TABLE
from lora_tracker.models import RunFields

from .conftest import ROOT, rows

TABLES = (
    "training_runs",
    "epoch_results",
    "caption_versions",
    "test_prompts",
    "prompt_test_results",
)
CONFIGS = ROOT / "examples" / "configs"


def snapshot(url: str) -> list[Any]:
    with psycopg.connect(url, row_factory=dict_row) as conn:
        return [conn.execute(f"SELECT * FROM {t} ORDER BY id").fetchall() for t in TABLES]


def run(url: str, *args: str, input: str | None = None, columns: int | None = None) -> Any:
    # the width a terminal of ``columns`` would give (CliRunner's output is no terminal)
    env = {"LORA_TRACKER_WIDTH": str(columns) if columns else None, "COLUMNS": None}
    return CliRunner().invoke(cli, ["--database-url", url, *args], input=input, env=env)


def one_line_error(result: Any, code: int, text: str) -> None:
    assert result.exit_code == code, result.output
    assert result.output.startswith("Error: ") and result.output.count("\n") == 1, result.output
    assert text in result.output, result.output
    assert "Traceback" not in result.output


# -- a typo must not create an epoch ----------------------------------------------------------


def test_score_on_unrecorded_epoch_is_refused_and_changes_nothing(examples_url: str) -> None:
    """score RUN 99 on a run with epochs 6-8 is refused with the recorded range."""
    before = snapshot(examples_url)
    result = run(examples_url, "score", "SD15_PERFECT_Nov9", "99", "--visual", "5")
    one_line_error(
        result, 1, "SD15_PERFECT_Nov9 has epochs 6-8 recorded; --add records epoch 99 by hand"
    )
    result = run(examples_url, "prompt", "add", "p1", "--text", "a prompt")
    assert result.exit_code == 0
    before = snapshot(examples_url)
    result = run(examples_url, "prompt", "score", "SD15_PERFECT_Nov9", "99", "p1", "--score", "5")
    one_line_error(result, 1, "has epochs 6-8 recorded")
    assert snapshot(examples_url) == before


def test_add_records_an_epoch_by_hand(examples_url: str) -> None:
    """A run made with `new` has no epochs: score is refused until --add."""
    assert run(examples_url, "new", "hand_made", "--model-type", "sd15").exit_code == 0
    before = snapshot(examples_url)
    result = run(examples_url, "score", "hand_made", "3", "--visual", "6")
    one_line_error(result, 1, "hand_made has no epochs recorded; --add records epoch 3 by hand")
    assert snapshot(examples_url) == before
    result = run(examples_url, "score", "hand_made", "3", "--visual", "6", "--add")
    assert result.exit_code == 0 and result.output == "hand_made epoch 3 (added): visual 6\n"
    run(examples_url, "prompt", "add", "p1", "--text", "a prompt")
    result = run(examples_url, "prompt", "score", "hand_made", "4", "p1", "--score", "7", "--add")
    assert result.exit_code == 0, result.output
    assert result.output.startswith("hand_made epoch 4 (epoch added) / p1: score 7")
    found = rows(
        examples_url,
        "SELECT epoch_number FROM epoch_results er JOIN training_runs tr "
        "ON tr.id = er.training_run_id WHERE run_name = 'hand_made' ORDER BY 1",
    )
    assert [r["epoch_number"] for r in found] == [3, 4]


def test_epoch_remove_asks_then_removes_with_prompt_results(examples_url: str) -> None:
    """epoch remove asks (no: nothing changes), --yes removes the epoch and its results."""
    run(examples_url, "prompt", "add", "p1", "--text", "a prompt")
    assert (
        run(
            examples_url, "prompt", "score", "SD15_PERFECT_Nov9", "7", "p1", "--score", "8"
        ).exit_code
        == 0
    )
    before = snapshot(examples_url)
    result = run(examples_url, "epoch", "remove", "SD15_PERFECT_Nov9", "7", input="n\n")
    assert result.exit_code == 1
    assert "Remove epoch 7 of SD15_PERFECT_Nov9 and its 1 prompt result?" in result.output
    assert snapshot(examples_url) == before
    result = run(examples_url, "epoch", "remove", "SD15_PERFECT_Nov9", "7", "--yes")
    assert result.exit_code == 0, result.output
    assert result.output == (
        "Removed epoch 7 of SD15_PERFECT_Nov9 and its 1 prompt result "
        "(it was the best epoch: best epoch cleared).\n"
    )
    left = rows(
        examples_url,
        "SELECT epoch_number FROM epoch_results er JOIN training_runs tr "
        "ON tr.id = er.training_run_id WHERE run_name = 'SD15_PERFECT_Nov9' ORDER BY 1",
    )
    assert [r["epoch_number"] for r in left] == [6, 8]
    assert rows(examples_url, "SELECT count(*) AS n FROM prompt_test_results")[0]["n"] == 0
    best = rows(examples_url, "SELECT best_epoch FROM training_runs WHERE id = 1")
    assert best == [{"best_epoch": None}]
    before = snapshot(examples_url)
    result = run(examples_url, "epoch", "remove", "SD15_PERFECT_Nov9", "7", "--yes")
    one_line_error(result, 1, "SD15_PERFECT_Nov9 has no epoch 7 (epochs 6, 8 are recorded)")
    assert snapshot(examples_url) == before


# -- tables fit the terminal --------------------------------------------------------------------

WIDE_COMMANDS = [
    ["runs"],
    ["tried", "--model-type", "SD15", "--network-dim", "32"],
    ["show", "SD15_PERFECT_Nov9"],
    ["stats"],
    ["compare", "SD15_PERFECT_Nov9", "SD15_bespoke_baby_Nov7", "SDXL_Current_Nov12"],
]


@pytest.mark.parametrize("args", WIDE_COMMANDS, ids=[a[0] for a in WIDE_COMMANDS])
def test_tables_fit_the_terminal_width(examples_url: str, args: list[str]) -> None:
    """At 60 and 100 columns no line is wider; without a terminal nothing is cut."""
    for width in (60, 100):
        result = run(examples_url, *args, columns=width)
        assert result.exit_code in (0, 3), result.output
        assert max(len(line) for line in result.output.splitlines()) <= width, result.output
    piped = run(examples_url, *args)
    assert "…" not in piped.output
    assert max(len(line) for line in piped.output.splitlines()) > 60


def _join_wrapped(pieces: list[str]) -> str:
    """A wrapped cell's lines as one value (broken after a space, or after - / _)."""
    text = ""
    for piece in (p for p in pieces if p):
        text += piece if not text or text[-1] in "-/_" else " " + piece
    return text


def _read_side_by_side(text: str) -> dict[tuple[str, str, str], str]:
    """compare's tables read back: (table, row key, run) -> value, whatever the layout
    (one line a row, wrapped cells, runs in blocks)."""
    found: dict[tuple[str, str, str], str] = {}
    lines = text.splitlines()
    table = "settings"
    i = 0
    while i < len(lines):
        if lines[i].startswith("Scores per epoch"):
            table = "epochs"
        if i + 1 >= len(lines) or not re.fullmatch(r"-[- ]*", lines[i + 1] or "x"):
            i += 1
            continue
        start = i  # a header wrapped over several lines starts after a blank or a title
        while (
            start > 0
            and lines[start - 1].strip()
            and not lines[start - 1].startswith(("(run", "Scores"))
        ):
            start -= 1
        header_lines = lines[start : i + 1]
        rule = lines[i + 1]
        spans = [(m.start(), m.end() + 1) for m in re.finditer(r"-+", rule)]
        spans[-1] = (spans[-1][0], 10_000)

        def cells(line: str, spans: list[tuple[int, int]] = spans) -> list[str]:
            return [line[a:b].strip() for a, b in spans]

        headers = [_join_wrapped(list(c)) for c in zip(*map(cells, header_lines), strict=True)]
        key_column = 1 if table == "settings" else 0
        i += 2
        rows: list[list[list[str]]] = []
        while i < len(lines) and lines[i].strip() and not lines[i].startswith("("):
            parts = cells(lines[i])
            if parts[key_column]:
                rows.append([[p] for p in parts])
            else:
                for column, part in zip(rows[-1], parts, strict=True):
                    column.append(part)
            i += 1
        for row in rows:
            key = row[key_column][0]
            for header, pieces in list(zip(headers, row, strict=True))[key_column + 1 :]:
                found[(table, key, header)] = _join_wrapped(pieces)
    return found


def test_compare_shows_every_run_at_any_width(examples_url: str) -> None:
    """compare of 3 (and 5) runs at 100, 80 and 60 columns: no line wider, every run and
    every value there whole (wrapped in its column, runs in blocks), as piped shows them."""
    names = ["SD15_PERFECT_Nov9", "SD15_bespoke_baby_Nov7", "SDXL_Current_Nov12"]
    for name in ("a_run_with_a_rather_long_name_for_testing", "dim8_retry"):
        assert run(examples_url, "new", name, "--model-type", "sdxl", "--base-model",
                   "stabilityai/stable-diffusion-xl-base-1.0").exit_code == 0  # fmt: skip
    for runs in (names, [*names, "a_run_with_a_rather_long_name_for_testing", "dim8_retry"]):
        piped = run(examples_url, "compare", *runs)
        assert piped.exit_code == 0, piped.output
        whole = _read_side_by_side(piped.output)
        assert {k[2] for k in whole} == set(runs)
        settings = {k[1] for k in whole if k[0] == "settings"}
        epochs = {k[1] for k in whole if k[0] == "epochs"}
        assert len(settings) >= 20 and len(whole) == len(runs) * (len(settings) + len(epochs))
        assert whole[("settings", "base_model", "SDXL_Current_Nov12")] == (
            "stabilityai/stable-diffusion-xl-base-1.0"
        )
        assert whole[("epochs", "5", "SDXL_Current_Nov12")] == "4/4/6 acceptable"
        for width in (100, 80, 60):
            fitted = run(examples_url, "compare", *runs, columns=width)
            assert fitted.exit_code == 0, fitted.output
            assert max(map(len, fitted.output.splitlines())) <= width, fitted.output
            assert "…" not in fitted.output
            assert _read_side_by_side(fitted.output) == whole, (width, fitted.output)
    blocks = run(examples_url, "compare", *runs, columns=80).output
    assert "(runs 1-3 of 5)" in blocks and "(runs 4-5 of 5)" in blocks
    # the settings' * says a difference among all runs, not within the block shown
    assert "(runs 1-3 of 5; * differs among all 5 runs)" in blocks


def test_runs_columns_and_wide(examples_url: str) -> None:
    """--columns chooses the columns, --wide shows all; a narrow terminal keeps the first."""
    narrow = run(examples_url, "runs", columns=60).output.splitlines()
    assert narrow[0].split()[:3] == ["id", "run_name", "run_date"]
    assert "caption_version" not in narrow[0]
    chosen = run(examples_url, "runs", "--columns", "run_name,key_findings", columns=60)
    assert chosen.output.splitlines()[0].split() == ["run_name", "key_findings"]
    assert "dim=32 forces the network to simplify" in chosen.output  # --columns: not cut
    wide = run(examples_url, "runs", "--wide", columns=60)
    assert "caption_version" in wide.output.splitlines()[0]
    assert "key_findings" in wide.output.splitlines()[0]
    bad = run(examples_url, "runs", "--columns", "run_name,qualty_score")
    one_line_error(bad, 2, "no column qualty_score (did you mean quality_score?)")


def test_long_text_is_cut_with_an_ellipsis(examples_url: str) -> None:
    """show's epoch table cuts the observations to the width, with …"""
    result = run(examples_url, "show", "SD15_PERFECT_Nov9", columns=80)
    epoch_lines = result.output.split("Epochs (3)\n")[1].splitlines()
    assert epoch_lines[0].split()[:2] == ["epoch", "visual"]
    assert any(line.endswith("…") for line in epoch_lines[2:])
    assert all(len(line) <= 80 for line in epoch_lines)


def test_show_numbers_prompts_that_do_not_fit(examples_url: str) -> None:
    """show's epoch x prompt grid on a terminal too narrow for the prompts' names (long and
    alike at the start, as `images` names them): numbered columns and the names in a key
    below; prompts left out at an even narrower width are counted; --wide shows the names."""
    names = [f"pixel art baby, pose number {n}, simple background" for n in range(6)]
    for name in names:
        assert run(examples_url, "prompt", "add", name, "--text", name).exit_code == 0
        scored = run(
            examples_url, "prompt", "score", "SD15_PERFECT_Nov9", "6", name, "--score", "7"
        )
        assert scored.exit_code == 0, scored.output

    def grid_of(output: str) -> list[str]:
        return (
            output.split("Test prompts (epoch x prompt: score verdict)\n")[1]
            .split("\n\n")[0]
            .splitlines()
        )

    grid = grid_of(run(examples_url, "show", "SD15_PERFECT_Nov9", columns=100).output)
    assert grid[0].split() == ["epoch", "#1", "#2", "#3", "#4", "#5", "#6"]
    assert grid[2].split() == ["6", "7", "7", "7", "7", "7", "7"]
    assert grid[3:] == [f"  #{n + 1:<3} {name}" for n, name in enumerate(names)]
    narrow = grid_of(run(examples_url, "show", "SD15_PERFECT_Nov9", columns=20).output)
    shown = len(narrow[1].split()) - 1  # the rule under the header: epoch, prompts
    assert 0 < shown < len(names) and all(len(line) <= 20 for line in narrow[:3])
    assert f"({len(names) - shown} more prompts left out at this width: --wide" in "\n".join(narrow)
    assert "\n".join(narrow).count("left out") == 1  # said once, in the grid's words
    wide = grid_of(run(examples_url, "show", "SD15_PERFECT_Nov9", "--wide", columns=100).output)
    assert wide[0].split("  ")[1:] == names and "left out" not in "\n".join(wide)


def test_sql_expanded_display(examples_url: str) -> None:
    """sql shows one field per line when a row does not fit; --expanded/--no-expanded force."""
    wide_query = "SELECT * FROM production_ready_epochs"
    result = run(examples_url, "sql", wide_query, columns=100)
    assert result.exit_code == 0
    assert result.output.startswith("-[ RECORD 1 ]")
    assert re.search(r"^run_name +\| SD15_PERFECT_Nov9$", result.output, re.M)
    assert result.output.rstrip().endswith("row)") or result.output.rstrip().endswith("rows)")
    forced = run(examples_url, "sql", "--no-expanded", wide_query, columns=100)
    assert "RECORD" not in forced.output and forced.output.startswith("run_name")
    narrow_query = "SELECT id, run_name FROM training_runs WHERE id = 1"
    table = run(examples_url, "sql", narrow_query, columns=100)
    assert table.output.startswith("id") and table.output.endswith("(1 row)\n")
    expanded = run(examples_url, "sql", "--expanded", narrow_query, columns=100)
    assert expanded.output.startswith("-[ RECORD 1 ]")
    piped = run(examples_url, "sql", wide_query)
    assert "RECORD" not in piped.output


def _runs_command(url: str, *more: str) -> list[str]:
    return [sys.executable, "-m", "lora_tracker", "--database-url", url, "runs", *more]


def _real_env(**variables: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LORA_TRACKER_WIDTH")}
    return {**env, "PYTHONPATH": str(ROOT), **variables}


def test_piped_output_of_a_real_process_is_never_cut(examples_url: str) -> None:
    """A real `lora-tracker runs` into a pipe prints full rows, even when the shell
    exports COLUMNS=60; LORA_TRACKER_WIDTH=60 asks for a fitted table anyway."""
    command = _runs_command(examples_url, "--columns", "run_name,quality_score,key_findings")
    for env in (_real_env(), _real_env(COLUMNS="60")):
        piped = subprocess.run(command, capture_output=True, text=True, env=env, timeout=120)
        assert piped.returncode == 0, piped.stderr
        assert "Epoch 7 is the sweet spot; epoch 8 starts to overfit." in piped.stdout
    full = subprocess.run(_runs_command(examples_url), capture_output=True, text=True,
                          env=_real_env(COLUMNS="60"), timeout=120)  # fmt: skip
    assert full.returncode == 0, full.stderr
    assert "caption_version" in full.stdout.splitlines()[0]  # the last column, not cut
    assert max(len(line) for line in full.stdout.splitlines()) > 100
    fitted = subprocess.run(_runs_command(examples_url), capture_output=True, text=True,
                            env=_real_env(LORA_TRACKER_WIDTH="60"), timeout=120)  # fmt: skip
    assert fitted.returncode == 0, fitted.stderr
    assert max(len(line) for line in fitted.stdout.splitlines()) <= 60
    bad = subprocess.run(_runs_command(examples_url), capture_output=True, text=True,
                         env=_real_env(LORA_TRACKER_WIDTH="wide"), timeout=120)  # fmt: skip
    assert bad.returncode == 1 and bad.stdout == ""
    assert bad.stderr == (
        "Error: $LORA_TRACKER_WIDTH must be a number of columns, like 100 (it is 'wide')\n"
    )


def _in_a_terminal(command: list[str], env: dict[str, str], columns: int) -> str:
    """What ``command`` prints to a real terminal (a pseudo-terminal ``columns`` wide)."""
    import fcntl
    import pty
    import struct
    import termios

    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 50, columns, 0, 0))
    try:
        done = subprocess.Popen(command, stdout=follower, stderr=subprocess.DEVNULL, env=env)
        os.close(follower)
        chunks = []
        while True:
            try:
                chunk = os.read(leader, 65536)
            except OSError:  # the terminal closed: the process is done
                break
            if not chunk:
                break
            chunks.append(chunk)
        assert done.wait(timeout=120) == 0
    finally:
        os.close(leader)
    return b"".join(chunks).decode().replace("\r\n", "\n")


def test_a_table_cut_to_the_width_says_which_columns_it_left_out(examples_url: str) -> None:
    """A table cut to the width says, on stderr, which columns it left out and how to see
    them, in a line that fits; with room for every column, or with --wide, nothing."""
    fitted = subprocess.run(_runs_command(examples_url), capture_output=True, text=True,
                            env=_real_env(LORA_TRACKER_WIDTH="80"), timeout=120)  # fmt: skip
    assert fitted.returncode == 0, fitted.stderr
    header = fitted.stdout.splitlines()[0].split()
    note = fitted.stderr.strip()
    shape = r"\((\d+) columns left out: (.+?)(?: and (\d+) more)?; --wide shows them\)"
    found = re.fullmatch(shape, note)
    assert found and len(note) <= 80, note
    named = found[2].split(", ")
    assert int(found[1]) == len(named) + int(found[3] or 0) == len(RUN_TABLE) - len(header)
    assert named == [c for c in RUN_TABLE if c not in header][: len(named)]
    for more, env in (([], _real_env()), (["--wide"], _real_env(LORA_TRACKER_WIDTH="80"))):
        whole = subprocess.run(_runs_command(examples_url, *more), capture_output=True,
                               text=True, env=env, timeout=120)  # fmt: skip
        assert whole.returncode == 0 and whole.stderr == "", whole.stderr
        assert set(RUN_TABLE) <= set(whole.stdout.splitlines()[0].split())


def test_a_real_terminal_fits_its_width_or_columns(examples_url: str) -> None:
    """On a terminal, tables fit its width, or $COLUMNS when the shell exports it."""
    out = _in_a_terminal(_runs_command(examples_url), _real_env(), 70)
    assert out.startswith("id") and max(len(line) for line in out.splitlines()) <= 70
    out = _in_a_terminal(_runs_command(examples_url), _real_env(COLUMNS="50"), 70)
    assert max(len(line) for line in out.splitlines()) <= 50


# -- say what changed ---------------------------------------------------------------------------


def test_score_says_every_field_it_set(examples_url: str) -> None:
    """Flags, production-ready and the note are echoed; clearing a flag reads differently."""
    first = run(
        examples_url,
        "score",
        "SD15_PERFECT_Nov9",
        "6",
        "--flag",
        "wrong-backgrounds",
        "--production-ready",
        "--note",
        "bg leaks",
    )
    assert first.exit_code == 0, first.output
    assert first.output.startswith(
        "SD15_PERFECT_Nov9 epoch 6: wrong backgrounds no -> yes, "
        "production ready no -> yes, note 'Crisp pixel art"
    )
    assert first.output.endswith("' -> 'bg leaks'\n")
    second = run(
        examples_url, "score", "SD15_PERFECT_Nov9", "6", "--clear-flag", "wrong-backgrounds"
    )
    assert second.output == "SD15_PERFECT_Nov9 epoch 6: wrong backgrounds yes -> no\n"
    again = run(
        examples_url, "score", "SD15_PERFECT_Nov9", "6", "--clear-flag", "wrong-backgrounds"
    )
    assert again.output == "SD15_PERFECT_Nov9 epoch 6: wrong backgrounds no (unchanged)\n"


def test_init_examples_twice_uses_no_ids(examples_url: str) -> None:
    """A second init --examples says so and consumes no sequence values."""
    result = run(examples_url, "init", "--examples")
    assert result.exit_code == 0
    assert "Example data is already loaded: nothing added" in result.output
    assert (
        run(examples_url, "new", "after_examples").output == "Created run after_examples (id 4)\n"
    )


def test_final_verdict_completes_a_run_in_progress(examples_url: str) -> None:
    """verdict --overall on an in_progress run sets completed, unless --status is given."""
    run(examples_url, "new", "r1")
    run(examples_url, "new", "r2")
    result = run(examples_url, "verdict", "r1", "--overall", "partial")
    assert result.output == "r1: verdict pending -> partial, status in_progress -> completed\n"
    run(examples_url, "verdict", "r2", "--overall", "failure", "--status", "failed")
    run(examples_url, "verdict", "SDXL_Current_Nov12", "--overall", "pending")
    found = rows(
        examples_url,
        "SELECT run_name, status FROM training_runs WHERE run_name IN "
        "('r1', 'r2', 'SDXL_Current_Nov12') ORDER BY run_name",
    )
    assert [r["status"] for r in found] == ["in_progress", "completed", "failed"]


def test_counts_read_as_english(examples_url: str) -> None:
    """1 row, 1 run, 2 runs."""
    assert run(examples_url, "sql", "SELECT 1 AS one").output.endswith("(1 row)\n")
    result = run(examples_url, "runs", "--limit", "1")
    assert "(the 1 newest run shown" in result.output
    result = run(examples_url, "cleanup", "--older-than", "6mo", "--dry-run")
    assert "Would delete 2 runs, 11 epoch results, 0 prompt results" in result.output


# -- errors that help ---------------------------------------------------------------------------


def test_helpful_errors(examples_url: str, tmp_path: Path) -> None:
    """Closest names, case variants, whole epochs, unknown tables, missing images."""
    before = snapshot(examples_url)
    one_line_error(
        run(examples_url, "show", "SD15_PERFCT_Nov9"),
        1,
        "no run named 'SD15_PERFCT_Nov9' (did you mean SD15_PERFECT_Nov9?)",
    )
    one_line_error(
        run(examples_url, "score", "SD15_PERFECT_Nov9", "five", "--visual", "3"),
        2,
        "EPOCH must be a whole number",
    )
    one_line_error(
        run(examples_url, "sql", "SELECT * FROM trainig_runs"),
        1,
        "no table or view named trainig_runs; did you mean training_runs",
    )
    assert "lora-tracker init" not in run(examples_url, "sql", "SELECT * FROM nope").output
    one_line_error(
        run(examples_url, "runs", "--model-type", "SD99"),
        2,
        "'SD99' is not one of 'SD15', 'SD2', 'SDXL'",
    )
    assert snapshot(examples_url) == before
    result = run(examples_url, "runs", "--model-type", "sdxl", "--json")
    assert [r["run_name"] for r in json.loads(result.output)] == ["SDXL_Current_Nov12"]
    assert (
        run(examples_url, "new", "lower", "--model-type", "flux", "--status", "PLANNED").exit_code
        == 0
    )
    found = rows(
        examples_url, "SELECT model_type, status FROM training_runs WHERE run_name = 'lower'"
    )
    assert found == [{"model_type": "Flux", "status": "planned"}]
    run(examples_url, "prompt", "add", "p1", "--text", "a prompt")
    missing = tmp_path / "nope.png"
    result = run(
        examples_url,
        "prompt",
        "score",
        "SD15_PERFECT_Nov9",
        "7",
        "p1",
        "--score",
        "6",
        "--image",
        str(missing),
    )
    assert result.exit_code == 0
    assert f"warning: {missing} does not exist (yet)" in result.output


def test_numbers_print_as_people_write_them(examples_url: str) -> None:
    """alpha 16, not 16.0; 0.5 stays 0.5."""
    run(examples_url, "new", "half", "--network-alpha", "0.5", "--learning-rate", "0.0001")
    shown = run(examples_url, "show", "SD15_PERFECT_Nov9").output
    assert re.search(r"^  network_alpha +16$", shown, re.M), shown
    half = run(examples_url, "show", "half").output
    assert re.search(r"^  network_alpha +0.5$", half, re.M)
    assert re.search(r"^  learning_rate +0.0001$", half, re.M)
    table = run(examples_url, "runs", "--columns", "run_name,network_alpha").output
    assert re.search(r"^SD15_PERFECT_Nov9 +16$", table, re.M), table


# -- tried --config reads the files people have -------------------------------------------------


def test_tried_reads_kohya_ss_gui_json(examples_url: str) -> None:
    """The GUI's JSON: max_resolution, optimizer, sdxl... used; the same settings found."""
    result = run(
        examples_url, "tried", "--config", str(CONFIGS / "kohya_ss_gui_lora.json"), "--json"
    )
    assert result.exit_code == 0, result.output
    answer = json.loads(result.output)
    assert answer["settings"] == {
        "network_dim": 32,
        "network_alpha": 16,
        "resolution": "512x512",
        "learning_rate": 0.0001,
        "optimizer": "AdamW8bit",
        "base_model": "runwayml/stable-diffusion-v1-5",
        "model_type": "SD15",
    }
    assert [r["run_name"] for r in answer["equivalent"]] == ["SD15_PERFECT_Nov9"]
    text = run(examples_url, "tried", "--config", str(CONFIGS / "kohya_ss_gui_lora.json"))
    assert "(kohya_ss GUI JSON): used network_dim, network_alpha, max_resolution" in text.output
    assert "not compared: 41 other keys (--json lists them)" in text.output
    report = json.loads(result.output)["config"]
    assert report["kind"] == "kohya_ss GUI JSON" and "LoRA_type" in report["not_compared"]
    assert report["used"]["max_resolution"] == "resolution"


def test_tried_reads_kohya_ss_gui_toml_and_sd_scripts_toml(examples_url: str) -> None:
    """The GUI's sectioned config.toml and sd-scripts' own TOML both give their settings."""
    gui = run(
        examples_url, "tried", "--config", str(CONFIGS / "kohya_ss_gui_config.toml"), "--json"
    )
    settings = json.loads(gui.output)["settings"]
    assert settings == {
        "network_dim": 64,
        "network_alpha": 32,
        "resolution": "1024x1024",
        "learning_rate": 0.0001,
        "optimizer": "Adafactor",
        "model_type": "SDXL",
    }
    own = run(examples_url, "tried", "--config", str(CONFIGS / "sd_scripts_config.toml"))
    assert own.exit_code == 3  # the same settings as SD15_bespoke_baby_Nov7, which failed
    assert "THIS CONFIGURATION ALREADY FAILED:\n    - SD15_bespoke_baby_Nov7" in own.output


def test_tried_config_with_wrong_types_says_which_keys(examples_url: str, tmp_path: Path) -> None:
    """network_dim = "abc" and friends: one line naming every unusable key, exit 1."""
    config = tmp_path / "bad.toml"
    config.write_text(
        'network_dim = "abc"\nlearning_rate = "fast"\nnetwork_alpha = [1, 2]\n'
        'resolution = 5\noptimizer_type = "AdamW8bit"\n'
    )
    result = run(examples_url, "tried", "--config", str(config))
    one_line_error(
        result,
        1,
        "could not use network_dim ('abc' is not a whole number); "
        "network_alpha ([1, 2] is not a number); resolution (5 is not a resolution "
        "like 512,512",
    )
    assert "learning_rate ('fast' is not a number)" in result.output
    given = run(
        examples_url,
        "tried",
        "--config",
        str(config),
        "--network-dim",
        "32",
        "--network-alpha",
        "16",
        "--learning-rate",
        "0.0001",
        "--resolution",
        "512",
    )
    assert given.exit_code == 0, given.output  # the options replace the unusable keys
    binary = tmp_path / "weights.toml"
    binary.write_bytes(b"\x00\x01\xff\xfe\x80safetensors" * 20)
    one_line_error(
        run(examples_url, "tried", "--config", str(binary)),
        1,
        "is not a text file (expected a kohya TOML or JSON)",
    )
    one_line_error(
        run(examples_url, "watch", "--once", "--config", str(binary), str(tmp_path)),
        1,
        "is not a text file",
    )


# -- issue 9: clear errors, nothing changed -----------------------------------------------------

REFUSED = [
    (["cleanup", "--older-than", "10000y", "--yes"], 2, "10000y is more than 1000 years"),
    (["cleanup", "--older-than", "999999999999h", "--yes"], 2, "is more than 1000 years"),
    (["new", "n" * 10_000], 1, "a run name is at most 200 characters (this one has 10000)"),
    (["new", "x", "--learning-rate", "inf"], 2, "'inf' is not a finite number"),
    (["new", "x", "--network-alpha", "inf"], 2, "'inf' is not a finite number"),
    (["new", "x", "--learning-rate", "nan"], 2, "'nan' is not a finite number"),
    (["tried", "--learning-rate", "inf"], 2, "'inf' is not a finite number"),
]


@pytest.mark.parametrize(
    ("args", "code", "message"), REFUSED, ids=[" ".join(a[:3])[:30] for a, _, _ in REFUSED]
)
def test_bad_input_is_one_line_and_changes_nothing(
    examples_url: str, args: list[str], code: int, message: str
) -> None:
    """One line, exit 1 or 2, no traceback, nothing changed."""
    before = snapshot(examples_url)
    one_line_error(run(examples_url, *args), code, message)
    assert snapshot(examples_url) == before


# -- terminal output is safe --------------------------------------------------------------------

HOSTILE = "evil\x1b]0;pwned\x07\x9b31m\rname"


def test_control_characters_are_escaped_everywhere(examples_url: str) -> None:
    """A run name and findings from a file cannot drive the terminal: tables, show, JSON,
    confirmations and errors all escape them."""
    with psycopg.connect(examples_url, row_factory=dict_row, autocommit=True) as conn:
        # (as capture names a run from a file's output name: `new` refuses such a name)
        found = conn.execute(
            "INSERT INTO training_runs (run_name, model_type) VALUES (%s, 'SD15') RETURNING id",
            (HOSTILE,),
        ).fetchone()
        assert found is not None
        created = runs_module.get_run(conn, found["id"])
        runs_module.update_run(
            conn,
            created.id,
            RunFields(
                key_findings="bad\x1b[2Jfindings",
                output_dir="/out/\x1b[31mred",
            ),
        )
    outputs = [
        run(examples_url, "runs", "--wide").output,
        run(examples_url, "runs", columns=80).output,
        run(examples_url, "show", str(created.id)).output,
        run(examples_url, "score", str(created.id), "1", "--visual", "3").output,  # error
        run(examples_url, "verdict", str(created.id), "--quality", "4").output,
        run(examples_url, "sql", "SELECT run_name, key_findings FROM training_runs").output,
        run(examples_url, "sql", "--expanded", "SELECT * FROM training_runs").output,
        run(examples_url, "tried", "--model-type", "SD15").output,
        run(examples_url, "show", str(created.id), "--json").output,
    ]
    for output in outputs:
        assert not re.search(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]", output), repr(output)
    assert "evil\\x1b]0;pwned\\x07\\x9b31m name" in outputs[0]  # \r: a space in a table
    assert "bad\\x1b[2Jfindings" in outputs[2] and "/out/\\x1b[31mred" in outputs[2]
    assert "evil\\x1b]0;pwned" in outputs[3] and outputs[3].startswith("Error: ")
    shown = json.loads(outputs[8])
    assert shown["run"]["run_name"] == HOSTILE  # the JSON keeps the data, escaped as \\u


# -- the README's walkthrough, as written -------------------------------------------------------


def _readme_commands() -> list[list[str]]:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text.split("## Judging runs and deciding")[1].split("\n## ")[0]
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", section, re.S):
        for line in block.replace("\\\n", " ").splitlines():
            words = shlex.split(line, comments=True)
            if words and words[0] == "lora-tracker":
                commands.append(words[1:])
    return commands


def test_readme_walkthrough_runs_as_written(
    examples_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every command of the README's judging walkthrough works, in order, as written."""
    captions = tmp_path / "pixelbaby"
    captions.mkdir()
    for i in range(3):
        (captions / f"{i}.txt").write_text("pixel art baby, pink onesie (#F4B6C2), sitting")
    monkeypatch.chdir(tmp_path)
    commands = _readme_commands()
    assert len(commands) >= 15
    for words in commands:
        words = [w.replace("/data/pixelbaby", str(captions)) for w in words]
        words = [str(ROOT / w) if w.startswith("examples/") else w for w in words]
        result = run(examples_url, *words)
        expected = 3 if words[:2] == ["tried", "--model-type"] else 0
        assert result.exit_code == expected, (words, result.output)
    retry = rows(
        examples_url,
        "SELECT status, overall_verdict, best_epoch, quality_score "
        "FROM training_runs WHERE run_name = 'SD15_retry_dim32'",
    )
    assert retry == [
        {"status": "completed", "overall_verdict": "success", "best_epoch": 5, "quality_score": 9}
    ]
    assert (tmp_path / "runs.csv").is_file()


# -- the layout itself, without a database ------------------------------------------------------


def test_tables_measure_wide_characters_and_never_exceed_the_width() -> None:
    """Double-width characters count twice; every line fits at each width from 20 to 120."""
    from rich.cells import cell_len

    from lora_tracker.cli.output import format_table

    columns = ["id", "run_name", "notes", "quality_score"]
    rows_ = [[1, "ピクセル赤ちゃん_v2", "とても長い説明 " * 10, 9], [22, "x" * 30, "short", None]]
    for width in range(20, 121, 5):
        lines = format_table(columns, rows_, width=width).splitlines()
        assert all(cell_len(line) <= width for line in lines), (width, lines)
        assert lines[0].startswith("id") and "run_name" in lines[0]


def test_number_ranges() -> None:
    """Recorded epochs read as ranges."""
    from lora_tracker.judging import number_ranges

    assert number_ranges([1, 2, 3, 4]) == "1-4"
    assert number_ranges([9, 1, 2, 3, 7, 10]) == "1-3, 7, 9-10"
    assert number_ranges([]) == ""


@settings(max_examples=300, deadline=None)
@given(
    naturals=st.lists(st.integers(min_value=1, max_value=90), min_size=1, max_size=12),
    width=st.integers(min_value=20, max_value=200),
)
def test_fit_columns_uses_the_room_it_has(naturals: list[int], width: int) -> None:
    """Within the width, nothing wider than its text, and a column is left out only when
    even its narrowest form would not fit beside the others."""
    from lora_tracker.cli.output import fit_columns

    columns = [f"c{i}" for i in range(len(naturals))]
    cells = [["x" * n for n in naturals]]
    natural = [max(n, len(c)) for n, c in zip(naturals, columns, strict=True)]
    chosen, widths = fit_columns(columns, cells, width)
    assert chosen[0] == 0 and chosen == sorted(chosen)
    total = sum(widths) + 2 * (len(widths) - 1)
    assert total <= width or len(chosen) == 1
    assert all(1 <= w <= natural[i] for i, w in zip(chosen, widths, strict=True))
    for i in set(range(len(columns))) - set(chosen):
        narrowest = natural[i] if natural[i] <= 24 else 10
        assert total + 2 + narrowest > width, (i, chosen, widths)


def test_new_takes_a_resolution_as_tried_does(db_url: str) -> None:
    """`new --resolution 512` is 512x512 (as `tried` reads it); nonsense is one line."""
    from click.testing import CliRunner

    from lora_tracker.cli import cli

    made = CliRunner().invoke(cli, ["--database-url", db_url, "new", "r512", "--resolution", "512"])
    assert made.exit_code == 0, made.output
    bad = CliRunner().invoke(cli, ["--database-url", db_url, "new", "rbad", "--resolution", "big"])
    assert bad.exit_code == 2 and "is not like 512x512" in bad.output
    import psycopg

    with psycopg.connect(db_url) as conn:
        found = conn.execute("SELECT run_name, resolution FROM training_runs").fetchall()
    assert found == [("r512", "512x512")]


def test_a_deadlock_is_one_line_and_says_to_run_again() -> None:
    """Concurrent writers (a watcher's batch and a verdict) can deadlock on the stats
    summaries; PostgreSQL rolls one back whole: that command says so in one line."""
    import psycopg
    from click.testing import CliRunner

    from lora_tracker.cli import TrackerGroup

    group = TrackerGroup(name="t")  # the error boundary every lora-tracker command goes through

    @group.command()
    def busy() -> None:
        error = psycopg.errors.DeadlockDetected("deadlock detected")
        assert error.sqlstate == "40P01"
        raise error

    result = CliRunner().invoke(group, ["busy"])
    assert result.exit_code == 1
    assert result.output.strip().splitlines() == [
        "Error: another writer was changing the same rows at the same moment (a deadlock): "
        "nothing was changed; run the command again"
    ]


def test_a_question_with_no_terminal_to_answer_it(examples_url: str) -> None:
    """`delete` and `cleanup` without --yes, standard input not a terminal and empty (a
    script, cron): one line saying how to go ahead, exit 1, nothing deleted; an answer
    piped in is still read."""
    before = rows(examples_url, "SELECT run_name FROM training_runs ORDER BY 1")
    for command in (["delete", "SD15_PERFECT_Nov9"], ["cleanup", "--older-than", "1d"]):
        done = subprocess.run(
            [sys.executable, "-m", "lora_tracker", "--database-url", examples_url, *command],
            stdin=subprocess.DEVNULL, capture_output=True, text=True, env=_real_env(),
            timeout=120,
        )  # fmt: skip
        assert done.returncode == 1, done
        assert done.stderr.strip().splitlines()[-1] == (
            "Error: no answer to the question (standard input is not a terminal): nothing "
            "was changed; --yes goes ahead without asking"
        ), done.stderr
    assert rows(examples_url, "SELECT run_name FROM training_runs ORDER BY 1") == before
    answered = subprocess.run(
        [sys.executable, "-m", "lora_tracker", "--database-url", examples_url,
         "delete", "SD15_PERFECT_Nov9"],
        input="n\n", capture_output=True, text=True, env=_real_env(), timeout=120,
    )  # fmt: skip
    assert answered.returncode == 1 and "Aborted!" in answered.stderr, answered
    assert rows(examples_url, "SELECT run_name FROM training_runs ORDER BY 1") == before
