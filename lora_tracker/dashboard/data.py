"""What the dashboard shows, as JSON-ready data. The dashboard's own queries live here (the
server holds none); the statistics it shares with `stats` come from decisions.py."""

from __future__ import annotations

import base64
import mimetypes
import os
from datetime import datetime, timezone
from typing import Any

from .. import decisions, epochs, prompts
from ..pg import Connection

# what the page shows of an epoch (not its raw checkpoint metadata)
EPOCH_COLUMNS = (
    "id", "epoch_number", "visual_quality_score", "style_match_score",
    "prompt_adherence_score", "verdict", "production_ready", "loss", "has_wrong_backgrounds",
    "has_random_pixels", "is_photorealistic", "checkpoint_path", "checkpoint_on_disk",
    "sample_images", "observations",
)  # fmt: skip


def fingerprint(conn: Connection) -> str:
    """Changes whenever a run, an epoch or a prompt result is added or changed."""
    row = conn.execute(
        """
        SELECT (SELECT count(*) FROM training_runs) AS runs,
               (SELECT max(updated_at) FROM training_runs) AS runs_at,
               (SELECT count(*) FROM epoch_results) AS epochs,
               (SELECT max(updated_at) FROM epoch_results) AS epochs_at,
               (SELECT count(*) FROM prompt_test_results) AS results,
               (SELECT max(updated_at) FROM prompt_test_results) AS results_at
        """
    ).fetchone()
    assert row is not None
    return "|".join(str(v) for v in row.values())


def runs(conn: Connection) -> list[dict[str, Any]]:
    """Every run with its epoch statistics (the training_comparison view's columns)."""
    return conn.execute(
        """
        SELECT tr.id, tr.run_name, tr.run_date, tr.status, tr.model_type, tr.network_dim,
               tr.network_alpha, tr.resolution, tr.caption_version, tr.learning_rate,
               tr.optimizer, tr.overall_verdict, tr.quality_score, tr.production_ready,
               tr.best_epoch, coalesce(e.n, 0) AS epochs_recorded,
               e.avg_visual AS avg_visual_quality, e.max_visual AS max_visual_quality
        FROM training_runs tr
        LEFT JOIN (
            SELECT training_run_id, count(*) AS n,
                   round(avg(visual_quality_score), 2) AS avg_visual,
                   max(visual_quality_score) AS max_visual
            FROM epoch_results GROUP BY training_run_id
        ) e ON e.training_run_id = tr.id
        ORDER BY tr.run_date DESC, tr.id DESC
        """
    ).fetchall()


def overview(conn: Connection) -> dict[str, Any]:
    """Aggregates for the charts: quality against settings, success rate, issues."""

    def q(query: str) -> list[dict[str, Any]]:
        return conn.execute(query).fetchall()  # fixed SQL written here, no values

    return {
        "quality_by_dim": q(
            "SELECT model_type, network_dim AS x, round(avg(quality_score), 2) AS quality, "
            "count(*) AS runs FROM training_runs "
            "WHERE quality_score IS NOT NULL AND network_dim IS NOT NULL "
            "GROUP BY 1, 2 ORDER BY 2"
        ),
        "quality_by_alpha": q(
            "SELECT model_type, network_alpha AS x, round(avg(quality_score), 2) AS quality, "
            "count(*) AS runs FROM training_runs "
            "WHERE quality_score IS NOT NULL AND network_alpha IS NOT NULL "
            "GROUP BY 1, 2 ORDER BY 2"
        ),
        "quality_by_resolution": q(
            "SELECT resolution AS x, round(avg(quality_score), 2) AS quality, "
            "count(*) AS runs FROM training_runs "
            "WHERE quality_score IS NOT NULL AND resolution IS NOT NULL "
            "GROUP BY 1 ORDER BY split_part(resolution, 'x', 1)::int"
        ),
        "quality_by_model": q(
            "SELECT coalesce(model_type, 'unknown') AS x, "
            "round(avg(quality_score), 2) AS quality, count(*) AS runs FROM training_runs "
            "WHERE quality_score IS NOT NULL GROUP BY 1 ORDER BY 1"
        ),
        # the same rows as `stats` (one query each, in decisions.py)
        "success_rate": decisions.success_rate(conn),
        "issue_frequency": decisions.issue_frequency(conn),
        "production_ready": q(
            "SELECT run_name, epoch_number, model_type, network_dim, resolution, "
            "visual_quality_score, style_match_score, prompt_adherence_score, verdict, "
            "checkpoint_path, checkpoint_on_disk FROM production_ready_epochs LIMIT 200"
        ),
    }


def snapshot(conn: Connection, *, epochs_for: int | None = None) -> dict[str, Any]:
    """Everything the page needs. ``epochs_for``: include epochs and prompt results for the
    newest N runs (None: every run)."""
    all_runs = runs(conn)
    chosen = [r["id"] for r in (all_runs if epochs_for is None else all_runs[:epochs_for])]
    return {
        "generated_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "fingerprint": fingerprint(conn),
        "runs": all_runs,
        "epochs": epochs.epochs_of_runs(conn, chosen, EPOCH_COLUMNS),
        "prompt_results": prompts.results_of_runs(conn, chosen),
        "epochs_complete": epochs_for is None or epochs_for >= len(all_runs),
        **overview(conn),
    }


def recorded_image(conn: Connection, path: str) -> bool:
    """Only images the database knows of are served (never an arbitrary file)."""
    row = conn.execute(
        """
        SELECT EXISTS (SELECT 1 FROM prompt_test_results WHERE image_path = %s)
            OR EXISTS (SELECT 1 FROM epoch_results WHERE %s = ANY(sample_images)) AS known
        """,
        (path, path),
    ).fetchone()
    return bool(row and row["known"])


def image_data_uri(path: str, max_bytes: int) -> str | None:
    """A small image file as a data: URI (for the self-contained report), else None."""
    mime = mimetypes.guess_type(path)[0]
    if mime is None or not mime.startswith("image/"):
        return None
    try:
        if os.path.getsize(path) > max_bytes:
            return None
        with open(path, "rb") as handle:
            payload = handle.read()
    except OSError:
        return None
    return f"data:{mime};base64,{base64.b64encode(payload).decode()}"
