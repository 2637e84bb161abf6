"""training_runs: create, find, update and delete runs, as a person does through the CLI or
the library. Capture writes its runs in ``capture/apply.py``; questions across runs
(``tried``, ``stats``) are in ``decisions.py``, the dashboard's reads in ``dashboard/data.py``."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

import psycopg
from psycopg import sql

from . import _sqlbuild
from .control_chars import has_control
from .errors import AlreadyExists, InvalidInput
from .lookup import find_by_ref
from .pg import Connection

if TYPE_CHECKING:
    from .models import RunCreate, RunFields, TrainingRun

# the verdict `tried` and the launch guard remember (decisions.TriedResult.failed_before)
FAILURE_VERDICT = "failure"
# PostgreSQL cannot index a name much longer than 2,700 bytes; a name is for people.
MAX_RUN_NAME_LENGTH = 200


def create_run(conn: Connection, run: RunCreate) -> TrainingRun:
    """Insert a run; a taken run_name raises AlreadyExists."""
    from .models import TrainingRun

    check_run_name(run.run_name)
    query, params = _sqlbuild.insert("training_runs", run.given() | {"run_name": run.run_name})
    try:
        with conn.transaction():
            row = conn.execute(query, params).fetchone()
    except psycopg.errors.UniqueViolation:
        raise AlreadyExists(f"a run named {run.run_name} already exists") from None
    assert row is not None
    return TrainingRun.model_validate(row)


def check_run_name(name: str) -> None:
    """InvalidInput for a name no one could type or read (empty, very long, or with a
    control character)."""
    if not name.strip():
        raise InvalidInput("a run name must not be empty")
    if len(name) > MAX_RUN_NAME_LENGTH:
        raise InvalidInput(
            f"a run name is at most {MAX_RUN_NAME_LENGTH} characters (this one has {len(name)})"
        )
    if has_control(name):  # a tab, a newline, an escape
        raise InvalidInput("a run name holds no control characters (a tab, a newline)")


def closest_names(conn: Connection, text: str, limit: int = 3) -> list[str]:
    """Run names most like ``text`` (a mistyped name), best first."""
    import difflib

    names = [r["run_name"] for r in conn.execute("SELECT run_name FROM training_runs").fetchall()]
    lowered = {n.lower(): n for n in names}
    found = difflib.get_close_matches(text.lower(), list(lowered), n=limit, cutoff=0.6)
    found += [n for n in lowered if text.lower() in n and n not in found]
    return [lowered[n] for n in found][:limit]


def run_row(conn: Connection, ref: str | int) -> dict[str, Any]:
    """The row of a run found as `get_run` finds it, without building the pydantic model
    (for commands that only print it: pydantic costs them a third of their time)."""
    return _find(conn, ref)


def get_run(conn: Connection, ref: str | int) -> TrainingRun:
    """A run by id, exact name, or unique name prefix.

    Raises NotFound when nothing matches and AmbiguousName, listing the candidates, when a
    prefix matches several runs.
    """
    from .models import TrainingRun

    return TrainingRun.model_validate(_find(conn, ref))


def _find(conn: Connection, ref: str | int) -> dict[str, Any]:
    def did_you_mean(text: str) -> str:
        close = closest_names(conn, text)
        return f" (did you mean {' or '.join(close)}?)" if close else ""

    return find_by_ref(
        conn, "training_runs", "run_name", ref, noun="run", nouns="runs",
        not_found_hint=did_you_mean,
    )  # fmt: skip


def update_run(conn: Connection, ref: str | int, fields: RunFields) -> TrainingRun:
    """Set only the fields given; returns the updated run."""
    from .models import TrainingRun

    run = _find(conn, ref)
    values = fields.given()
    if not values:
        return TrainingRun.model_validate(run)
    assignments, params = _sqlbuild.assignments(values)
    row = conn.execute(
        sql.SQL("UPDATE training_runs SET {} WHERE id = %s RETURNING *").format(assignments),
        [*params, run["id"]],
    ).fetchone()
    assert row is not None
    return TrainingRun.model_validate(row)


# -- summaries (what the training_comparison view shows) ------------------------------------

SUMMARY_COLUMNS = (
    "id", "run_name", "run_date", "status", "model_type", "base_model", "network_dim",
    "network_alpha", "resolution", "num_images", "caption_version", "learning_rate",
    "optimizer", "checkpoint_file_size_mb", "overall_verdict", "quality_score",
    "production_ready", "best_epoch", "epochs_recorded", "epochs_scored",
    "avg_visual_quality", "max_visual_quality", "production_ready_epochs", "key_findings",
)  # fmt: skip
FILTERABLE = ("model_type", "overall_verdict", "status", "caption_version", "network_dim",
              "resolution", "production_ready")  # fmt: skip
SORTS = {
    "date": "run_date DESC, id DESC",
    "quality": "quality_score DESC NULLS LAST, run_date DESC, id DESC",
    "name": "run_name",
}


def run_conditions(
    filters: dict[str, Any] | None = None,
    *,
    search: str | None = None,
    since: datetime | None = None,
) -> tuple[sql.Composable, list[Any]]:
    """``WHERE ...`` over training_runs (empty when nothing narrows), and its parameters.

    ``filters``: FILTERABLE columns and the value each must equal (None: any);
    ``search``: text the run name contains; ``since``: runs started at or after it.
    """
    conditions: list[sql.Composable] = []
    params: list[Any] = []
    for column, value in (filters or {}).items():
        if column not in FILTERABLE:
            raise ValueError(f"cannot filter on {column}")
        if value is None:
            continue
        conditions.append(sql.SQL("{} = %s").format(sql.Identifier(column)))
        params.append(value)
    if search:
        conditions.append(sql.SQL("run_name ILIKE %s"))
        params.append("%" + _sqlbuild.like_escape(search) + "%")
    if since is not None:
        conditions.append(sql.SQL("run_date >= %s"))
        params.append(since)
    if not conditions:
        return sql.SQL(""), params
    return sql.SQL("WHERE ") + sql.SQL(" AND ").join(conditions), params


def list_summaries(
    conn: Connection,
    filters: dict[str, Any] | None = None,
    *,
    search: str | None = None,
    since: datetime | None = None,
    sort: str = "date",
    limit: int | None = 50,
    extra_columns: Sequence[str] = (),
) -> list[dict[str, Any]]:
    """The training_comparison columns for one page of runs.

    Same columns as the view, but the page of runs is chosen first and only its epochs
    are aggregated, so it stays fast on a large history. ``extra_columns``: more columns
    of training_runs to return (e.g. ``num_epochs``, ``issues_found``).
    """
    from .models import TrainingRun

    unknown = [c for c in extra_columns if c not in TrainingRun.model_fields]
    if unknown:
        raise ValueError(f"training_runs has no column {unknown[0]}")
    where, params = run_conditions(filters, search=search, since=since)
    extra = sql.SQL("").join(sql.SQL(", tr.{}").format(sql.Identifier(c)) for c in extra_columns)
    order = sql.SQL(SORTS[sort])
    query = sql.SQL(
        """
        SELECT tr.id, tr.run_name, tr.run_date, tr.status, tr.model_type, tr.base_model,
               tr.network_dim, tr.network_alpha, tr.resolution, tr.num_images,
               tr.caption_version, tr.learning_rate, tr.optimizer, tr.checkpoint_file_size_mb,
               tr.overall_verdict, tr.quality_score, tr.production_ready, tr.best_epoch,
               e.epochs_recorded, e.epochs_scored, e.avg_visual_quality, e.max_visual_quality,
               e.production_ready_epochs, tr.key_findings{extra}
        FROM (SELECT * FROM training_runs {where} ORDER BY {order} LIMIT %s) tr
        LEFT JOIN LATERAL (
            SELECT count(*) AS epochs_recorded,
                   count(visual_quality_score) AS epochs_scored,
                   round(avg(visual_quality_score), 2) AS avg_visual_quality,
                   max(visual_quality_score) AS max_visual_quality,
                   count(*) FILTER (WHERE production_ready) AS production_ready_epochs
            FROM epoch_results er WHERE er.training_run_id = tr.id
        ) e ON true
        ORDER BY {order}
        """
    ).format(where=where, order=order, extra=extra)
    return conn.execute(query, [*params, limit]).fetchall()


def add_to_lists(conn: Connection, run_id: int, issues: list[str], strengths: list[str]) -> None:
    """Append issues and strengths not already listed, keeping their order."""
    conn.execute(
        """
        UPDATE training_runs SET
            issues_found = issues_found || ARRAY(
                SELECT x FROM unnest(%s::text[]) WITH ORDINALITY AS t(x, n)
                WHERE x <> ALL(issues_found) ORDER BY n),
            strengths = strengths || ARRAY(
                SELECT x FROM unnest(%s::text[]) WITH ORDINALITY AS t(x, n)
                WHERE x <> ALL(strengths) ORDER BY n)
        WHERE id = %s
        """,
        (issues, strengths, run_id),
    )


# -- cleanup --------------------------------------------------------------------------------


@dataclass
class CleanupPlan:
    """What ``cleanup`` would delete, and the failed runs it keeps (see ``cleanup_candidates``)."""

    delete: list[dict[str, Any]] = field(default_factory=list)
    kept_failures: list[dict[str, Any]] = field(default_factory=list)


def cleanup_candidates(
    conn: Connection,
    older_than: timedelta,
    recommended_for: str | None,
    *,
    include_failures: bool = False,
) -> CleanupPlan:
    """Runs older than ``older_than`` (and marked ``recommended_for``, when given), with
    how many epoch and prompt-result rows deleting them removes.

    Runs judged a failure are kept unless ``include_failures``: `tried` and the launch
    guard (``guard.py``) warn before a training repeats a failed configuration only while
    the failed run is in the record, so deleting it would make them forget the failure."""
    rows = conn.execute(
        """
        SELECT tr.id, tr.run_name, tr.run_date, tr.overall_verdict, tr.recommended_for,
               (SELECT count(*) FROM epoch_results er WHERE er.training_run_id = tr.id)
                   AS epochs,
               (SELECT count(*) FROM prompt_test_results ptr
                  JOIN epoch_results er ON er.id = ptr.epoch_result_id
                 WHERE er.training_run_id = tr.id) AS prompt_results,
               (SELECT coalesce(sum(cardinality(sample_images)), 0) FROM epoch_results er
                 WHERE er.training_run_id = tr.id) AS sample_images,
               (SELECT count(*) FROM checkpoints c WHERE c.training_run_id = tr.id)
                   AS checkpoint_files
        FROM training_runs tr
        WHERE tr.run_date < now() - %s
          AND (%s::text IS NULL OR tr.recommended_for = %s)
        ORDER BY tr.run_date, tr.id
        """,
        (older_than, recommended_for, recommended_for),
    ).fetchall()
    plan = CleanupPlan()
    for row in rows:
        failed = row["overall_verdict"] == FAILURE_VERDICT
        (plan.kept_failures if failed and not include_failures else plan.delete).append(row)
    return plan


def delete_runs(conn: Connection, ids: list[int]) -> int:
    """Delete runs by id; epochs, files and prompt results go with them (cascade).

    What capture would need to make a run again is remembered (its files as they are now,
    and the capture key of a single training process), so a watcher does not resurrect
    it; ``lora-tracker record --force`` does, on purpose."""
    if not ids:
        return 0
    conn.execute(
        """
        INSERT INTO deleted_checkpoints (host, path, size_bytes, mtime, content_hash, run_name)
        SELECT c.host, c.path, c.size_bytes, c.mtime, c.content_hash, tr.run_name
        FROM checkpoints c JOIN training_runs tr ON tr.id = c.training_run_id
        WHERE tr.id = ANY(%s)
        ON CONFLICT (host, path) DO UPDATE SET
            size_bytes = EXCLUDED.size_bytes, mtime = EXCLUDED.mtime,
            content_hash = EXCLUDED.content_hash, run_name = EXCLUDED.run_name,
            deleted_at = now()
        """,
        (ids,),
    )
    conn.execute(
        """
        INSERT INTO deleted_runs (capture_key, run_name)
        SELECT capture_key, run_name FROM training_runs
        WHERE id = ANY(%s) AND capture_key IS NOT NULL AND capture_key NOT LIKE 'dir:%%'
        ON CONFLICT (capture_key) DO NOTHING
        """,
        (ids,),
    )
    cur = conn.execute("DELETE FROM training_runs WHERE id = ANY(%s)", (ids,))
    return cur.rowcount


# -- deleting one run -----------------------------------------------------------------------


@dataclass(frozen=True)
class RunDeletion:
    """One run and what deleting it removes from the database (files on disk stay)."""

    run: dict[str, Any]  # id, run_name, run_date, status, overall_verdict
    epochs: int
    prompt_results: int  # scores a person gave (result_key '')
    test_images: int  # links of rendered test images to its epochs
    sample_images: int  # kohya samples listed on its epochs
    checkpoint_files: int  # checkpoint files recorded for it

    @property
    def failed(self) -> bool:
        """Judged a failure: what `tried` and the launch guard warn from."""
        return bool(self.run["overall_verdict"] == FAILURE_VERDICT)


def run_deletion_preview(conn: Connection, ref: str | int) -> RunDeletion:
    """What ``delete_run`` would remove for the run ``ref`` (id, name or unique prefix);
    NotFound or AmbiguousName as ``get_run``."""
    return _deletion_of(conn, _find(conn, ref))


def _deletion_of(conn: Connection, run: dict[str, Any]) -> RunDeletion:
    counts = conn.execute(
        """
        SELECT
          (SELECT count(*) FROM epoch_results WHERE training_run_id = %(id)s) AS epochs,
          (SELECT count(*) FILTER (WHERE ptr.result_key = '') FROM prompt_test_results ptr
             JOIN epoch_results er ON er.id = ptr.epoch_result_id
            WHERE er.training_run_id = %(id)s) AS prompt_results,
          (SELECT count(*) FILTER (WHERE ptr.result_key <> '') FROM prompt_test_results ptr
             JOIN epoch_results er ON er.id = ptr.epoch_result_id
            WHERE er.training_run_id = %(id)s) AS test_images,
          (SELECT coalesce(sum(cardinality(sample_images)), 0) FROM epoch_results
            WHERE training_run_id = %(id)s) AS sample_images,
          (SELECT count(*) FROM checkpoints WHERE training_run_id = %(id)s) AS checkpoint_files
        """,
        {"id": run["id"]},
    ).fetchone()
    assert counts is not None
    shown = {k: run[k] for k in ("id", "run_name", "run_date", "status", "overall_verdict")}
    return RunDeletion(shown, **{k: int(v) for k, v in counts.items()})


def delete_run(conn: Connection, ref: str | int) -> RunDeletion:
    """Delete one run (id, name or unique prefix) with its epochs, prompt results and test
    image links, in one transaction; what was removed is returned. The files on disk are
    never touched, and a watcher that sees them again leaves them out (as after cleanup)."""
    with conn.transaction():
        run = _find(conn, ref)
        # locked first: no epoch or result can be added to it while it is counted and deleted
        conn.execute("SELECT 1 FROM training_runs WHERE id = %s FOR UPDATE", (run["id"],))
        found = _deletion_of(conn, run)
        delete_runs(conn, [run["id"]])
    return found
