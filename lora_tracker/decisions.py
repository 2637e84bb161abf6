"""Decisions from the record: "has this been tried?", the settings a comparison finds
different, and the success statistics (`stats`, the dashboard's charts and the Markdown
report all read them from here: one query per statistic)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from psycopg import sql

from .errors import InvalidInput, InvalidRequest
from .pg import Connection
from .runs import run_conditions

if TYPE_CHECKING:
    from .config_files import PlannedConfig

# settings compared by `tried`, with how "nearby" is judged
EXACT = ("model_type", "resolution", "caption_version", "optimizer", "base_model")
NUMERIC = ("network_dim", "network_alpha", "learning_rate")


@dataclass
class TriedResult:
    """Past runs like a planned configuration, most alike first."""

    settings: dict[str, Any]
    equivalent: list[dict[str, Any]] = field(default_factory=list)
    nearby: list[dict[str, Any]] = field(default_factory=list)

    @property
    def failed_before(self) -> list[dict[str, Any]]:
        return [r for r in self.equivalent if r["overall_verdict"] == "failure"]


def tried(conn: Connection, settings: dict[str, Any], *, limit: int = 20) -> TriedResult:
    """Runs with the same settings (equivalent) and with some of them (nearby).

    Nearby: at least one setting equal, numbers within a factor of 2, the same model type
    when one is given. Ranked by how many settings match, then failures first, then by
    quality: among more than ``limit`` equal runs, the failures are the ones kept.
    """
    given = {k: v for k, v in settings.items() if v is not None and v != ""}
    result = TriedResult(given)
    if not given:
        return result
    matches: list[sql.Composable] = []
    near: list[sql.Composable] = []
    params: list[Any] = []
    near_params: list[Any] = []
    for column, value in given.items():
        ident = sql.Identifier(column)
        if column in NUMERIC:
            matches.append(
                sql.SQL("(abs({c} - %s) <= 1e-9 * greatest(abs({c}), 1e-12))").format(c=ident)
            )
            params.append(value)
            near.append(sql.SQL("({c} BETWEEN %s AND %s)").format(c=ident))
            near_params += [float(value) / 2, float(value) * 2]
        else:
            matches.append(sql.SQL("({} = %s)").format(ident))
            params.append(value)
    score = sql.SQL(" + ").join(sql.SQL("coalesce({}::int, 0)").format(m) for m in matches)
    neighbourhood = sql.SQL(" OR ").join([*matches, *near])
    model_filter = sql.SQL("")
    model_params: list[Any] = []
    if "model_type" in given:
        model_filter = sql.SQL("AND model_type = %s")
        model_params = [given["model_type"]]
    query = sql.SQL(
        """
        SELECT id, run_name, run_date, status, model_type, network_dim, network_alpha,
               resolution, caption_version, learning_rate, optimizer, base_model,
               overall_verdict, quality_score, best_epoch, key_findings, issues_found,
               ({score}) AS matching
        FROM training_runs
        WHERE ({neighbourhood}) {model_filter}
        -- failures first among runs alike: "it failed before" is never cut by the limit
        ORDER BY matching DESC, coalesce(overall_verdict = 'failure', false) DESC,
                 quality_score DESC NULLS LAST, run_date DESC
        LIMIT %s
        """
    ).format(score=score, neighbourhood=neighbourhood, model_filter=model_filter)
    rows = conn.execute(query, [*params, *params, *near_params, *model_params, limit]).fetchall()
    for row in rows:
        if row["matching"] == len(given):
            result.equivalent.append(row)
        else:
            result.nearby.append(row)
    return result


@dataclass
class PlannedSettings:
    """The settings of a planned run, from a config file and given values (given win)."""

    settings: dict[str, Any]
    config: PlannedConfig | None = None

    def config_report(self) -> dict[str, Any] | None:
        """What was read from the config file, for a JSON answer (None without one)."""
        if self.config is None:
            return None
        return {"path": str(self.config.path), "kind": self.config.kind,
                "used": self.config.used, "not_compared": self.config.unused,
                "overridden_by_options": self.config.unusable}  # fmt: skip


def planned_settings(given: Mapping[str, Any], config_path: Path | None = None) -> PlannedSettings:
    """The planned settings `tried` compares: read from a kohya config file (sd-scripts
    TOML, kohya_ss GUI JSON or TOML) when one is named, then the given values (None or
    absent: not given) on top; the resolution written as the record writes it.

    InvalidInput when the file has a key `tried` compares that cannot be used and no
    given value replaces it; InvalidValue (field ``resolution``) for a malformed resolution.
    """
    from .config_files import planned_from_config, resolution_text

    values = {k: v for k, v in given.items() if v is not None}
    settings: dict[str, Any] = {}
    config = None
    if config_path is not None:
        config = planned_from_config(config_path)
        refused = config.unusable_for(set(values))
        if refused:
            problems = "; ".join(f"{key} ({why})" for key, why in refused.items())
            raise InvalidInput(
                f"{config_path}: could not use {problems}; fix the file or give the "
                "setting as an option"
            )
        settings.update(config.settings)
    settings.update(values)
    if settings.get("resolution"):
        settings["resolution"] = resolution_text(str(settings["resolution"]))
    return PlannedSettings(settings, config)


@dataclass
class Comparison:
    """Runs side by side: each run's row, the settings shown (``setting``, ``differs``,
    ``values`` in the runs' order) and the epochs (number -> run id -> epoch row)."""

    runs: list[dict[str, Any]]
    settings: list[dict[str, Any]]
    epochs: dict[int, dict[int, dict[str, Any]]]


