"""Concurrent writers never deadlock on the stats summaries (sql/0010_stats_summaries_lock.sql).

Before 0010, writers whose transactions changed summary rows in several statements (score
epochs then set the verdict; delete a run, whose cascade then removes its epochs; create a
run then fill its settings) deadlocked now and then (SQLSTATE 40P01): about one
transaction in a hundred here. The triggers now take one transaction-level advisory lock
before they change a summary row; a statement that changes none takes nothing.
"""

from __future__ import annotations

import os
from typing import Any

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from psycopg.rows import dict_row

from .conftest import DatabaseFactory
from .summary_writers import run_writers
from .test_stats_summaries import both

# the lock's key: classid "lora", objid 8 (two int4 keys: objsubid 2)
HELD = (
    "SELECT count(*) AS n FROM pg_locks WHERE locktype = 'advisory' "
    "AND classid = 1819243105 AND objid = 8 AND objsubid = 2 AND pid = pg_backend_pid()"
)
ANYONE_HOLDS = (
    "SELECT count(*) AS n FROM pg_locks WHERE locktype = 'advisory' "
    "AND classid = 1819243105 AND objid = 8 AND objsubid = 2"
)


def _no_deadlock(url: str, writers: int, rounds: int) -> None:
    tally = run_writers(url, writers, rounds)
    assert tally.other_errors == []
    assert tally.deadlocks == 0, (
        f"{tally.deadlocks} of {tally.deadlocks + tally.committed} transactions met a "
        f"deadlock; the first: {tally.details[0]}"
    )
    assert tally.committed == writers * rounds
    with psycopg.connect(url, autocommit=True, row_factory=dict_row) as conn:
        both(conn)  # the summaries say what the tables say
        assert conn.execute(ANYONE_HOLDS).fetchone() == {"n": 0}  # nothing left held
        counts = conn.execute(
            "SELECT (SELECT count(*) FROM training_runs) AS runs, "
            "(SELECT count(*) FROM epoch_results "
            " WHERE visual_quality_score IS NOT NULL) AS scored"
        ).fetchone()
    assert counts is not None and counts["runs"] > 0 and counts["scored"] > 0  # it did work


@pytest.mark.both_servers
def test_concurrent_writers_never_deadlock_on_the_summaries(db_url: str) -> None:
    """Six writers, each its own connection, 60 transactions each of capture batches,
    verdicts, judging (epoch scores then a verdict) and deletions, none retried: not one
    deadlock, and the summaries equal the queries on the tables. (Before 0010: 1 to 5
    deadlocks in every such run.)"""
    _no_deadlock(db_url, writers=6, rounds=60)


@pytest.fixture
def pgbouncer_url() -> str:
    url = os.environ.get("LORA_TRACKER_TEST_PGBOUNCER_URL")
    if not url:
        if os.environ.get("CI"):
            pytest.fail("LORA_TRACKER_TEST_PGBOUNCER_URL is not set: .ci/run must start PgBouncer")
        pytest.skip("LORA_TRACKER_TEST_PGBOUNCER_URL not set (run .ci/start-pgbouncer)")
    return url


def test_writers_through_a_transaction_pooler(
    pgbouncer_url: str, pg15_admin_url: str, factories: dict[str, DatabaseFactory]
) -> None:
    """Through PgBouncer in transaction mode (2 server connections for 6 writers), the lock
    is released with each transaction: no deadlock, no writer waits forever on a lock a
    server connection kept, and the summaries are right."""
    factory = factories.setdefault(pg15_admin_url, DatabaseFactory(pg15_admin_url))
    direct = factory.create(template=factory.template("schema"))
    params = conninfo_to_dict(pgbouncer_url)
    params["dbname"] = conninfo_to_dict(direct)["dbname"]
    _no_deadlock(make_conninfo(**params), writers=6, rounds=25)  # type: ignore[arg-type]


@pytest.mark.both_servers
def test_only_a_summary_change_takes_the_lock(conn: psycopg.Connection[dict[str, Any]]) -> None:
    """Capture's frequent writes (times, sizes, unscored epochs) take no lock; a change of
    a summary takes it until the transaction ends, and a rollback releases it too."""
    run = conn.execute(
        "INSERT INTO training_runs (run_name, model_type) VALUES ('locks', 'SDXL') RETURNING id"
    ).fetchone()
    assert run is not None
    assert conn.execute(HELD).fetchone() == {"n": 0}  # autocommit: already released
    with conn.transaction():
        conn.execute("UPDATE training_runs SET last_event_at = now() WHERE id = %s", (run["id"],))
        conn.execute(
            "INSERT INTO epoch_results (training_run_id, epoch_number, loss) VALUES (%s, 1, 0.1)",
            (run["id"],),
        )
        conn.execute("UPDATE training_runs SET model_type = model_type WHERE id = %s", (run["id"],))
        assert conn.execute(HELD).fetchone() == {"n": 0}
        conn.execute(
            "UPDATE epoch_results SET visual_quality_score = 7 WHERE training_run_id = %s",
            (run["id"],),
        )
        assert conn.execute(HELD).fetchone() == {"n": 1}
    assert conn.execute(HELD).fetchone() == {"n": 0}
    with conn.transaction():
        conn.execute("UPDATE training_runs SET overall_verdict = 'success' WHERE id = %s",
                     (run["id"],))  # fmt: skip
        assert conn.execute(HELD).fetchone() == {"n": 1}
        raise psycopg.Rollback()
    assert conn.execute(HELD).fetchone() == {"n": 0}
    both(conn)
