"""A diffusers output folder (train_text_to_image_lora.py's layout, tests/diffusers_sim.py)
recorded by the watcher alone: hparams.yml, rank from the tensors, the final's step."""

from __future__ import annotations

import logging
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner

from lora_tracker.capture.watcher import Watcher
from lora_tracker.cli import cli

from .conftest import rows, wait_for
from .diffusers_sim import DiffusersRun

TOKEN = "hf_diffusersSECRET42"


def test_watcher_reads_hparams_rank_and_final_step(tmp_path: Path, db_url: str) -> None:
    """Configuration from hparams.yml (token masked), rank from the shapes, the final file is
    the last epoch at the last checkpoint's step; accelerate's state files are skipped."""
    sim = DiffusersRun(tmp_path / "sd-model-finetuned-lora", rank=8, hub_token=TOKEN)
    sim.run()
    result = CliRunner().invoke(cli, ["--database-url", db_url, "watch", "--once", str(sim.out)])
    assert result.exit_code == 0, result.output
    assert "4 checkpoints found: 4 recorded" in result.output
    r = rows(db_url, "SELECT * FROM training_runs")
    assert len(r) == 1
    run = r[0]
    assert (run["trainer"], run["network_dim"], run["learning_rate"], run["seed"]) == (
        "diffusers", 8, 1e-4, 0,
    )  # fmt: skip
    assert (run["num_epochs"], run["batch_size"], run["resolution"]) == (3, 1, "64x64")
    assert run["base_model"] == "hf-internal-testing/tiny-stable-diffusion-pipe"
    assert run["config"]["hparams"]["hub_token"] == "***"
    assert TOKEN not in str(rows(db_url, "SELECT config::text AS c FROM training_runs"))
    files = rows(db_url, "SELECT path, kind, global_step, epoch_number FROM checkpoints ORDER BY 1")
    assert [(Path(f["path"]).relative_to(sim.out).as_posix(), f["kind"], f["global_step"],
             f["epoch_number"]) for f in files] == [
        ("checkpoint-12/pytorch_lora_weights.safetensors", "step", 12, None),
        ("checkpoint-4/pytorch_lora_weights.safetensors", "step", 4, None),
        ("checkpoint-8/pytorch_lora_weights.safetensors", "step", 8, None),
        ("pytorch_lora_weights.safetensors", "final", 12, 3),
    ]  # fmt: skip


def test_final_without_hparams_is_no_epoch_one(tmp_path: Path, db_url: str) -> None:
    """--report_to wandb (no hparams.yml) and a final file unlike the last checkpoint:
    its step and epoch are unknown, never epoch 1."""
    sim = DiffusersRun(tmp_path / "out", epochs=2)
    sim.run()
    shutil.rmtree(sim.out / "logs")
    (tmp_path / "other").mkdir()
    DiffusersRun(tmp_path / "other", seed=5, epochs=2).final()
    shutil.copy(tmp_path / "other" / "pytorch_lora_weights.safetensors", sim.out)
    result = CliRunner().invoke(cli, ["--database-url", db_url, "watch", "--once", str(sim.out)])
    assert result.exit_code == 0, result.output
    final = rows(db_url, "SELECT global_step, epoch_number FROM checkpoints WHERE kind = 'final'")
    assert final == [{"global_step": None, "epoch_number": None}]
    assert rows(db_url, "SELECT epoch_number FROM epoch_results") == []
    assert rows(db_url, "SELECT network_dim FROM training_runs")[0]["network_dim"] == 4


def test_live_log_lines_name_the_folder_and_removals(
    tmp_path: Path, db_url: str, start_watcher: Callable[..., Watcher],
    caplog: pytest.LogCaptureFixture,
) -> None:  # fmt: skip
    """Log lines say checkpoint-N/...; --checkpoints_total_limit removals are marked and said."""
    caplog.set_level(logging.INFO, logger="lora_tracker")
    sim = DiffusersRun(tmp_path / "out", total_limit=2)
    sim.init_trackers()
    start_watcher(sim.out, db_url)
    for step in (4, 8, 12):
        sim.checkpoint(step)
        line = f"checkpoint-{step}/pytorch_lora_weights.safetensors"

        def logged(line: str = line) -> bool:
            return line in caplog.text

        wait_for(logged)
    wait_for(lambda: "removed checkpoint-4/pytorch_lora_weights.safetensors" in caplog.text)
    on_disk = rows(db_url, "SELECT global_step, on_disk FROM checkpoints ORDER BY global_step")
    assert on_disk == [
        {"global_step": 4, "on_disk": False}, {"global_step": 8, "on_disk": True},
        {"global_step": 12, "on_disk": True},
    ]  # fmt: skip
    assert "marked no longer on disk" in caplog.text


def test_watch_waits_for_the_folder(tmp_path: Path, db_url: str) -> None:
    """`watch OUT` before the trainer creates OUT waits; `--once` refuses it in one line."""
    missing = tmp_path / "not-yet"
    result = CliRunner().invoke(cli, ["--database-url", db_url, "watch", "--once", str(missing)])
    assert result.exit_code == 2 and "does not exist" in result.output


def test_live_watch_started_before_the_folder_exists(tmp_path: Path, db_url: str) -> None:
    """`watch OUT` started before diffusers creates OUT waits, then records its files."""
    import os
    import signal
    import subprocess
    import sys

    out = tmp_path / "sd-model-finetuned-lora"
    log = tmp_path / "watch.log"
    with open(log, "w") as handle:
        proc = subprocess.Popen(
            [sys.executable, "-m", "lora_tracker", "--database-url", db_url, "watch", str(out)],
            stdout=handle, stderr=subprocess.STDOUT, env=os.environ.copy(),
        )  # fmt: skip
        try:
            wait_for(lambda: "Waiting for" in log.read_text() or proc.poll() is not None, 60)
            assert proc.poll() is None, log.read_text()
            sim = DiffusersRun(out)
            sim.init_trackers()
            wait_for(lambda: "Watching" in log.read_text(), 60)
            sim.checkpoint(4)
            wait_for(lambda: len(rows(db_url, "SELECT id FROM checkpoints")) == 1, 30)
        finally:
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(30) == 0, log.read_text()
    assert "checkpoint-4/pytorch_lora_weights.safetensors" in log.read_text()
