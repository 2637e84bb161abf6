"""`lora-tracker watch --once` on a kohya folder against the physical limit, in one run.

    python bench/bench_backfill.py [--runs 10] [--epochs 50] [--repeat 5]

The folder: 10 trainings x 50 epoch checkpoints (kohya names and metadata, one sample
image per epoch). Measured, each on a fresh database of the embedded server:

1. `lora-tracker watch --once FOLDER` as a whole process (what a person runs);
2. the limit: a whole process that reads every header with the same reader and inserts
   one bare row per file in one transaction (what any recorder must at least do);
3. statements sent per file during the backfill (counted in-process; executemany counts
   each row).

Target: (1) under 2x (2); (3) at most 2. Prints a markdown table for bench/RESULTS.md.
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
from common import fresh_database, machine, spread, start_embedded, table

from lora_tracker import embedded
from tests.kohya_sim import PNG, checkpoint_bytes, sd15_metadata

LIMIT = """
import os, sys, psycopg
from pathlib import Path
from lora_tracker.capture.safetensors_header import read_safetensors_header
files = sorted(Path(sys.argv[1]).glob("*.safetensors"))
headers = [read_safetensors_header(f) for f in files]
with psycopg.connect(os.environ["URL"]) as conn:
    with conn.cursor() as cur:
        cur.execute("CREATE TEMP TABLE bare (path text, size bigint, meta jsonb)")
        cur.executemany("INSERT INTO bare VALUES (%s, %s, %s)",
                        [(str(f), f.stat().st_size, None) for f in files])
"""


def make_folder(folder: Path, runs: int, epochs: int) -> int:
    (folder / "sample").mkdir(parents=True)
    count = 0
    for run in range(runs):
        name = f"run{run:02d}"
        for epoch in range(1, epochs + 1):
            meta = sd15_metadata(name, 5000 + run, 1731146400.0 + run * 86400)
            meta.update(ss_epoch=str(epoch), ss_num_epochs=str(epochs), ss_steps=str(epoch * 10))
            path = folder / (
                f"{name}-{epoch:06d}.safetensors" if epoch < epochs else f"{name}.safetensors"
            )
            path.write_bytes(checkpoint_bytes(meta, 4, seed=run * 1000 + epoch, pairs=1))
            stamp = time.strftime(
                "%Y%m%d%H%M%S", time.localtime(1731146400 + run * 86400 + epoch * 60)
            )
            (folder / "sample" / f"{name}_e{epoch:06d}_00_{stamp}.png").write_bytes(PNG)
            count += 1
    return count


def timed(command: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    subprocess.run(command, env=env, check=True, capture_output=True)
    return time.perf_counter() - start


def count_statements(url: str, folder: Path) -> int:
    """Statements the backfill sends, counted on psycopg's cursors (in this process)."""
    from lora_tracker.capture.delivery import EventDelivery
    from lora_tracker.capture.watcher import Watcher

    sent = 0
    original_execute = psycopg.Cursor.execute
    original_many = psycopg.Cursor.executemany

    def execute(self, query, params=None, **kw):  # type: ignore[no-untyped-def]
        nonlocal sent
        sent += 1
        return original_execute(self, query, params, **kw)

    def executemany(self, query, params_seq, **kw):  # type: ignore[no-untyped-def]
        nonlocal sent
        params_seq = list(params_seq)
        sent += len(params_seq)
        return original_many(self, query, params_seq, **kw)

    delivery = EventDelivery(url)
    delivery._database().connect()  # connecting and the schema check are not the backfill's
    psycopg.Cursor.execute = execute  # type: ignore[method-assign]
    psycopg.Cursor.executemany = executemany  # type: ignore[method-assign]
    try:
        Watcher([folder], delivery).backfill()
    finally:
        psycopg.Cursor.execute = original_execute  # type: ignore[method-assign]
        psycopg.Cursor.executemany = original_many  # type: ignore[method-assign]
        delivery.close()
    return sent


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--epochs", type=int, default=50)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument(
        "--no-bytecode-cache", action="store_true",
        help="leave PYTHONDONTWRITEBYTECODE as it is (then a checkout compiles every module "
        "in every process)",
    )  # fmt: skip
    args = parser.parse_args()
    load_before = os.getloadavg()[0]
    root = Path(tempfile.mkdtemp(prefix="lt-backfill-"))
    try:
        admin = start_embedded(root / "server")
        folder = root / "out"
        files = make_folder(folder, args.runs, args.epochs)
        env = {**os.environ, "LORA_TRACKER_HOME": str(root / "home")}
        if not args.no_bytecode_cache:
            # as installed (pip compiles the modules): each process loads bytecode, not
            # source, also where PYTHONDONTWRITEBYTECODE is set; one untimed run of each
            # command writes it
            env.pop("PYTHONDONTWRITEBYTECODE", None)
            env["PYTHONPYCACHEPREFIX"] = str(root / "pycache")
            url = fresh_database(admin, "warm")
            timed([sys.executable, "-m", "lora_tracker", "--database-url", url,
                   "watch", "--once", str(folder)], env)  # fmt: skip
            timed([sys.executable, "-c", LIMIT, str(folder)], {**env, "URL": url})
        watch, limit = [], []
        for n in range(args.repeat):
            url = fresh_database(admin, f"watch{n}")
            watch.append(timed([sys.executable, "-m", "lora_tracker", "--database-url", url,
                                "watch", "--once", str(folder)], env))  # fmt: skip
            limit.append(timed([sys.executable, "-c", LIMIT, str(folder)], {**env, "URL": url}))
        statements = count_statements(fresh_database(admin, "count"), folder)
    finally:
        embedded.stop(root / "server")
        shutil.rmtree(root, ignore_errors=True)

    ratio = statistics.median(watch) / statistics.median(limit)
    # each watch and the limit after it ran in the same seconds: their ratios, pair by
    # pair, are less swayed by the machine's load changing over the run
    paired = [w / lim for w, lim in zip(watch, limit, strict=True)]
    load = f"load average {load_before:.1f} at the start, {os.getloadavg()[0]:.1f} at the end"
    print(f"Machine: {machine()}, {load}\n\n"
          f"{files} files ({args.runs} runs x {args.epochs} epochs), "
          "one sample image per epoch, embedded server, "
          f"bytecode {'not cached' if args.no_bytecode_cache else 'cached'}\n")  # fmt: skip
    print(table([
        ("`lora-tracker watch --once` (whole process)", spread(watch), "< 2x the limit"),
        ("limit: read every header + one bare insert a file (whole process)", spread(limit), "-"),
        ("ratio", f"{ratio:.2f}x", "< 2x"),
        ("ratio pair by pair (each watch and the limit run after it)",
         f"median {statistics.median(paired):.2f}x ({min(paired):.2f}-{max(paired):.2f}x)", "-"),
        ("statements per file in the backfill", f"{statements / files:.2f}", "<= 2"),
    ]))  # fmt: skip


if __name__ == "__main__":
    main()