def compared_settings(
    rows: Sequence[Mapping[str, Any]], fields: Sequence[str]
) -> list[dict[str, Any]]:
    """For each field some run has: its values in the runs' order, and whether they differ
    (compared as written: 16 and 16.0 differ, as the record shows them). Fields no run has
    are left out."""
    settings: list[dict[str, Any]] = []
    for name in fields:
        values = [row.get(name) for row in rows]
        if all(v is None for v in values):
            continue
        differs = len({str(v) for v in values}) > 1
        settings.append({"setting": name, "differs": differs, "values": values})
    return settings


def compare_runs(
    conn: Connection,
    refs: Sequence[str | int],
    fields: Sequence[str],
    epoch_columns: Sequence[str],
) -> Comparison:
    """Two runs or more (by id, name or prefix), their ``fields`` side by side and their
    epochs' ``epoch_columns`` by epoch number.

    InvalidRequest for fewer than two runs or a run named twice (by id and name, say).
    """
    from . import epochs, runs

    if len(refs) < 2:
        raise InvalidRequest("compare needs at least two runs")
    found = [runs.run_row(conn, ref) for ref in refs]
    ids = [r["id"] for r in found]
    if len(set(ids)) < len(ids):
        raise InvalidRequest("the same run is named twice")
    by_epoch: dict[int, dict[int, dict[str, Any]]] = {}
    for run_id, run_epochs in epochs.epochs_of_runs(conn, ids, epoch_columns).items():
        for e in run_epochs:
            by_epoch.setdefault(e["epoch_number"], {})[run_id] = e
    return Comparison(found, compared_settings(found, fields), by_epoch)


STATS_QUERIES: dict[str, str] = {
    # the reference document's dashboard queries
    "success_rate": """
        SELECT model_type, COUNT(*) AS total_runs,
               SUM(CASE WHEN overall_verdict = 'success' THEN 1 ELSE 0 END) AS successful,
               ROUND(100.0 * SUM(CASE WHEN overall_verdict = 'success' THEN 1 ELSE 0 END)
                     / COUNT(*), 1) AS success_pct,
               ROUND(AVG(quality_score), 2) AS avg_quality
        FROM training_runs GROUP BY model_type ORDER BY total_runs DESC, model_type
    """,
    "best_parameters": """
        SELECT network_dim, network_alpha, resolution, COUNT(*) AS times_tried,
               ROUND(AVG(quality_score), 2) AS avg_quality, MAX(quality_score) AS best_quality
        FROM training_runs WHERE overall_verdict != 'pending'
        GROUP BY network_dim, network_alpha, resolution
        ORDER BY avg_quality DESC NULLS LAST, times_tried DESC,
                 network_dim NULLS LAST, network_alpha NULLS LAST, resolution NULLS LAST
        LIMIT 20
    """,
    "issue_frequency": """
        SELECT UNNEST(issues_found) AS issue, COUNT(*) AS frequency
        FROM training_runs WHERE overall_verdict = 'failure'
        GROUP BY issue ORDER BY frequency DESC, issue LIMIT 20
    """,
    "failure_patterns": """
        SELECT model_type, network_dim, resolution, caption_version, COUNT(*) AS failures,
               MIN(run_name) AS example_run
        FROM training_runs WHERE overall_verdict = 'failure'
        GROUP BY model_type, network_dim, resolution, caption_version
        ORDER BY failures DESC LIMIT 20
    """,
    "epoch_flags": """
        SELECT count(*) AS epochs_scored,
               count(*) FILTER (WHERE has_wrong_backgrounds) AS wrong_backgrounds,
               count(*) FILTER (WHERE has_random_pixels) AS random_pixels,
               count(*) FILTER (WHERE is_photorealistic) AS photorealistic
        FROM epoch_results WHERE visual_quality_score IS NOT NULL
    """,
    # how the runs with each value of a setting turned out (what the successes share)
    "outcome_by_setting": """
        SELECT s.setting, s.value, COUNT(*) AS runs,
               COUNT(*) FILTER (WHERE overall_verdict = 'success') AS successful,
               COUNT(*) FILTER (WHERE overall_verdict = 'partial') AS partial,
               COUNT(*) FILTER (WHERE overall_verdict = 'failure') AS failed,
               COUNT(*) FILTER (WHERE overall_verdict = 'pending') AS pending,
               ROUND(AVG(quality_score), 2) AS avg_quality
        FROM training_runs CROSS JOIN LATERAL (VALUES
            (1, 'network_dim', network_dim::text, network_dim::float8),
            (2, 'network_alpha', network_alpha::float8::text, network_alpha::float8),
            (3, 'resolution', resolution,
             split_part(resolution, 'x', 1)::float8 * split_part(resolution, 'x', 2)::float8),
            (4, 'caption_version', caption_version, NULL),
            (5, 'learning_rate', learning_rate::text, learning_rate),
            (6, 'optimizer', optimizer, NULL)
        ) AS s(ord, setting, value, number)
        WHERE s.value IS NOT NULL
        GROUP BY s.ord, s.setting, s.value, s.number
        ORDER BY s.ord, s.number, s.value
    """,
}

