"""Start-up costs: the embedded server (cold, restart, warm) and the CLI's wall time.

    python bench/bench_startup.py [--runs 20]

Prints a markdown table for bench/RESULTS.md. Uses a throwaway data folder.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import machine, repeat, run, summary, table, timed

from lora_tracker import embedded
from lora_tracker.db import Database
from lora_tracker.settings import Target


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args()

    home = Path(tempfile.mkdtemp(prefix="lt-bench-"))
    env = {k: v for k, v in os.environ.items() if k != "LORA_TRACKER_DATABASE_URL"}
    env["LORA_TRACKER_HOME"] = str(home)
    exe = shutil.which("lora-tracker") or "lora-tracker"
    rows: list[tuple[str, str, str]] = []
    try:
        cold = timed(lambda: embedded.start(home))
        rows.append(
            (
                "embedded server, cold start (initdb + start + create database)",
                f"{cold * 1000:.0f} ms",
                "-",
            )
        )

        def migrate() -> None:
            with Database(target=Target(None, "embedded", home)) as db:
                db.connect()

        rows.append(("schema migrations on a new database", f"{timed(migrate) * 1000:.0f} ms", "-"))

        restarts = []
        for _ in range(3):
            embedded.stop(home)
            restarts.append(timed(lambda: embedded.start(home)))
        rows.append(("embedded server, start of a stopped server", summary(restarts), "-"))

        warm = repeat(lambda: embedded.ensure_running(home), args.runs)
        rows.append(
            (
                "embedded server, warm (already running): find and return conninfo",
                summary(warm),
                "-",
            )
        )

        def connect_and_query() -> None:
            with Database(target=Target(None, "embedded", home)) as db:
                db.conn.execute("SELECT 1")

        rows.append(
            (
                "library: warm connect + schema check + SELECT 1",
                summary(repeat(connect_and_query, args.runs)),
                "-",
            )
        )

        helps = repeat(lambda: run([exe, "--help"], env), args.runs)
        rows.append(("`lora-tracker --help` wall time", summary(helps), "< 300 ms"))

        run([exe, "sql", "select 1"], env)  # make sure it is warm
        sqls = repeat(lambda: run([exe, "sql", "select 1"], env), args.runs)
        rows.append(('warm `lora-tracker sql "select 1"` wall time', summary(sqls), "< 600 ms"))

        # a table laid out by rich to fit a 100-column terminal (rich imported on demand)
        run([exe, "init", "--examples"], env)
        fitted = {**env, "LORA_TRACKER_WIDTH": "100"}  # piped: a width asked for
        tables = repeat(lambda: run([exe, "runs"], fitted), args.runs)
        rows.append(("warm `lora-tracker runs` at 100 columns (rich table)", summary(tables),
                     "< 600 ms"))  # fmt: skip
    finally:
        embedded.stop(home)
        shutil.rmtree(home, ignore_errors=True)

    print(f"Machine: {machine()}\n")
    print(table(rows))


if __name__ == "__main__":
    main()
