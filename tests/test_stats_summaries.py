"""`stats` reads summaries kept by triggers: they must say exactly what the queries on the
tables say, after any mix of inserts, updates, deletes (cascades too) and truncates."""

from __future__ import annotations

import random
from typing import Any

import psycopg
import pytest

from lora_tracker.decisions import STATS_QUERIES, SUMMARY_QUERIES

MODEL_TYPES = ["SD15", "SDXL", "Flux", None]
VERDICTS = ["success", "failure", "partial", "pending"]


def both(conn: psycopg.Connection[dict[str, Any]]) -> None:
    """Every summary query returns what its query on the tables returns."""
    for name, summary in SUMMARY_QUERIES.items():
        assert conn.execute(summary).fetchall() == conn.execute(STATS_QUERIES[name]).fetchall(), (
            name
        )


def random_run(rng: random.Random, n: int) -> dict[str, Any]:
    return {
        "run_name": f"r{n}",
        "model_type": rng.choice(MODEL_TYPES),
        "network_dim": rng.choice([8, 16, 32, None]),
        "network_alpha": rng.choice([4, 8.5, 16.0, "16", "16.00", None]),  # one value, 3 ways
        "resolution": rng.choice(["512x512", "1024x1024", "768x512", None]),
        "caption_version": rng.choice(["v1", "v2", None]),
        "learning_rate": rng.choice([1e-4, 5e-5, 0.0001, None]),
        "optimizer": rng.choice(["AdamW8bit", "Prodigy", None]),
        "overall_verdict": rng.choice(VERDICTS),
        "quality_score": rng.choice([None, 0, 4, 9, 10]),
        "issues_found": rng.choice([[], ["noise"], ["noise", "noise"], ["drift", "noise"]]),
    }


def insert(conn: psycopg.Connection[dict[str, Any]], run: dict[str, Any]) -> int:
    columns = ", ".join(run)
    marks = ", ".join(["%s"] * len(run))
    row = conn.execute(
        f"INSERT INTO training_runs ({columns}) VALUES ({marks}) RETURNING id",
        list(run.values()),
    ).fetchone()
    assert row is not None
    return int(row["id"])


@pytest.mark.both_servers
def test_summaries_follow_every_change(conn: psycopg.Connection[dict[str, Any]]) -> None:
    rng = random.Random(7)
    both(conn)  # empty
    ids = [insert(conn, random_run(rng, n)) for n in range(60)]
    both(conn)
    conn.execute(  # many rows in one statement, with epochs (scored or not)
        "INSERT INTO epoch_results (training_run_id, epoch_number, visual_quality_score, "
        "has_wrong_backgrounds, has_random_pixels, is_photorealistic) "
        "SELECT id, e, CASE WHEN (id + e) % 3 = 0 THEN NULL ELSE (id + e) % 11 END, "
        "e % 2 = 0, e % 3 = 0, (id + e) % 4 = 0 "
        "FROM training_runs, generate_series(1, 5) AS e"
    )
    both(conn)
    for _ in range(80):
        run_id = rng.choice(ids)
        change = rng.choice(["verdict", "settings", "score", "flags", "issues", "other", "delete"])
        if change == "verdict":
            conn.execute(
                "UPDATE training_runs SET overall_verdict = %s, quality_score = %s WHERE id = %s",
                (rng.choice(VERDICTS), rng.choice([None, 2, 7]), run_id),
            )
        elif change == "settings":
            fresh = random_run(rng, 0)
            conn.execute(
                "UPDATE training_runs SET model_type = %s, network_dim = %s, resolution = %s, "
                "learning_rate = %s WHERE id = %s",
                (fresh["model_type"], fresh["network_dim"], fresh["resolution"],
                 fresh["learning_rate"], run_id),
            )  # fmt: skip
        elif change == "score":
            conn.execute(
                "UPDATE epoch_results SET visual_quality_score = %s WHERE training_run_id = %s",
                (rng.choice([None, 3, 8]), run_id),
            )
        elif change == "flags":
            conn.execute(
                "UPDATE epoch_results SET has_random_pixels = NOT has_random_pixels "
                "WHERE training_run_id = %s AND epoch_number <= 2",
                (run_id,),
            )
        elif change == "issues":
            conn.execute(
                "UPDATE training_runs SET issues_found = issues_found || %s WHERE id = %s",
                (["late " + rng.choice("ab")], run_id),
            )
        elif change == "other":  # what capture does all the time: no summary moves
            conn.execute("UPDATE training_runs SET last_event_at = now() WHERE id = %s", (run_id,))
        elif run_id in ids:
            conn.execute("DELETE FROM training_runs WHERE id = %s", (run_id,))  # cascades
            ids.remove(run_id)
        both(conn)
    with conn.transaction():  # a rolled-back change leaves the summaries as they were
        conn.execute("UPDATE training_runs SET overall_verdict = 'success'")
        conn.execute("DELETE FROM epoch_results")
        raise psycopg.Rollback()
    both(conn)
    conn.execute("TRUNCATE training_runs CASCADE")
    both(conn)
    insert(conn, random_run(rng, 999))
    both(conn)


@pytest.mark.both_servers
def test_stats_command_matches_the_tables(
    examples_conn: psycopg.Connection[dict[str, Any]],
) -> None:
    """On the reference document's example data, `stats` (summaries) and the reference
    queries give the same numbers."""
    from lora_tracker.decisions import stats

    found = stats(examples_conn)
    for name, query in STATS_QUERIES.items():
        assert found[name] == examples_conn.execute(query).fetchall(), name
    assert found["epoch_flags"][0]["epochs_scored"] > 0


@pytest.mark.parametrize("server", ["pg15"], indirect=True)
def test_concurrent_writers_keep_the_summaries_right(db_url: str) -> None:
    """Writers in parallel transactions (capture and people at once) never leave the
    summaries off by one."""
    import threading

    def writer(seed: int) -> None:
        rng = random.Random(seed)
        with psycopg.connect(db_url, autocommit=True, row_factory=psycopg.rows.dict_row) as c:
            for n in range(30):
                for attempt in range(5):
                    try:
                        with c.transaction():
                            run_id = insert(c, random_run(rng, seed * 1000 + n))
                            c.execute(
                                "UPDATE training_runs SET overall_verdict = %s WHERE id = %s",
                                (rng.choice(VERDICTS), run_id),
                            )
                        break
                    except psycopg.errors.DeadlockDetected:
                        if attempt == 4:
                            raise

    threads = [threading.Thread(target=writer, args=(seed,)) for seed in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    with psycopg.connect(db_url, autocommit=True, row_factory=psycopg.rows.dict_row) as c:
        assert c.execute("SELECT count(*) AS n FROM training_runs").fetchone() == {"n": 120}
        both(c)