# The summaries as of this statement: the summary rows plus the changes writers appended
# and no one has folded into them yet (sql/0010_stats_summary_changes.sql). A WITH query
# named after each summary table stands in for it (inside it, the name is the table).
_SUMMARIES_NOW = sql.SQL("""
    WITH stats_run_groups AS (
        SELECT kind, g1, g2, g3, overall_verdict, quality_score, SUM(runs)::bigint AS runs
        FROM (SELECT kind, g1, g2, g3, overall_verdict, quality_score, runs
              FROM stats_run_groups
              UNION ALL
              SELECT kind, g1, g2, g3, overall_verdict, quality_score, runs
              FROM stats_run_group_changes) AS c
        GROUP BY kind, g1, g2, g3, overall_verdict, quality_score
        HAVING SUM(runs) <> 0
    ), stats_epoch_flags AS (
        SELECT SUM(epochs_scored)::bigint AS epochs_scored,
               SUM(wrong_backgrounds)::bigint AS wrong_backgrounds,
               SUM(random_pixels)::bigint AS random_pixels,
               SUM(photorealistic)::bigint AS photorealistic
        FROM (SELECT epochs_scored, wrong_backgrounds, random_pixels, photorealistic
              FROM stats_epoch_flags
              UNION ALL
              SELECT epochs_scored, wrong_backgrounds, random_pixels, photorealistic
              FROM stats_epoch_flag_changes) AS c
    )
""")

# The same answers from the summaries kept by triggers (sql/0008_stats_summaries.sql), for
# the whole history: a few hundred rows read instead of every run and every epoch. Same
# columns, types and order as STATS_QUERIES (tests/test_stats_summaries.py checks it).
_SUMMARY_SELECTS: dict[str, str] = {
    "success_rate": """
        SELECT g1 AS model_type, SUM(runs)::bigint AS total_runs,
               COALESCE(SUM(runs) FILTER (WHERE overall_verdict = 'success'), 0)::bigint
                   AS successful,
               ROUND(100.0 * COALESCE(SUM(runs) FILTER (WHERE overall_verdict = 'success'), 0)
                     / SUM(runs), 1) AS success_pct,
               ROUND(SUM(runs * quality_score)::numeric
                     / NULLIF(SUM(runs) FILTER (WHERE quality_score IS NOT NULL), 0), 2)
                   AS avg_quality
        FROM stats_run_groups WHERE kind = 'model_type'
        GROUP BY g1 ORDER BY total_runs DESC, model_type
    """,
    "best_parameters": """
        SELECT g1::integer AS network_dim, g2::numeric AS network_alpha, g3 AS resolution,
               SUM(runs)::bigint AS times_tried,
               ROUND(SUM(runs * quality_score)::numeric
                     / NULLIF(SUM(runs) FILTER (WHERE quality_score IS NOT NULL), 0), 2)
                   AS avg_quality,
               MAX(quality_score) AS best_quality
        FROM stats_run_groups WHERE kind = 'parameters' AND overall_verdict != 'pending'
        GROUP BY g1, g2, g3
        ORDER BY avg_quality DESC NULLS LAST, times_tried DESC,
                 network_dim NULLS LAST, network_alpha NULLS LAST, resolution NULLS LAST
        LIMIT 20
    """,
    "issue_frequency": """
        SELECT g1 AS issue, SUM(runs)::bigint AS frequency
        FROM stats_run_groups WHERE kind = 'issue' AND overall_verdict = 'failure'
        GROUP BY g1 ORDER BY frequency DESC, issue LIMIT 20
    """,
    "epoch_flags": """
        SELECT epochs_scored, wrong_backgrounds, random_pixels, photorealistic
        FROM stats_epoch_flags
    """,
    "outcome_by_setting": """
        SELECT kind AS setting, g1 AS value, SUM(runs)::bigint AS runs,
               COALESCE(SUM(runs) FILTER (WHERE overall_verdict = 'success'), 0)::bigint
                   AS successful,
               COALESCE(SUM(runs) FILTER (WHERE overall_verdict = 'partial'), 0)::bigint
                   AS partial,
               COALESCE(SUM(runs) FILTER (WHERE overall_verdict = 'failure'), 0)::bigint
                   AS failed,
               COALESCE(SUM(runs) FILTER (WHERE overall_verdict = 'pending'), 0)::bigint
                   AS pending,
               ROUND(SUM(runs * quality_score)::numeric
                     / NULLIF(SUM(runs) FILTER (WHERE quality_score IS NOT NULL), 0), 2)
                   AS avg_quality
        FROM stats_run_groups
        WHERE kind IN ('network_dim', 'network_alpha', 'resolution', 'caption_version',
                       'learning_rate', 'optimizer') AND g1 IS NOT NULL
        GROUP BY kind, g1
        ORDER BY array_position(ARRAY['network_dim', 'network_alpha', 'resolution',
                                      'caption_version', 'learning_rate', 'optimizer'], kind),
                 CASE WHEN kind = 'resolution'
                      THEN split_part(g1, 'x', 1)::float8 * split_part(g1, 'x', 2)::float8
                      WHEN kind IN ('caption_version', 'optimizer') THEN NULL
                      ELSE g1::float8 END,
                 g1
    """,
}
SUMMARY_QUERIES: dict[str, sql.Composed] = {
    name: _SUMMARIES_NOW + sql.SQL(select) for name, select in _SUMMARY_SELECTS.items()
}

