"""What serializing the stats summaries' maintenance (sql/0010_stats_summaries_lock.sql)
costs the writers, against the triggers of 0008 alone.

    LORA_TRACKER_TEST_PG15_URL=$(bash .ci/start-pg15) python bench/bench_summary_locks.py

On PostgreSQL 15 and on the embedded server (started in a throwaway folder), each on fresh
databases: the writers of tests/summary_writers.py (threads, each its own connection;
capture batches, verdicts, judging, deletions; nothing retried) run with the advisory lock
of 0010 and without it ("0008 only": the two trigger functions put back in that database as
sql/0008_stats_summaries.sql defines them). Measured: transactions committed per second,
the time of a committed transaction, and the deadlocks met (each one also costs its
writer PostgreSQL's deadlock_timeout, 1 s, before it is detected). One writer alone shows
the lock's own cost without contention. Prints a markdown table for bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import psycopg
from common import fresh_database, machine, table
from psycopg import sql

from lora_tracker import embedded
from tests.summary_writers import run_writers


def functions_of_0008() -> str:
    """The trigger functions as 0008 defines them (no lock), to put back over 0010's."""
    text = (Path(__file__).resolve().parent.parent / "sql" / "0008_stats_summaries.sql").read_text()
    found = []
    for name in ("stats_runs_changed", "stats_epochs_changed"):
        start = text.index(f"CREATE FUNCTION {name}()")
        end = text.index("$$;", text.index("$$", start) + 2) + 3
        found.append(text[start:end].replace("CREATE FUNCTION", "CREATE OR REPLACE FUNCTION", 1))
    return "\n".join(found)


def measure(admin: str, locked: bool, writers: int, rounds: int, seed: int) -> dict[str, float]:
    name = f"lt_bench_locks_{uuid.uuid4().hex[:10]}"
    url = fresh_database(admin, name)
    try:
        if not locked:
            with psycopg.connect(url, autocommit=True) as conn:
                conn.execute(functions_of_0008())
        start = time.perf_counter()
        tally = run_writers(url, writers, rounds, seed=seed)
        elapsed = time.perf_counter() - start
        if tally.other_errors:
            raise tally.other_errors[0]
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))
    ordered = sorted(tally.seconds)
    return {
        "rate": tally.committed / elapsed,
        "median": statistics.median(ordered),
        "p90": ordered[int(len(ordered) * 0.9)],
        "deadlocks": tally.deadlocks,
        "transactions": tally.deadlocks + tally.committed,
    }


def rows_for(server: str, admin: str, repeat: int) -> list[tuple[str, str, str]]:
    rows = []
    for writers, rounds in ((1, 150), (6, 60)):
        found: dict[bool, list[dict[str, float]]] = {False: [], True: []}
        for seed in range(repeat):  # the two variants in turn, so the machine's load is shared
            for locked in (False, True) if seed % 2 == 0 else (True, False):
                found[locked].append(measure(admin, locked, writers, rounds, seed))
        for locked, runs in found.items():
            label = "0010 (advisory lock)" if locked else "0008 only"
            deadlocks = sum(int(r["deadlocks"]) for r in runs)
            total = sum(int(r["transactions"]) for r in runs)
            rows.append(
                (
                    f"{server}, {writers} writer(s), {label}",
                    f"{statistics.median(r['rate'] for r in runs):.0f} tx/s; per tx median "
                    f"{statistics.median(r['median'] for r in runs) * 1000:.1f} ms, p90 "
                    f"{statistics.median(r['p90'] for r in runs) * 1000:.1f} ms; deadlocks "
                    f"{deadlocks} of {total} ({100 * deadlocks / total:.2f}%)",
                    "0 deadlocks",
                )
            )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=3, help="databases per variant")
    args = parser.parse_args()
    rows = rows_for("PostgreSQL 15", os.environ["LORA_TRACKER_TEST_PG15_URL"], args.repeat)
    home = Path(tempfile.mkdtemp(prefix="lt-bench-locks-"))
    embedded.start(home)
    try:
        info = embedded.read_postmaster_pid(embedded.pgdata_path(home))
        assert info is not None
        rows += rows_for("embedded", embedded.conninfo_for(info, "postgres"), args.repeat)
    finally:
        embedded.stop(home)
    print(f"Machine: {machine()}\n")
    print(table(rows))


if __name__ == "__main__":
    main()
