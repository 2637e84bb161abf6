"""Background delivery of the Python API (and the hooks built on it), on the embedded server.

    python bench/bench_delivery.py [--runs 1000] [--epochs 10]

1. 1,000 runs x 10 epochs logged as fast as a loop can: time from the last call until
   every row has landed (target: under 3 s);
2. the first ``start_run`` of a fresh process, on the training thread, without the launch
   check (``LORA_TRACKER_GUARD=off``; target: median under 5 ms over several fresh
   processes), and with it (the default: it waits for the guard's answer, which needs a
   connection and one query; target: under the guard's limit of 0.8 s, never 1 s);
3. 10,000 events queued at exit: how many land within the default exit flush (target: all).

Prints a markdown table for bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import psycopg
from common import fresh_database, machine, start_embedded, table

from lora_tracker import embedded

Row = tuple[str, str, str]

FIRST_CALL = """
import os, sys, time
from lora_tracker import start_run  # at the top of the training script
start = time.perf_counter()
run = start_run("first", config={"network_dim": 32, "learning_rate": 1e-4},
                             database_url=os.environ["URL"])
print((time.perf_counter() - start) * 1000)
run.finish()
"""

AT_EXIT = """
import os, lora_tracker
runs = [lora_tracker.start_run(f"exit_{n}", database_url=os.environ["URL"]) for n in range(500)]
for run in runs:
    for epoch in range(1, 20):
        run.log_epoch(epoch, loss=0.1)
# leaving now: the exit flush has LORA_TRACKER_FLUSH_TIMEOUT (default 10 s)
"""


def count(url: str, query: str) -> int:
    with psycopg.connect(url) as conn:
        row = conn.execute(query).fetchone()
        return int(row[0]) if row else 0


def landing(url: str, runs: int, epochs: int) -> Row:
    import lora_tracker

    started = time.perf_counter()
    tracked = [lora_tracker.start_run(f"bench_{n:05d}", database_url=url) for n in range(runs)]
    for epoch in range(1, epochs + 1):
        for run in tracked:
            run.log_epoch(epoch, loss=0.1 * epoch, metrics={"lr": 1e-4})
    for run in tracked:
        run.finish()
    last_call = time.perf_counter()
    expected = runs * epochs
    while (
        count(url, "SELECT count(*) FROM epoch_results") < expected
        or count(url, "SELECT count(*) FROM training_runs WHERE status = 'completed'") < runs
    ):
        time.sleep(0.02)
    landed = time.perf_counter() - last_call
    calls = last_call - started
    return (
        f"{runs:,} runs x {epochs} epochs: landed after the last call",
        f"{landed:.2f} s (the {runs * (epochs + 2):,} calls took {calls:.2f} s)",
        "< 3 s",
    )


def first_call(url: str, home: Path, tries: int, guard: str = "off") -> Row:
    samples = []
    env = {**os.environ, "URL": url, "LORA_TRACKER_HOME": str(home), "LORA_TRACKER_GUARD": guard}
    # as installed (pip compiles the modules): bytecode loaded, not compiled in each process,
    # also where PYTHONDONTWRITEBYTECODE is set; one untimed run writes it
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env["PYTHONPYCACHEPREFIX"] = str(home / "pycache")
    subprocess.run([sys.executable, "-c", FIRST_CALL], capture_output=True, env=env, check=True)
    for _ in range(tries):
        out = subprocess.run(
            [sys.executable, "-c", FIRST_CALL], capture_output=True, text=True, env=env, check=True
        )
        samples.append(float(out.stdout.strip().splitlines()[-1]))
    with_check = guard != "off"
    return (
        "first `start_run` in a fresh process (training thread)"
        + (", with the launch check (warn)" if with_check else ", guard off"),
        f"median {statistics.median(samples):.2f} ms, max {max(samples):.2f} ms (n={tries})",
        "< 5 ms",
    )


def at_exit(url: str, home: Path) -> Row:
    env = {**os.environ, "URL": url, "LORA_TRACKER_HOME": str(home)}
    started = time.perf_counter()
    subprocess.run([sys.executable, "-c", AT_EXIT], env=env, check=True, capture_output=True)
    took = time.perf_counter() - started
    landed = count(url, "SELECT count(*) FROM epoch_results") + count(
        url, "SELECT count(*) FROM training_runs"
    )
    spooled = 0
    spool = home / "spool" / "events.jsonl"
    if spool.exists():
        spooled = len(spool.read_text().splitlines())
    return (
        "10,000 events queued when the script ends: landed in the exit flush",
        f"{landed:,} of 10,000 landed, {spooled} spooled; the process took {took:.1f} s",
        "all",
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--tries", type=int, default=7)
    parser.add_argument("--only-first-call", action="store_true")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="lt-delivery-"))
    os.environ["LORA_TRACKER_HOME"] = str(root / "home")
    try:
        admin = start_embedded(root / "server")
        results = (
            []
            if args.only_first_call
            else [
                landing(fresh_database(admin, "landing"), args.runs, args.epochs),
            ]
        )
        results += [
            first_call(fresh_database(admin, "first"), root / "home-first", args.tries),
            first_call(fresh_database(admin, "guard"), root / "home-guard", args.tries, "warn"),
        ]
        if not args.only_first_call:
            results.append(at_exit(fresh_database(admin, "exit"), root / "home-exit"))
    finally:
        embedded.stop(root / "server")
        shutil.rmtree(root, ignore_errors=True)
    print(f"Machine: {machine()}\n")
    print(table(results))


if __name__ == "__main__":
    main()
