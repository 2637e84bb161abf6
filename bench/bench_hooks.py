"""Cost of a hook call on the training thread (Python API, as the kohya and transformers
hooks call it), with the database reachable and with it down.

    python bench/bench_hooks.py [--calls 2000]

The background thread keeps writing (or spooling) meanwhile, competing for the GIL as it
would during training. Prints a markdown table for bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from common import machine, table

from lora_tracker import embedded
from lora_tracker.integrations.kohya import KohyaTracker, _after
from lora_tracker.tracking import TrackedRun, dispatcher, start_run
from tests.kohya_sim import checkpoint_bytes, sd15_metadata


def measure(label: str, call, calls: int) -> tuple[str, str, str]:
    samples = []
    for i in range(calls):
        start = time.perf_counter()
        call(i)
        samples.append(time.perf_counter() - start)
    samples.sort()
    median = statistics.median(samples) * 1e6
    p99 = samples[int(len(samples) * 0.99)] * 1e6
    return (label, f"median {median:.0f} µs, p99 {p99:.0f} µs (n={calls})", "median <= 1 ms")


def scenario(name: str, url: str | None, work: Path, calls: int) -> list[tuple[str, str, str]]:
    run: TrackedRun = start_run(f"bench_{name}", {"rank": 32}, database_url=url)
    meta = sd15_metadata("bench", 1, 1731146400.0)
    path = work / f"bench_{name}-000001.safetensors"
    path.write_bytes(checkpoint_bytes(meta, 8, seed=1))
    rows = [
        measure(
            f"`log_epoch(loss, metrics)`, database {name}",
            lambda i: run.log_epoch(i, loss=0.1, metrics={"lr": 1e-4}),
            calls,
        ),
        measure(
            f"`log_saved(path, metadata)` (kohya save_weights hook), database {name}",
            lambda i: run.log_saved(path, meta),
            calls // 4,
        ),
    ]
    rows.append(
        measure(
            f"kohya per-step `sample_images(..., None, step)` (no sample, no save), "
            f"database {name}",
            kohya_step_hook(run, work),
            calls,
        )
    )
    start = time.perf_counter()
    flushed = dispatcher().flush(600)
    drain = time.perf_counter() - start
    rows.append(
        (
            f"background catch-up after the burst, database {name}",
            f"{drain:.1f} s{'' if flushed else ' (not finished)'}",
            "-",
        )
    )
    return rows


def kohya_step_hook(run: TrackedRun, work: Path):
    """kohya's per-step call through the hook's real wrapper, as after every step."""
    tracker = KohyaTracker()
    tracker.run = run
    tracker.args = argparse.Namespace(sample_every_n_steps=None, sample_every_n_epochs=1)
    tracker.output_dir, tracker.output_name = str(work), "bench"

    def sample_images(self, accelerator, args, epoch, global_step, *rest):  # kohya's, idle
        return None

    wrapped = _after(
        tracker, "sample_images",
        lambda self, accelerator, args, epoch, global_step=None, *a, **k:
            tracker.after_samples(epoch, global_step),
    )(sample_images)  # fmt: skip
    return lambda i: wrapped(None, None, tracker.args, None, i + 1, "cpu", None, [None])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=2000)
    args = parser.parse_args()
    home = Path(tempfile.mkdtemp(prefix="lt-bench-home-"))
    work = Path(tempfile.mkdtemp(prefix="lt-bench-files-"))
    os.environ["LORA_TRACKER_HOME"] = str(home)
    os.environ.pop("LORA_TRACKER_DATABASE_URL", None)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    rows = []
    try:
        embedded.start(home)
        rows += scenario("reachable", None, work, args.calls)
        rows += scenario("down", f"postgresql://x@127.0.0.1:{closed_port}/x", work, args.calls)
    finally:
        embedded.stop(home)
        shutil.rmtree(home, ignore_errors=True)
        shutil.rmtree(work, ignore_errors=True)
    print(f"Machine: {machine()}\n")
    print(table(rows))


if __name__ == "__main__":
    main()
