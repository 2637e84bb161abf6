"""Every SQL query of the reference document runs verbatim, with the documented findings."""

from __future__ import annotations

import json
import re
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg
import pytest
from click.testing import CliRunner
from psycopg.rows import dict_row

from lora_tracker.cli import cli

from .conftest import ROOT

# the reference document's queries must run unchanged on each server
pytestmark = pytest.mark.both_servers

REFERENCE = ROOT / "tests" / "data" / "TRAINING_TRACKING_README.md"
SHARED_REFERENCE = ROOT.parent / "shared" / "reference" / "TRAINING_TRACKING_README.md"
# A placeholder in the document's prose, not SQL: "INSERT INTO epoch_results (...) VALUES (...)"
PLACEHOLDER = "INSERT INTO epoch_results (...) VALUES (...)"
COPY_TARGET = Path("/tmp/training_runs.csv")


def reference_statements() -> list[str]:
    """The SQL statements of the document's ```sql blocks, in order, minus psql's \\i."""
    text = REFERENCE.read_text(encoding="utf-8")
    statements: list[str] = []
    for block in re.findall(r"```sql\n(.*?)```", text, flags=re.S):
        lines = [line for line in block.splitlines() if not line.startswith("\\i ")]
        current: list[str] = []
        for line in lines:
            current.append(line)
            if line.rstrip().endswith(";"):
                statements.append("\n".join(current).strip())
                current = []
        rest = "\n".join(current).strip()
        if _strip_comments(rest):
            statements.append(rest)
    return [s for s in statements if _strip_comments(s) and PLACEHOLDER not in s]


def _strip_comments(sql: str) -> str:
    return "\n".join(line for line in sql.splitlines() if not line.strip().startswith("--")).strip()


def _clear_copy_target() -> None:
    # The server writes this file as its own OS user; a file left by the other server's
    # user cannot be overwritten in sticky /tmp.
    try:
        COPY_TARGET.unlink(missing_ok=True)
    except PermissionError:
        pytest.skip(f"{COPY_TARGET} belongs to another user")


def _prepare(url: str) -> None:
    # The document inserts an epoch for training_run_id 123, "the id from the previous
    # query": make the document's own INSERT ... RETURNING id return 123.
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("ALTER TABLE training_runs ALTER COLUMN id RESTART WITH 123")
    _clear_copy_target()


def test_reference_copy_is_current() -> None:
    """tests/data holds the same document as shared/reference (when that is present)."""
    if not SHARED_REFERENCE.exists():
        pytest.skip("no shared/ beside this checkout")
    assert REFERENCE.read_bytes() == SHARED_REFERENCE.read_bytes()


def test_statements_found() -> None:
    """The extraction finds all the document's queries (guards against a silent zero)."""
    statements = reference_statements()
    assert len(statements) == 24  # counted by hand: every query in the document
    assert any(s.startswith("SELECT * FROM training_comparison") for s in statements)
    assert any(s.startswith("COPY (") for s in statements)
    assert any("DELETE FROM training_runs" in s for s in statements)


def test_every_query_runs_verbatim_through_psycopg(examples_url: str) -> None:
    """All the document's statements run in order through psycopg, unchanged."""
    _prepare(examples_url)
    with psycopg.connect(examples_url, autocommit=True, row_factory=dict_row) as conn:
        for statement in reference_statements():
            try:
                conn.execute(statement)
            except psycopg.Error as exc:  # pragma: no cover - the failure message is the point
                pytest.fail(f"{exc}\nin statement:\n{statement}")
        new_run = conn.execute(
            "SELECT id, status, overall_verdict, quality_score, issues_found "
            "FROM training_runs WHERE run_name = 'Your_Run_Name_Date'"
        ).fetchone()
        assert new_run == {
            "id": 123,
            "status": "completed",
            "overall_verdict": "success",
            "quality_score": 9,
            "issues_found": ["issue1", "issue2"],
        }
        epoch = conn.execute(
            "SELECT epoch_number, checkpoint_file_size_mb FROM epoch_results "
            "WHERE training_run_id = 123"
        ).fetchone()
        assert epoch == {"epoch_number": 1, "checkpoint_file_size_mb": Decimal("36.00")}
    assert COPY_TARGET.read_text().splitlines()[0].startswith("run_name,run_date,model_type")


