"""Automatic capture benchmarks, on the embedded server in a throwaway data folder.

    python bench/bench_capture.py [--quick]

1. latency from a checkpoint file being complete to its row committed (live watcher);
2. cost of recording a 2 GB (sparse) checkpoint against a 10 MB one;
3. backfill of 5,000 checkpoints across 500 runs (and the same folder again, unchanged);
4. resident memory of a `lora-tracker watch` process watching 1,000 checkpoint files.

Prints a markdown table for bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from common import machine, summary, table

from lora_tracker import embedded
from lora_tracker.capture.delivery import EventDelivery
from lora_tracker.capture.events import observe_checkpoint
from lora_tracker.capture.watcher import Watcher
from lora_tracker.settings import Target
from tests.kohya_sim import checkpoint_bytes, sd15_metadata

Row = tuple[str, str, str]


def kohya_file(path: Path, name: str, session: int, epoch: int, seed: int) -> None:
    meta = sd15_metadata(name, session, 1731146400.0)
    meta.update(ss_epoch=str(epoch), ss_steps=str(epoch * 100))
    path.write_bytes(checkpoint_bytes(meta, 4, seed=seed, pairs=1))


def sized_file(path: Path, size: int, session: int) -> None:
    """A kohya-like checkpoint of ``size`` bytes whose data is a sparse hole."""
    meta = sd15_metadata("big", session, 1731146400.0)
    meta.update(ss_epoch="1", sshs_model_hash=f"{size:064x}")
    count = size // 2
    document = {
        "__metadata__": meta,
        "w": {"dtype": "F16", "shape": [count], "data_offsets": [0, count * 2]},
    }
    raw = json.dumps(document).encode()
    with open(path, "wb") as handle:
        handle.write(struct.pack("<Q", len(raw)) + raw)
        handle.truncate(8 + len(raw) + count * 2)


def bench_latency(target: Target, work: Path, n: int) -> Row:
    folder = work / "latency"
    folder.mkdir()
    done: dict[str, float] = {}
    complete: dict[str, float] = {}

    def on_delivered(event: object, outcome: str, applied: object) -> None:
        done[str(getattr(event, "path", ""))] = time.perf_counter()

    delivery = EventDelivery(target=target)
    watcher = Watcher([folder], delivery, on_delivered=on_delivered)
    watcher.start()
    watcher.wait_backfilled(30)
    for epoch in range(1, n + 1):
        path = folder / f"lat-{epoch:06d}.safetensors"
        meta = sd15_metadata("lat", 77, 1731146400.0)
        meta.update(ss_epoch=str(epoch))
        payload = checkpoint_bytes(meta, 32, seed=epoch, pairs=8)
        with open(path, "wb") as handle:  # in place, in chunks, as kohya writes
            for start in range(0, len(payload), 65536):
                handle.write(payload[start : start + 65536])
                handle.flush()
        complete[str(path)] = time.perf_counter()
        time.sleep(0.3)
    deadline = time.monotonic() + 30
    while len(done) < n and time.monotonic() < deadline:
        time.sleep(0.05)
    watcher.stop()
    delivery.close()
    latencies = [done[p] - complete[p] for p in complete if p in done]
    missing = n - len(latencies)
    result = summary(latencies) + (f", {missing} not recorded" if missing else "")
    return ("file complete -> row committed (live watcher)", result, "median <= 250 ms")


def bench_size_independence(target: Target, work: Path, n: int) -> Row:
    folder = work / "sizes"
    folder.mkdir()
    delivery = EventDelivery(target=target)
    timings: dict[str, list[float]] = {"10MB": [], "2GB": []}
    for i in range(n):
        for label, size in (("10MB", 10 * 1024**2), ("2GB", 2 * 1024**3)):
            path = folder / f"{label}_{i}" / "big.safetensors"
            path.parent.mkdir()
            sized_file(path, size, session=1000 + i * 2 + (label == "2GB"))
            start = time.perf_counter()
            outcome, _ = delivery.submit(observe_checkpoint(path))
            timings[label].append(time.perf_counter() - start)
            assert outcome == "recorded", outcome
    delivery.close()
    small, large = (statistics.median(timings[k]) for k in ("10MB", "2GB"))
    return (
        "record a 2 GB checkpoint vs a 10 MB one (read header + commit)",
        f"2 GB median {large * 1000:.1f} ms, 10 MB median {small * 1000:.1f} ms: "
        f"ratio {large / small:.2f} (n={n})",
        "ratio <= 1.5",
    )


def bench_backfill(target: Target, work: Path, runs: int, epochs: int) -> list[Row]:
    folder = work / "backfill"
    for r in range(runs):
        out = folder / f"run{r:03d}"
        out.mkdir(parents=True)
        for e in range(1, epochs + 1):
            kohya_file(
                out / f"lora{r:03d}-{e:06d}.safetensors",
                f"lora{r:03d}",
                5000 + r,
                e,
                seed=r * 100 + e,
            )
    total = runs * epochs
    delivery = EventDelivery(target=target)
    watcher = Watcher([folder], delivery)
    start = time.perf_counter()
    stats = watcher.backfill()
    first = time.perf_counter() - start
    assert stats.recorded == total, stats
    delivery.close()
    delivery = EventDelivery(target=target)
    watcher = Watcher([folder], delivery)
    start = time.perf_counter()
    again = watcher.backfill()
    second = time.perf_counter() - start
    assert again.unchanged == total, again
    delivery.close()
    return [
        (f"backfill {total:,} checkpoints across {runs} runs (new)", f"{first:.1f} s", "<= 15 s"),
        (f"backfill the same {total:,} again (all unchanged)", f"{second:.1f} s", "-"),
    ]


def bench_memory(home: Path, work: Path, files: int) -> Row:
    folder = work / "memory"
    for i in range(files):
        out = folder / f"run{i // 10:03d}"
        out.mkdir(parents=True, exist_ok=True)
        kohya_file(
            out / f"m{i // 10:03d}-{i % 10 + 1:06d}.safetensors",
            f"m{i // 10:03d}",
            9000 + i // 10,
            i % 10 + 1,
            seed=i,
        )
    env = {k: v for k, v in os.environ.items() if k != "LORA_TRACKER_DATABASE_URL"}
    env["LORA_TRACKER_HOME"] = str(home)
    log = work / "memory.log"
    with open(log, "w") as handle:
        proc = subprocess.Popen(
            [sys.executable, "-m", "lora_tracker", "watch", str(folder)],
            stdout=handle,
            stderr=subprocess.STDOUT,
            env=env,
        )
        try:
            deadline = time.monotonic() + 120
            while "Watching" not in log.read_text() and time.monotonic() < deadline:
                time.sleep(0.2)
            peak = 0
            # a live epoch per second for 10 s while sampling memory
            for i in range(10):
                kohya_file(
                    folder / "run000" / f"m000-{20 + i:06d}.safetensors",
                    "m000",
                    9000,
                    20 + i,
                    seed=10_000 + i,
                )
                time.sleep(1)
                peak = max(peak, _rss_kib(proc.pid))
        finally:
            proc.terminate()
            proc.wait(30)
    return (
        f"`lora-tracker watch` RSS watching {files:,} checkpoint files",
        f"peak {peak / 1024:.0f} MB",
        "<= 100 MB",
    )


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="smaller sizes, for a smoke run")
    args = parser.parse_args()
    home = Path(tempfile.mkdtemp(prefix="lt-bench-home-"))
    work = Path(tempfile.mkdtemp(prefix="lt-bench-files-"))
    target = Target(None, "embedded", home)
    os.environ["LORA_TRACKER_HOME"] = str(home)
    rows: list[Row] = []
    try:
        embedded.start(home)
        rows.append(bench_latency(target, work, 10 if args.quick else 40))
        rows.append(bench_size_independence(target, work, 5 if args.quick else 20))
        rows.extend(bench_backfill(target, work, 50 if args.quick else 500, 10))
        rows.append(bench_memory(home, work, 200 if args.quick else 1000))
    finally:
        embedded.stop(home)
        shutil.rmtree(home, ignore_errors=True)
        shutil.rmtree(work, ignore_errors=True)
    print(f"Machine: {machine()}\n")
    print(table(rows))


if __name__ == "__main__":
    threading.current_thread().name = "bench"
    main()
