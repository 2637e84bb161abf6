"""What concurrent writers meet on the stats summaries: the triggers of 0008, one advisory
lock around summary maintenance (tried for 0010, not kept), and 0010 as shipped (changes
appended to keyless tables, folded by whoever finds no one else folding).

    LORA_TRACKER_TEST_PG15_URL=$(bash .ci/start-pg15) python bench/bench_summary_locks.py

On PostgreSQL 15 and on the embedded server (started in a throwaway folder), each
measurement on a fresh database. Workloads, from tests/summary_writers.py (threads, each its
own connection, nothing retried):
- "alone": one writer, 150 transactions (capture batches, verdicts, judging, deletions);
- "own runs": six such writers, 60 transactions each, each on its own runs (only the
  summary rows are shared);
- "shared runs": three watchers logging epochs of their runs (and starting new ones) and
  three people judging any run (two epoch scores, then a verdict), 40 transactions each.
Variants, on the same schema: "0008" puts the trigger functions of
sql/0008_stats_summaries.sql back; "one lock" is 0008's functions with
pg_advisory_xact_lock(1819243105, 8) before every summary change; "0010" is the schema as
migrated. Measured: transactions committed per second (a deadlock also costs its writer
PostgreSQL's deadlock_timeout, 1 s), the median time of a committed transaction, and the
deadlocks met (for shared runs also how many were met in a summary trigger; the others are
over the runs' and epochs' own rows). Prints a markdown table for bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import psycopg
from common import fresh_database, machine, start_embedded, table
from psycopg import sql

from lora_tracker import embedded
from tests.summary_writers import Tally, run_shared_writers, run_writers, summary_deadlocks

ROOT = Path(__file__).resolve().parent.parent
LOCK = "PERFORM pg_advisory_xact_lock(1819243105, 8); "


def functions_of_0008() -> str:
    """The trigger functions as 0008 defines them, to put back over 0010's."""
    text = (ROOT / "sql" / "0008_stats_summaries.sql").read_text()
    found = []
    for name in ("stats_runs_changed", "stats_epochs_changed"):
        start = text.index(f"CREATE FUNCTION {name}()")
        end = text.index("$$;", text.index("$$", start) + 2) + 3
        found.append(text[start:end].replace("CREATE FUNCTION", "CREATE OR REPLACE FUNCTION", 1))
    return "\n".join(found)


def functions_with_one_lock() -> str:
    """0008's functions taking one advisory lock before each change of a summary row."""
    text = functions_of_0008()
    for change in (
        "DELETE FROM stats_run_groups;",
        "PERFORM stats_run_groups_add(changes);",
        "UPDATE stats_epoch_flags SET epochs_scored = 0",
        "UPDATE stats_epoch_flags SET epochs_scored = epochs_scored + d.scored",
    ):
        assert text.count(change) == 1, change
        text = text.replace(change, LOCK + change)
    return text


VARIANTS: dict[str, Callable[[], str] | None] = {
    "0008": functions_of_0008,
    "one lock": functions_with_one_lock,
    "0010": None,
}
WORKLOADS: dict[str, Callable[[str, int], Tally]] = {
    "alone": lambda url, seed: run_writers(url, 1, 150, seed=seed),
    "own runs": lambda url, seed: run_writers(url, 6, 60, seed=seed),
    "shared runs": lambda url, seed: run_shared_writers(url, 3, 40, seed=seed),
}


def measure(admin: str, variant: str, workload: str, seed: int) -> dict[str, float]:
    name = f"lt_bench_locks_{uuid.uuid4().hex[:10]}"
    url = fresh_database(admin, name)
    try:
        functions = VARIANTS[variant]
        if functions is not None:
            with psycopg.connect(url, autocommit=True) as conn:
                conn.execute(functions().encode())
        start = time.perf_counter()
        tally = WORKLOADS[workload](url, seed)
        elapsed = time.perf_counter() - start
        if tally.other_errors:
            raise tally.other_errors[0]
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))
    return {
        "rate": tally.committed / elapsed,
        "median": statistics.median(tally.seconds) if tally.seconds else float("nan"),
        "deadlocks": tally.deadlocks,
        "in_summaries": summary_deadlocks(tally),
        "transactions": tally.deadlocks + tally.committed,
    }


def rows_for(server: str, admin: str, repeat: int) -> list[tuple[str, str, str]]:
    rows = []
    for workload in WORKLOADS:
        found: dict[str, list[dict[str, float]]] = {v: [] for v in VARIANTS}
        for seed in range(repeat):  # the variants in turn, so they share the machine's load
            order = list(VARIANTS) if seed % 2 == 0 else list(reversed(VARIANTS))
            for variant in order:
                found[variant].append(measure(admin, variant, workload, seed))
        for variant, runs in found.items():
            deadlocks = sum(int(r["deadlocks"]) for r in runs)
            inside = sum(int(r["in_summaries"]) for r in runs)
            total = sum(int(r["transactions"]) for r in runs)
            median = statistics.median(r["median"] for r in runs)
            timing = f"; per tx median {median * 1000:.1f} ms" if median == median else ""
            where = f" ({inside} in a summary trigger)" if workload == "shared runs" else ""
            rows.append(
                (
                    f"{server}, {workload}, {variant}",
                    f"{statistics.median(r['rate'] for r in runs):.0f} tx/s{timing}; "
                    f"deadlocks {deadlocks} of {total} ({100 * deadlocks / total:.2f}%){where}",
                    "no deadlock in a summary trigger",
                )
            )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=4, help="databases per line")
    args = parser.parse_args()
    rows = rows_for("PostgreSQL 15", os.environ["LORA_TRACKER_TEST_PG15_URL"], args.repeat)
    home = Path(tempfile.mkdtemp(prefix="lt-bench-locks-"))
    admin = start_embedded(home)
    try:
        rows += rows_for("embedded", admin, args.repeat)
    finally:
        embedded.stop(home)
    print(f"Machine: {machine()}\n")
    print(table(rows))


if __name__ == "__main__":
    main()
