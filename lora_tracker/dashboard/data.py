"""What the dashboard shows, as JSON-ready data. The dashboard's own queries live here (the
server holds none); the statistics it shares with `stats` come from decisions.py."""

from __future__ import annotations

import base64
from datetime import datetime, timezone
from typing import Any

from .. import decisions, epochs, prompts
from ..pg import Connection
from .rasters import HEAD_BYTES, raster_type

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
    mark = fingerprint(conn)  # first, as judging_view's version (see there)
    all_runs = runs(conn)
    chosen = [r["id"] for r in (all_runs if epochs_for is None else all_runs[:epochs_for])]
    return {
        "generated_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "fingerprint": mark,
        "runs": all_runs,
        "epochs": epochs.epochs_of_runs(conn, chosen, EPOCH_COLUMNS),
        "prompt_results": prompts.results_of_runs(conn, chosen),
        "epochs_complete": epochs_for is None or epochs_for >= len(all_runs),
        **overview(conn),
    }


def recent_images(conn: Connection, limit: int = 2000) -> list[str]:
    """The images of the newest runs (linked test images and sample images), newest run
    first: what the dashboard makes thumbnails of ahead, when it starts."""
    rows = conn.execute(
        """
        SELECT path FROM (
            SELECT tr.run_date, er.epoch_number, ptr.image_path AS path
            FROM prompt_test_results ptr
            JOIN epoch_results er ON er.id = ptr.epoch_result_id
            JOIN training_runs tr ON tr.id = er.training_run_id
            WHERE ptr.image_path IS NOT NULL
            UNION ALL
            SELECT tr.run_date, er.epoch_number, unnest(er.sample_images)
            FROM epoch_results er JOIN training_runs tr ON tr.id = er.training_run_id
        ) images
        ORDER BY run_date DESC, epoch_number
        LIMIT %s
        """,
        (limit,),
    ).fetchall()
    return [r["path"] for r in rows]


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


def known_image(conn: Connection, path: str) -> str | None:
    """For an image the database knows of (a prompt result's or a sample image): the
    SHA-256 a linked image was recorded with ('' when none was), else None."""
    row = conn.execute(
        """
        SELECT (SELECT min(substr(result_key, 7)) FROM prompt_test_results
                WHERE image_path = %s AND result_key LIKE 'image:%%') AS sha256,
               EXISTS (SELECT 1 FROM prompt_test_results WHERE image_path = %s)
            OR EXISTS (SELECT 1 FROM epoch_results WHERE %s = ANY(sample_images)) AS known
        """,
        (path, path, path),
    ).fetchone()
    if not row or not row["known"]:
        return None
    return str(row["sha256"] or "")


SMALL_ORIGINAL_BYTES = 64 * 1024  # an image this small is shown as it is if Pillow balks


def thumbnail(
    path: str, sha256: str | None = None, size: int | None = None
) -> tuple[bytes, str] | None:
    """(bytes, media type) of an image's thumbnail (made once, cached; ``size`` one of
    thumbnails.THUMBNAIL_SIZES, default its DEFAULT_SIZE), never the full file; a raster
    file Pillow cannot read but a browser may (a few KB) is given as it is. None when it is
    not a raster image, is gone or is unreadable."""
    from ..thumbnails import DEFAULT_SIZE, MEDIA_TYPE, ThumbnailError, thumbnail_path

    try:
        made = thumbnail_path(path, sha256 or None, size or DEFAULT_SIZE)
        return made.read_bytes(), MEDIA_TYPE
    except (ThumbnailError, OSError, ValueError):  # ValueError: a NUL in the path
        pass
    try:
        with open(path, "rb") as handle:
            payload = handle.read(SMALL_ORIGINAL_BYTES + 1)
    except (OSError, ValueError):
        return None
    mime = raster_type(payload[:HEAD_BYTES])  # never an SVG, whatever its name says
    return (payload, mime) if mime and 0 < len(payload) <= SMALL_ORIGINAL_BYTES else None


