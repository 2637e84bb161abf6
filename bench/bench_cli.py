"""The decision commands on a large history: 100,000 runs and 1,000,000 epoch rows on the
embedded server. Wall time of the real `lora-tracker` processes, and the query plans.

    python bench/bench_cli.py [--runs 100000] [--epochs-per-run 10] [--plans]

Prints a markdown table for bench/RESULTS.md (and, with --plans, EXPLAIN ANALYZE output).
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

from common import machine, table

from lora_tracker import embedded
from lora_tracker.db import Database
from lora_tracker.settings import Target

FILL = """
INSERT INTO training_runs (
    run_name, run_date, status, model_type, base_model, network_dim, network_alpha,
    resolution, num_images, caption_version, learning_rate, optimizer, overall_verdict,
    quality_score, production_ready, issues_found, key_findings, recommended_for)
SELECT 'run_' || lpad(g::text, 6, '0'),
       now() - make_interval(mins => g * 7),
       'completed',
       (ARRAY['SD15', 'SDXL', 'Flux', 'SD2'])[1 + g %% 4],
       (ARRAY['runwayml/stable-diffusion-v1-5', 'stabilityai/sdxl-base-1.0'])[1 + g %% 2],
       (ARRAY[8, 16, 32, 64, 128])[1 + g %% 5],
       (ARRAY[4, 8, 16, 32, 64])[1 + (g / 5) %% 5],
       (ARRAY['512x512', '768x768', '1024x1024'])[1 + g %% 3],
       100 + g %% 300,
       'captions_v' || (g %% 25),
       (ARRAY[1e-4, 5e-5, 2e-4, 1e-5])[1 + g %% 4],
       (ARRAY['AdamW8bit', 'Prodigy', 'Lion', 'Adafactor'])[1 + (g / 3) %% 4],
       (ARRAY['success', 'failure', 'partial', 'pending'])[1 + (g / 2) %% 4],
       CASE WHEN (g / 2) %% 4 = 3 THEN NULL ELSE g %% 11 END,
       g %% 13 = 0,
       CASE WHEN (g / 2) %% 4 = 1
            THEN ARRAY['photorealistic drift', 'artifact ' || (g %% 9)] ELSE '{}' END,
       'finding for run ' || g,
       (ARRAY['production', 'research', 'discard'])[1 + g %% 3]
FROM generate_series(1, %(runs)s) AS g
"""
FILL_EPOCHS = """
INSERT INTO epoch_results (
    training_run_id, epoch_number, checkpoint_path, checkpoint_file_size_mb,
    visual_quality_score, style_match_score, prompt_adherence_score, has_random_pixels,
    verdict, production_ready, loss, observations)
SELECT tr.id, e,
       '/runs/' || tr.run_name || '-' || lpad(e::text, 6, '0') || '.safetensors',
       36, (tr.id + e) %% 11, (tr.id * e) %% 11, (tr.id + 2 * e) %% 11, (tr.id + e) %% 5 = 0,
       (ARRAY['best', 'good', 'acceptable', 'skip', 'failure'])[1 + (tr.id + e) %% 5],
       (tr.id + e) %% 97 = 0, 0.5 / e, 'epoch ' || e
FROM training_runs tr, generate_series(1, %(epochs)s) AS e
"""

COMMANDS = {
    "--help": ["--help"],  # the baseline: Python start-up and the CLI's own imports
    "runs": ["runs"],
    "runs --model-type SDXL --verdict success": ["runs", "--model-type", "SDXL", "--verdict",
                                                 "success"],
    "show run_050000": ["show", "run_050000"],
    "tried --model-type SD15 --network-dim 32 --resolution 512x512": [
        "tried", "--model-type", "SD15", "--network-dim", "32", "--resolution", "512x512"],
    "stats": ["stats"],
    "compare run_000010 run_000020": ["compare", "run_000010", "run_000020"],
}  # fmt: skip

TARGETS = {"--help": "< 300 ms", "stats": "< 250 ms", "show run_050000": "< 300 ms",
           "compare run_000010 run_000020": "< 300 ms"}  # fmt: skip

PLANS = {
    "runs page": (
        "SELECT * FROM training_runs ORDER BY run_date DESC, id DESC LIMIT 50", ()),
    "show: run by name": ("SELECT * FROM training_runs WHERE run_name = %s", ("run_050000",)),
    "show: its epochs": (
        "SELECT * FROM epoch_results WHERE training_run_id = %s ORDER BY epoch_number",
        (50000,)),
    "runs filtered": (
        "SELECT * FROM training_runs WHERE model_type = 'SDXL' AND overall_verdict = 'success' "
        "ORDER BY run_date DESC, id DESC LIMIT 50", ()),
}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=100_000)
    parser.add_argument("--epochs-per-run", type=int, default=10)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--plans", action="store_true", help="print EXPLAIN ANALYZE output")
    parser.add_argument("--keep", type=Path, help="fill this data folder once and keep it")
    args = parser.parse_args()
    home = args.keep or Path(tempfile.mkdtemp(prefix="lt-bench-cli-"))
    filled = args.keep is not None and (home / "pgdata").exists()
    env = {k: v for k, v in os.environ.items() if k != "LORA_TRACKER_DATABASE_URL"}
    env["LORA_TRACKER_HOME"] = str(home)
    exe = shutil.which("lora-tracker") or "lora-tracker"
    rows: list[tuple[str, str, str]] = []
    try:
        embedded.start(home)
        start = time.perf_counter()
        with Database(target=Target(None, "embedded", home)) as db:
            conn = db.connect()
            if not filled:
                with conn.transaction():
                    conn.execute(FILL, {"runs": args.runs})
                    conn.execute(FILL_EPOCHS, {"epochs": args.epochs_per_run})
                conn.execute("ANALYZE")
            counts = conn.execute(
                "SELECT (SELECT count(*) FROM training_runs) AS runs, "
                "(SELECT count(*) FROM epoch_results) AS epochs"
            ).fetchone()
            if args.plans:
                for label, (query, params) in PLANS.items():
                    plan = conn.execute("EXPLAIN ANALYZE " + query, params).fetchall()
                    print(f"-- {label}\n" + "\n".join(r["QUERY PLAN"] for r in plan) + "\n")
        assert counts is not None
        print(
            f"filled {counts['runs']:,} runs and {counts['epochs']:,} epochs in "
            f"{time.perf_counter() - start:.0f} s",
            file=sys.stderr,
        )
        baseline = 0.0
        for label, command in COMMANDS.items():
            samples = []
            for _ in range(args.repeat):
                t = time.perf_counter()
                done = subprocess.run([exe, *command], env=env, capture_output=True, text=True)
                samples.append(time.perf_counter() - t)
                if done.returncode not in (0, 3):
                    raise SystemExit(f"{label} failed: {done.stderr}")
            median = statistics.median(samples)
            baseline = baseline or median
            spread = f"{min(samples) * 1000:.0f}-{max(samples) * 1000:.0f} ms"
            rows.append(
                (
                    f"`lora-tracker {label}`",
                    f"median {median * 1000:.0f} ms ({spread}, n={args.repeat}), "
                    f"{median / baseline:.2f}x `--help`",
                    TARGETS.get(label, "< 500 ms"),
                )
            )
    finally:
        embedded.stop(home)
        if args.keep is None:
            shutil.rmtree(home, ignore_errors=True)
    print(
        f"Machine: {machine()}\n\n{args.runs:,} runs, {args.runs * args.epochs_per_run:,} "
        "epoch rows, embedded server, wall time of the whole process\n"
    )
    print(table(rows))


if __name__ == "__main__":
    main()
