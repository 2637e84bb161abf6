"""Whole tables and views, for `lora-tracker export`. All SQL of exports lives here."""

from __future__ import annotations

from typing import Any

from psycopg.rows import tuple_row

from .pg import Connection

EXPORTS: dict[str, str] = {
    "runs": "SELECT * FROM training_runs ORDER BY run_date DESC, id DESC",
    "epochs": (
        "SELECT tr.run_name, er.* FROM epoch_results er "
        "JOIN training_runs tr ON tr.id = er.training_run_id "
        "ORDER BY tr.run_name, er.epoch_number"
    ),
    "training_comparison": "SELECT * FROM training_comparison ORDER BY run_date DESC, id DESC",
    "best_training_runs": "SELECT * FROM best_training_runs",
    "production_ready_epochs": "SELECT * FROM production_ready_epochs",
    "captions": "SELECT * FROM caption_versions ORDER BY version_name",
    "prompts": "SELECT * FROM test_prompts ORDER BY prompt_name",
    "prompt-results": (
        "SELECT tr.run_name, er.epoch_number, tp.prompt_name, ptr.* "
        "FROM prompt_test_results ptr "
        "JOIN epoch_results er ON er.id = ptr.epoch_result_id "
        "JOIN training_runs tr ON tr.id = er.training_run_id "
        "JOIN test_prompts tp ON tp.id = ptr.test_prompt_id "
        "ORDER BY tr.run_name, er.epoch_number, tp.prompt_name"
    ),
    "checkpoints": (
        "SELECT tr.run_name, c.* FROM checkpoints c "
        "JOIN training_runs tr ON tr.id = c.training_run_id ORDER BY tr.run_name, c.path"
    ),
}


def export_rows(conn: Connection, what: str) -> tuple[list[str], list[tuple[Any, ...]]]:
    """Column names and rows of one export (a key of EXPORTS)."""
    cur = conn.cursor(row_factory=tuple_row)
    cur.execute(EXPORTS[what])  # fixed SQL from this module, never user text
    columns = [d.name for d in cur.description or []]
    return columns, cur.fetchall()