def image_data_uri(path: str, max_bytes: int, sha256: str | None = None) -> str | None:
    """An image's thumbnail as a data: URI (for the self-contained report), else None."""
    found = thumbnail(path, sha256)
    if found is None or len(found[0]) > max_bytes:
        return None
    payload, mime = found
    return f"data:{mime};base64,{base64.b64encode(payload).decode()}"


# what the judging view shows of a run: its verdict form and what names it
JUDGE_RUN_COLUMNS = (
    "id", "run_name", "status", "model_type", "network_dim", "network_alpha", "resolution",
    "overall_verdict", "quality_score", "production_ready", "best_epoch", "key_findings",
    "issues_found", "strengths", "recommended_for", "notes", "updated_at",
)  # fmt: skip


def judging_view(conn: Connection, run_ref: str | int) -> dict[str, Any]:
    """One run as the judging view needs it: the run's verdict fields, its epochs, and every
    prompt result of its epochs with the prompt and how the image was made (seed, weight),
    plus the version the page polls. The prompts come in the order of the run's kohya
    prompts file (``prompt_index``), the others after them by name: the grid's columns.
    NotFound / AmbiguousName for a bad run reference."""
    from .. import runs

    # the version first: a change committed while the rest is read (each statement sees
    # what is committed when it starts) then shows at the next poll; read last, it could
    # already hold a change the data does not, and the page would never show it
    run_id = int(runs.run_row(conn, run_ref)["id"])
    version = judging_version(conn, run_id)
    run = runs.get_run(conn, run_id)
    results = conn.execute(
        f"""
        SELECT ptr.id, er.epoch_number, tp.id AS prompt_id, tp.prompt_name, tp.prompt_text,
               {prompts.PROMPT_INDEX} AS prompt_index,
               ptr.result_key, ptr.seed, ptr.lora_weight, ptr.width, ptr.height,
               ptr.image_path, ptr.score, ptr.style_match_score, ptr.prompt_adherence_score,
               ptr.verdict, ptr.notes
        FROM prompt_test_results ptr
        JOIN epoch_results er ON er.id = ptr.epoch_result_id
        JOIN test_prompts tp ON tp.id = ptr.test_prompt_id
        WHERE er.training_run_id = %s
        ORDER BY prompt_index NULLS LAST, tp.prompt_name, ptr.seed NULLS FIRST,
                 ptr.lora_weight NULLS FIRST, er.epoch_number, ptr.result_key
        """,  # noqa: S608 (PROMPT_INDEX is fixed SQL written in prompts.py, no values)
        (run.id,),
    ).fetchall()
    return {
        "run": {name: getattr(run, name) for name in JUDGE_RUN_COLUMNS if hasattr(run, name)},
        "epochs": epochs.epochs_of_runs(conn, [run.id], EPOCH_COLUMNS)[run.id],
        "results": results,
        "version": version,
    }


def judging_version(conn: Connection, run_id: int) -> str:
    """Changes whenever the run, one of its epochs or one of their prompt results is
    added, changed or removed: the judging view polls it to show another tab's change."""
    row = conn.execute(
        """
        SELECT (SELECT updated_at FROM training_runs WHERE id = %(run)s) AS run_at,
               e.n AS epochs, e.at AS epochs_at, e.ids AS epoch_ids,
               r.n AS results, r.at AS results_at, r.ids AS result_ids
        FROM (SELECT count(*) AS n, max(updated_at) AS at, sum(id) AS ids
              FROM epoch_results WHERE training_run_id = %(run)s) e,
             (SELECT count(*) AS n, max(ptr.updated_at) AS at, sum(ptr.id) AS ids
              FROM prompt_test_results ptr
              JOIN epoch_results er ON er.id = ptr.epoch_result_id
              WHERE er.training_run_id = %(run)s) r
        """,
        {"run": run_id},
    ).fetchone()
    assert row is not None
    if row["run_at"] is None:
        return "gone"
    return "|".join(str(v) for v in row.values())
