"""Capture throughput straight to PostgreSQL 15 and through PgBouncer in transaction mode.

    LORA_TRACKER_TEST_PG15_URL=$(bash .ci/start-pg15) \\
    LORA_TRACKER_TEST_PGBOUNCER_URL=$(bash .ci/start-pgbouncer) python bench/bench_pooler.py

Recorders (threads, each its own connection, as separate watchers and hooks would be) submit
checkpoint events one at a time, each its own transaction, into a fresh database; PgBouncer
shares 2 server connections between them (Supabase's transaction pooler, port 6543, also
shares a small pool). Prints a markdown table for bench/RESULTS.md.
"""

from __future__ import annotations

import os
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import psycopg
from common import machine, table
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from psycopg.rows import dict_row

from lora_tracker.capture.delivery import EventDelivery
from lora_tracker.capture.events import observe_checkpoint
from lora_tracker.migrations import migrate
from lora_tracker.settings import Target
from tests.kohya_sim import KohyaRun

EVENTS_PER_RECORDER = 60


def with_dbname(url: str, dbname: str) -> str:
    params = conninfo_to_dict(url)
    params["dbname"] = dbname
    return make_conninfo(**params)  # type: ignore[arg-type]


def measure(url: str, recorders: int, files: list[list[Path]], home: Path) -> float:
    """Events per second for ``recorders`` threads delivering their files at once."""
    events = [[observe_checkpoint(p) for p in mine] for mine in files[:recorders]]
    failures: list[BaseException] = []

    def deliver(mine: list[object]) -> None:
        delivery = EventDelivery(target=Target(url, "--database-url", home))
        try:
            for event in mine:
                outcome, _ = delivery.submit(event)  # type: ignore[arg-type]
                if outcome != "recorded":
                    raise AssertionError(outcome)
        except BaseException as exc:
            failures.append(exc)
        finally:
            delivery.close()

    threads = [threading.Thread(target=deliver, args=(m,)) for m in events]
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - start
    if failures:
        raise failures[0]
    return recorders * EVENTS_PER_RECORDER / elapsed


def main() -> None:
    direct_admin = os.environ["LORA_TRACKER_TEST_PG15_URL"]
    pooler = os.environ["LORA_TRACKER_TEST_PGBOUNCER_URL"]
    work = Path(tempfile.mkdtemp(prefix="lt-bench-pooler-"))
    counts = (1, 4, 8)
    files: list[list[Path]] = []
    for i in range(max(counts)):
        sim = KohyaRun(work / f"run{i}", f"bench{i}", epochs=EVENTS_PER_RECORDER, save_last_n=None)
        sim.samples_per_epoch = 0
        sim.run()
        files.append([sim.epoch_path(e) for e in range(1, EVENTS_PER_RECORDER + 1)])
    rows = []
    with psycopg.connect(direct_admin, autocommit=True) as admin:
        for recorders in counts:
            for label, base in (("direct", direct_admin), ("PgBouncer, pool of 2", pooler)):
                name = f"lt_bench_{uuid.uuid4().hex[:10]}"
                admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
                try:
                    with psycopg.connect(
                        with_dbname(direct_admin, name), autocommit=True, row_factory=dict_row
                    ) as conn:
                        migrate(conn)
                    rate = measure(with_dbname(base, name), recorders, files, work / "home")
                finally:
                    admin.execute(
                        sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name))
                    )
                rows.append(
                    (
                        f"{recorders} recorder(s), {label}",
                        f"{rate:.0f} events/s",
                        "-",
                    )
                )
    print(f"Machine: {machine()}\n")
    print(table(rows))


if __name__ == "__main__":
    main()
