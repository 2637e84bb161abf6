"""Concurrent writers never deadlock on the stats summaries (sql/0010_stats_summary_changes.sql).

Before 0010, writers whose transactions changed summary rows in several statements (score
epochs then set the verdict; delete a run, whose cascade then removes its epochs; create a
run then fill its settings) deadlocked now and then (SQLSTATE 40P01): about one
transaction in a hundred here. Writers now append their changes to tables without a key,
and a transaction folds them into the summary rows only when no other one is folding: no
writer waits for another on a summary row.
"""

from __future__ import annotations

import os

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from psycopg.rows import dict_row

from lora_tracker.decisions import SUMMARY_QUERIES

from .conftest import DatabaseFactory
from .summary_writers import run_shared_writers, run_writers, summary_deadlocks
from .test_stats_summaries import both
from .test_stats_summaries import insert as insert_run

# the folding locks (sql/0010_stats_summary_changes.sql): classid "lora", objid 8 or 9
ANYONE_HOLDS = (
    "SELECT count(*) AS n FROM pg_locks WHERE locktype = 'advisory' "
    "AND classid = 1819243105 AND objid IN (8, 9) AND objsubid = 2"
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
    deadlock, and the summaries equal the queries on the tables. (Before 0010: 0 to 6
    deadlocks in such a run, none in 1 of 26 runs.)"""
    _no_deadlock(db_url, writers=6, rounds=60)


@pytest.mark.both_servers
def test_capture_and_people_on_the_same_runs(db_url: str) -> None:
    """Three watchers logging epochs of their runs (and starting new ones) while three
    people judge any run (epoch scores, then the verdict): no deadlock in a summary trigger
    (a deadlock over a run's or an epoch's own rows would be the writers' order, not the
    summaries'), and the summaries are right. (Before 0010: 1 to 4 in each of
    10 such runs; one advisory lock around summary maintenance, tried first, doubled them.)"""
    tally = run_shared_writers(db_url, each=3, rounds=40)
    assert tally.other_errors == []
    assert summary_deadlocks(tally) == 0, (
        f"{summary_deadlocks(tally)} of {tally.deadlocks + tally.committed} transactions met "
        f"a deadlock in a summary trigger; the first: {tally.details[0]}"
    )
    assert tally.committed > 200
    with psycopg.connect(db_url, autocommit=True, row_factory=dict_row) as conn:
        both(conn)
        assert conn.execute(ANYONE_HOLDS).fetchone() == {"n": 0}


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
def test_a_writer_never_waits_for_another_on_the_summaries(db_url: str) -> None:
    """While one transaction holds uncommitted changes of every summary (a verdict, scored
    epochs), another changing the same summary rows commits at once (a lock wait would
    hit lock_timeout); readers see each change as it commits, and the changes are folded
    into the summary rows once no one is folding."""
    with (
        psycopg.connect(db_url, autocommit=True, row_factory=dict_row) as first,
        psycopg.connect(db_url, autocommit=True, row_factory=dict_row) as second,
        psycopg.connect(db_url, autocommit=True, row_factory=dict_row) as reader,
    ):
        ids = [
            insert_run(first, {"run_name": f"r{n}", "model_type": "SDXL", "network_dim": 16})
            for n in range(2)
        ]
        for run_id in ids:
            first.execute(
                "INSERT INTO epoch_results (training_run_id, epoch_number) VALUES (%s, 1)",
                (run_id,),
            )
        second.execute("SET lock_timeout = '2s'")
        with first.transaction():  # holds its changes, and folds them, until it commits
            first.execute(
                "UPDATE epoch_results SET visual_quality_score = 6, has_random_pixels = true "
                "WHERE training_run_id = %s", (ids[0],),
            )  # fmt: skip
            first.execute(
                "UPDATE training_runs SET overall_verdict = 'success', quality_score = 8 "
                "WHERE id = %s", (ids[0],),
            )  # fmt: skip
            with second.transaction():  # the same groups and flags: no wait
                second.execute(
                    "UPDATE training_runs SET overall_verdict = 'success', quality_score = 8 "
                    "WHERE id = %s", (ids[1],),
                )  # fmt: skip
                second.execute(
                    "UPDATE epoch_results SET visual_quality_score = 6, "
                    "has_random_pixels = true WHERE training_run_id = %s", (ids[1],),
                )  # fmt: skip
            both(reader)  # the second's change is seen, the first's not yet
            flags = reader.execute(SUMMARY_QUERIES["epoch_flags"]).fetchone()
            assert flags is not None and flags["epochs_scored"] == 1
        both(reader)
        flags = reader.execute(SUMMARY_QUERIES["epoch_flags"]).fetchone()
        assert flags is not None and flags["random_pixels"] == 2
        # the next change folds what is left: the summary rows alone are right again
        second.execute("UPDATE training_runs SET quality_score = 9 WHERE id = %s", (ids[1],))
        second.execute("DELETE FROM epoch_results WHERE training_run_id = %s", (ids[1],))
        left = reader.execute(
            "SELECT (SELECT count(*) FROM stats_run_group_changes) + "
            "(SELECT count(*) FROM stats_epoch_flag_changes) AS n"
        ).fetchone()
        assert left == {"n": 0}
        both(reader)