STATS_TITLES = {
    "success_rate": "Training success rate by model type",
    "best_parameters": "Best parameters (judged runs)",
    "issue_frequency": "Issue frequency in failed runs",
    "failure_patterns": "Failure patterns",
    "epoch_flags": "Flags on scored epochs",
    "outcome_by_setting": "Outcome by setting",
}


def stats(
    conn: Connection, filters: dict[str, Any] | None = None, *, since: datetime | None = None
) -> dict[str, list[dict[str, Any]]]:
    """The dashboard queries, each as a list of rows.

    ``filters`` and ``since`` narrow the runs as `runs.list_summaries` does. The queries
    themselves stay as written: a WITH clause named after each table stands in for it
    (a non-recursive WITH query cannot see its own name, so inside it the name is the table).
    """
    return {name: statistic(conn, name, filters, since=since) for name in STATS_QUERIES}


def statistic(
    conn: Connection,
    name: str,
    filters: dict[str, Any] | None = None,
    *,
    since: datetime | None = None,
) -> list[dict[str, Any]]:
    """One of the STATS_QUERIES (by name), as `stats` gives it."""
    query = STATS_QUERIES[name]
    where, params = run_conditions(filters, since=since)
    if not params:  # the whole history: from the summaries where there is one
        return conn.execute(SUMMARY_QUERIES.get(name, query)).fetchall()
    narrowed = sql.SQL(
        "WITH training_runs AS (SELECT * FROM training_runs {where}), "
        "epoch_results AS (SELECT * FROM epoch_results "
        "WHERE training_run_id IN (SELECT id FROM training_runs)) "
    ).format(where=where)
    return conn.execute(narrowed + sql.SQL(query), params).fetchall()


def success_rate(
    conn: Connection, filters: dict[str, Any] | None = None, *, since: datetime | None = None
) -> list[dict[str, Any]]:
    """Per model type: total_runs, successful, success_pct, avg_quality; most runs first.

    What counts, the same for `stats`, the dashboard and the report:
    - every run counts in ``total_runs``, judged or not: a run still ``pending`` or with no
      verdict at all (NULL) is a run that has not (yet) succeeded, as in the reference
      document's query, so the rate is successes among all runs tried;
    - runs with no model type form their own row, ``model_type`` None (the dashboard shows
      it as "unknown"), rather than vanishing or merging with a type;
    - ``avg_quality`` averages the runs that have a quality score (None when none has).
    """
    return statistic(conn, "success_rate", filters, since=since)


def issue_frequency(
    conn: Connection, filters: dict[str, Any] | None = None, *, since: datetime | None = None
) -> list[dict[str, Any]]:
    """The issues recorded on failed runs (``overall_verdict = 'failure'``), with how many
    failed runs name each: the 20 most frequent, then by name.

    A run without a verdict is not a failure and a run without issues (NULL or empty list)
    adds nothing. The same rows for `stats`, the dashboard and the report.
    """
    return statistic(conn, "issue_frequency", filters, since=since)
