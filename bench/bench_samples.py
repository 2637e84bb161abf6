"""Linking kohya's sample images to the prompt grid in a `watch --once` backfill.

    python bench/bench_samples.py [--runs 10] [--epochs 20] [--prompts 8] [--repeat 3]

The folder: 10 trainings x 20 epoch checkpoints (kohya names and metadata), each epoch
with one sample per line of an 8-line prompts file (kohya's names, a seed suffix on every
other line; 1,600 samples of 1x1 PNGs with distinct bytes). Measured, each on a fresh
database of the embedded server, as a whole process:

1. `lora-tracker watch --once FOLDER` (samples kept as run samples only: the baseline);
2. `lora-tracker watch --once --prompts prompts.txt FOLDER` (every sample linked: one
   prompt_test_results row each);
3. (2) again on the same database (nothing new: what a restarted watcher costs).

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
from common import fresh_database, machine, spread, start_embedded, table

from lora_tracker import embedded
from tests.kohya_sim import checkpoint_bytes, png_bytes, sd15_metadata


def make_folder(folder: Path, runs: int, epochs: int, prompts: int) -> tuple[int, int, Path]:
    (folder / "sample").mkdir(parents=True)
    seeds = [1000 + i if i % 2 == 0 else None for i in range(prompts)]
    prompts_file = folder.parent / "prompts.txt"
    prompts_file.write_text(
        "# bench prompts\n"
        + "".join(
            f"pixelbaby test prompt {i}, pixel art"
            + (f" --d {seed}" if seed is not None else "")
            + " --w 512 --h 512 --s 28 --l 7\n"
            for i, seed in enumerate(seeds)
        )
    )
    files = samples = 0
    for run in range(runs):
        name = f"run{run:02d}"
        started = 1731146400 + run * 86400
        for epoch in range(1, epochs + 1):
            meta = sd15_metadata(name, 5000 + run, float(started))
            meta.update(ss_epoch=str(epoch), ss_num_epochs=str(epochs), ss_steps=str(epoch * 10))
            path = folder / (
                f"{name}-{epoch:06d}.safetensors" if epoch < epochs else f"{name}.safetensors"
            )
            path.write_bytes(checkpoint_bytes(meta, 4, seed=run * 1000 + epoch, pairs=1))
            files += 1
            for index, seed in enumerate(seeds):
                stamp = time.strftime("%Y%m%d%H%M%S", time.localtime(started + epoch * 60 + index))
                suffix = "" if seed is None else f"_{seed}"
                sample = folder / "sample" / f"{name}_e{epoch:06d}_{index:02d}_{stamp}{suffix}.png"
                sample.write_bytes(png_bytes(sample.name))
                samples += 1
    return files, samples, prompts_file


def timed(command: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    subprocess.run(command, env=env, check=True, capture_output=True)
    return time.perf_counter() - start


def count(url: str, table_name: str) -> int:
    with psycopg.connect(url) as conn:
        row = conn.execute(f"SELECT count(*) FROM {table_name}").fetchone()  # noqa: S608
    assert row is not None
    return int(row[0])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--prompts", type=int, default=8)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="lt-samples-"))
    try:
        admin = start_embedded(root / "server")
        folder = root / "out"
        files, samples, prompts_file = make_folder(folder, args.runs, args.epochs, args.prompts)
        env = {**os.environ, "LORA_TRACKER_HOME": str(root / "home")}
        plain, linked, again = [], [], []
        results = 0
        for n in range(args.repeat):
            base = [sys.executable, "-m", "lora_tracker"]
            url = fresh_database(admin, f"plain{n}")
            plain.append(timed([*base, "--database-url", url, "watch", "--once",
                                str(folder)], env))  # fmt: skip
            url = fresh_database(admin, f"linked{n}")
            command = [*base, "--database-url", url, "watch", "--once", "--prompts",
                       str(prompts_file), str(folder)]  # fmt: skip
            linked.append(timed(command, env))
            results = count(url, "prompt_test_results")
            again.append(timed(command, env))
            assert count(url, "prompt_test_results") == results
    finally:
        embedded.stop(root / "server")
        shutil.rmtree(root, ignore_errors=True)

    extra = statistics.median(linked) - statistics.median(plain)
    print(f"Machine: {machine()}\n\n{files} checkpoints ({args.runs} runs x {args.epochs} "
          f"epochs), {samples} samples ({args.prompts} prompts an epoch), "
          "embedded server\n")  # fmt: skip
    print(table([
        ("`watch --once` (samples as run samples only)", spread(plain), "-"),
        ("`watch --once --prompts prompts.txt` (every sample linked)", spread(linked), "-"),
        ("linking cost per sample", f"{extra / samples * 1000:.2f} ms", "-"),
        ("prompt results made", f"{results} of {samples} samples", "all"),
        ("the same again (nothing new)", spread(again), "-"),
    ]))  # fmt: skip


if __name__ == "__main__":
    main()