def test_every_query_runs_verbatim_through_the_cli(examples_url: str) -> None:
    """All the document's statements run in order through `lora-tracker sql`."""
    _prepare(examples_url)
    runner = CliRunner()
    for statement in reference_statements():
        result = runner.invoke(cli, ["--database-url", examples_url, "sql", statement])
        assert result.exit_code == 0, f"{result.output}\nin statement:\n{statement}"
    result = runner.invoke(
        cli,
        [
            "--database-url",
            examples_url,
            "sql",
            "--json",
            "SELECT count(*) AS n FROM training_runs WHERE run_name = 'Your_Run_Name_Date'",
        ],
    )
    assert json.loads(result.output) == [{"n": 1}]


def _query(url: str, heading: str) -> list[dict[str, Any]]:
    """Run the first query under a heading of the document, through the CLI, as JSON."""
    text = REFERENCE.read_text(encoding="utf-8")
    section = text[text.index(heading) :]
    statement = re.search(r"```sql\n(.*?)```", section, flags=re.S)
    assert statement is not None
    result = CliRunner().invoke(cli, ["--database-url", url, "sql", "--json", statement.group(1)])
    assert result.exit_code == 0, result.output
    rows: list[dict[str, Any]] = json.loads(result.output)
    return rows


def test_finding_1_network_dimension(examples_url: str) -> None:
    """dim 32 -> success 9/10, dim 64 -> failure 0/10."""
    rows = _query(examples_url, "### Finding #1")
    assert [(r["network_dim"], r["overall_verdict"], r["quality_score"]) for r in rows] == [
        (32, "success", 9),
        (64, "failure", 0),
    ]
    assert [r["checkpoint_file_size_mb"] for r in rows] == [36, 72]
    assert "photorealistic" in rows[1]["key_findings"]


def test_finding_2_sdxl_struggles(examples_url: str) -> None:
    """SD15/32/512x512 -> 9 and SDXL/128/1024x1024 -> 4."""
    rows = _query(examples_url, "### Finding #2")
    found = {(r["model_type"], r["network_dim"], r["resolution"]): r["avg_quality"] for r in rows}
    assert found[("SD15", 32, "512x512")] == 9
    assert found[("SDXL", 128, "1024x1024")] == 4


def test_finding_3_captions_alone(examples_url: str) -> None:
    """civitai_v2_7_training: 3 runs, average 4.33, verdicts success, failure, partial."""
    rows = _query(examples_url, "### Finding #3")
    assert len(rows) == 1
    row = rows[0]
    assert row["caption_version"] == "civitai_v2_7_training"
    assert row["num_runs"] == 3
    assert round(row["avg_quality"], 2) == 4.33
    assert sorted(row["verdicts"].split(", ")) == ["failure", "partial", "success"]


def test_quick_queries_return_documented_rows(examples_url: str) -> None:
    """The quick queries list the three runs and the one production-ready epoch."""
    runs = _query(examples_url, "### View All Training Runs")
    assert [r["run_name"] for r in runs] == [
        "SDXL_Current_Nov12",
        "SD15_PERFECT_Nov9",
        "SD15_bespoke_baby_Nov7",
    ]
    ready = _query(examples_url, "### Find Production-Ready Models")
    assert [(r["run_name"], r["epoch_number"]) for r in ready] == [("SD15_PERFECT_Nov9", 7)]
    best = _query(examples_url, "### Find Best Epoch for a Specific Run")
    assert best[0]["epoch_number"] == 7 and best[0]["verdict"] == "best"
    failures = _query(examples_url, "### Analyze Failure Patterns")
    assert [r["run_name"] for r in failures] == ["SD15_bespoke_baby_Nov7"]
    assert "photorealistic babies" in failures[0]["issues_found"]


def test_example_data_counts_and_idempotence(examples_url: str) -> None:
    """3 runs, 13 epochs, 2 caption versions; loading again adds nothing."""
    from lora_tracker.migrations import load_examples

    with psycopg.connect(examples_url, autocommit=True, row_factory=dict_row) as conn:
        load_examples(conn)
        load_examples(conn)
        counts = conn.execute(
            "SELECT (SELECT count(*) FROM training_runs) AS runs, "
            "(SELECT count(*) FROM epoch_results) AS epochs, "
            "(SELECT count(*) FROM caption_versions) AS captions"
        ).fetchone()
        assert counts == {"runs": 3, "epochs": 13, "captions": 2}
        sdxl = conn.execute(
            "SELECT array_agg(er.epoch_number ORDER BY er.epoch_number) AS epochs "
            "FROM epoch_results er JOIN training_runs tr ON tr.id = er.training_run_id "
            "WHERE tr.run_name = 'SDXL_Current_Nov12'"
        ).fetchone()
        assert sdxl == {"epochs": [1, 2, 3, 4, 5, 6, 7, 8]}
