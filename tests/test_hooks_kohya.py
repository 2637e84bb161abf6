"""The kohya hook, driving a stand-in for sd-scripts (tests/fake_sd_scripts) in real
processes, the way `accelerate launch` would."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from click.testing import CliRunner

from lora_tracker.capture.watcher import Watcher
from lora_tracker.cli import cli

from .conftest import ROOT, proxied, rows, wait_for
from .kohya_sim import sample_prompts_file
from .netproxy import Proxy

FAKE = ROOT / "tests" / "fake_sd_scripts"
LAUNCHER = ROOT / "hooks" / "kohya" / "lora_tracker_launch.py"


def launch(
    script: str,
    url: str,
    *args: str,
    env: dict[str, str] | None = None,
    hooked: bool = True,
    scripts: Path = FAKE,
) -> subprocess.CompletedProcess[str]:
    full_env = os.environ.copy()
    full_env["LORA_TRACKER_DATABASE_URL"] = url
    full_env.update(env or {})
    command = [sys.executable, *([str(LAUNCHER)] if hooked else []), script, *args]
    return subprocess.run(
        command, cwd=scripts, env=full_env, capture_output=True, text=True, timeout=120
    )


def kohya_args(out: Path, *extra: str, epochs: int = 5) -> list[str]:
    """A kohya command line that saves and samples every epoch (from a prompts file of two
    prompts beside the output folder; ``extra`` may name another)."""
    return [
        "--output_dir", str(out), "--output_name", "pixelbaby", "--max_train_epochs",
        str(epochs), "--save_every_n_epochs", "1", "--save_last_n_epochs", "2",
        "--log_with", "tensorboard", "--sample_every_n_epochs", "1",
        "--sample_prompts", sample_prompts_file(out.parent), "--network_dim", "16",
        "--network_alpha", "8", "--seed", "42", *extra,
    ]  # fmt: skip


def test_kohya_run_recorded_from_inside(tmp_path: Path, db_url: str) -> None:
    """Config before training, each checkpoint, losses, samples, removals, completion."""
    config = tmp_path / "run.toml"
    config.write_text('[training]\nlearning_rate = 0.0003\noptimizer_type = "Lion"\n')
    dataset = tmp_path / "dataset.toml"
    dataset.write_text(
        "[general]\nresolution = 512\n[[datasets]]\n[[datasets.subsets]]\n"
        'image_dir = "/data/pixelbaby"\nnum_repeats = 10\n'
    )
    out = tmp_path / "out"
    done = launch(
        "train_network.py",
        db_url,
        *kohya_args(out, "--config_file", str(config), "--dataset_config", str(dataset)),
    )
    assert done.returncode == 0, done.stderr
    run = rows(db_url, "SELECT * FROM training_runs")
    assert len(run) == 1
    r = run[0]
    assert (r["status"], r["trainer"], r["model_type"], r["network_dim"]) == (
        "completed", "kohya", "SD15", 16,
    )  # fmt: skip
    assert r["learning_rate"] == 0.0003 and r["optimizer"] == "Lion"
    assert r["config"]["args"]["output_name"] == "pixelbaby"
    assert r["config"]["config_file"] == {
        "training": {"learning_rate": 0.0003, "optimizer_type": "Lion"}
    }
    assert r["config"]["dataset_config"]["datasets"][0]["subsets"][0]["num_repeats"] == 10
    assert r["capture_key"] == f"session:{r['session_id']}"
    epochs = rows(db_url, "SELECT * FROM epoch_results ORDER BY epoch_number")
    assert [e["epoch_number"] for e in epochs] == [1, 2, 3, 4, 5]
    assert [e["checkpoint_on_disk"] for e in epochs] == [False, False, True, True, True]
    assert all(e["loss"] is not None and 0 < e["loss"] < 1 for e in epochs)
    assert epochs[0]["loss"] > epochs[-1]["loss"]
    assert [len(e["sample_images"]) for e in epochs] == [2, 2, 2, 2, 2]
    assert epochs[4]["checkpoint_path"] == str(out / "pixelbaby.safetensors")
    for e in epochs[2:]:
        assert e["checkpoint_size_bytes"] == Path(e["checkpoint_path"]).stat().st_size
    assert (
        rows(db_url, "SELECT count(*) AS n FROM applied_events WHERE kind = 'run_started'")[0]["n"]
        == 3  # at launch (the run, then what its arguments say), at update_metadata
    )


def test_failure_is_recorded_and_reraised(tmp_path: Path, db_url: str) -> None:
    """An exception inside training marks the run failed and reaches the caller untouched."""
    out = tmp_path / "out"
    done = launch("train_network.py", db_url, *kohya_args(out, "--fail_at_step", "7"))
    assert done.returncode == 1
    assert "RuntimeError: CUDA out of memory" in done.stderr
    assert "Traceback" in done.stderr
    run = rows(db_url, "SELECT status, failure_reason, config FROM training_runs")[0]
    assert run["status"] == "failed"
    assert "RuntimeError: CUDA out of memory" in run["failure_reason"]
    assert run["config"]["args"]["network_dim"] == 16
    epochs = rows(db_url, "SELECT epoch_number FROM epoch_results ORDER BY 1")
    assert [e["epoch_number"] for e in epochs] == [1, 2]


def test_failure_at_the_first_step_still_has_the_run(tmp_path: Path, db_url: str) -> None:
    """The run and its configuration are recorded before the first step."""
    done = launch("train_network.py", db_url, *kohya_args(tmp_path, "--fail_at_step", "1"))
    assert done.returncode == 1
    run = rows(db_url, "SELECT status, network_dim, seed FROM training_runs")
    assert run == [{"status": "failed", "network_dim": 16, "seed": 42}]


def test_sdxl_and_flux_trainers(tmp_path: Path, db_url: str) -> None:
    """sdxl_train_network.py and flux_train_network.py (overridden methods) are hooked once."""
    for script, name in (("sdxl_train_network.py", "xl"), ("flux_train_network.py", "fx")):
        args = kohya_args(tmp_path / name, epochs=3)
        args[args.index("pixelbaby")] = name
        done = launch(script, db_url, *args)
        assert done.returncode == 0, done.stderr
    found = rows(
        db_url, "SELECT output_name, model_type, status FROM training_runs ORDER BY output_name"
    )
    assert found == [
        {"output_name": "fx", "model_type": "Flux", "status": "completed"},
        {"output_name": "xl", "model_type": "SDXL", "status": "completed"},
    ]
    per_run = rows(
        db_url,
        "SELECT tr.output_name, count(*) AS n, "
        "count(*) FILTER (WHERE cardinality(er.sample_images) = 2) AS s "
        "FROM epoch_results er JOIN training_runs tr "
        "ON tr.id = er.training_run_id GROUP BY 1 ORDER BY 1",
    )
    assert [(r["output_name"], r["n"], r["s"]) for r in per_run] == [("fx", 3, 3), ("xl", 3, 3)]
    assert (
        rows(db_url, "SELECT count(*) AS n FROM applied_events WHERE kind = 'run_started'")[0]["n"]
        == 6  # two runs, each three times
    )


def test_database_down_changes_nothing_for_training(tmp_path: Path, db_url: str) -> None:
    """With the database unreachable, kohya runs and writes exactly as without the hook;
    every event waits in the spool and lands on sync."""
    down = proxied(db_url, Proxy(("127.0.0.1", 9)))  # never brought up
    plain = launch("train_network.py", db_url, *kohya_args(tmp_path / "plain"), hooked=False)
    hooked = launch("train_network.py", down, *kohya_args(tmp_path / "hooked"))
    assert hooked.returncode == plain.returncode == 0
    assert hooked.stdout.replace("hooked", "X") == plain.stdout.replace("plain", "X")
    assert sorted(p.name for p in (tmp_path / "hooked").rglob("*.safetensors")) == sorted(
        p.name for p in (tmp_path / "plain").rglob("*.safetensors")
    )
    assert rows(db_url, "SELECT count(*) AS n FROM training_runs")[0]["n"] == 0
    synced = CliRunner().invoke(cli, ["--database-url", db_url, "sync"])
    assert synced.exit_code == 0, synced.output
    run = rows(db_url, "SELECT status FROM training_runs")
    assert run == [{"status": "completed"}]
    assert (
        rows(db_url, "SELECT count(*) AS n FROM epoch_results WHERE loss IS NOT NULL")[0]["n"] == 5
    )


def test_old_kohya_without_hooked_methods(tmp_path: Path, db_url: str) -> None:
    """A kohya version lacking update_metadata and sample_images: a warning, then files
    are still recorded (by watching the output folder), and training is untouched."""
    out = tmp_path / "out"
    done = launch(
        "train_network.py", db_url, *kohya_args(out, epochs=3), env={"FAKE_KOHYA_OLD": "1"}
    )
    assert done.returncode == 0, done.stderr
    assert "has no NetworkTrainer.update_metadata" in done.stderr
    assert "has no NetworkTrainer.sample_images" in done.stderr
    run = rows(db_url, "SELECT status, network_dim FROM training_runs")
    assert run == [{"status": "completed", "network_dim": 16}]
    files = rows(db_url, "SELECT count(*) AS n FROM checkpoints")[0]["n"]
    assert files == 3


def test_kohya_with_a_changed_signature(tmp_path: Path, db_url: str) -> None:
    """A kohya whose sample_images takes other parameters than the hook reads: one warning
    naming them, the method left alone, and the files recorded by watching the folder."""
    scripts = tmp_path / "sd-scripts"
    shutil.copytree(FAKE, scripts, ignore=shutil.ignore_patterns("__pycache__"))
    trainer = scripts / "train_network.py"
    source = trainer.read_text(encoding="utf-8")
    old = (
        "        self, accelerator, args, epoch, global_step, device, vae, tokenizers,"
        " text_encoder, unet\n    ):\n        train_util.sample_images(\n"
        "            accelerator, args, epoch, global_step,"
    )
    assert source.count(old) == 1
    trainer.write_text(
        source.replace(old, old.replace("epoch, global_step", "epoch_index, global_step")),
        encoding="utf-8",
    )
    out = tmp_path / "out"
    done = launch("train_network.py", db_url, *kohya_args(out, epochs=3), scripts=scripts)
    assert done.returncode == 0, done.stderr
    warning = (
        "NetworkTrainer.sample_images takes (accelerator, args, epoch_index, global_step), "
        "not (accelerator, args, epoch, global_step); recording files instead"
    )
    assert done.stderr.count(warning) == 1, done.stderr
    assert "has no NetworkTrainer.sample_images" not in done.stderr
    assert f"watching {out} for checkpoints instead" in done.stderr
    run = rows(db_url, "SELECT status, network_dim FROM training_runs")
    assert run == [{"status": "completed", "network_dim": 16}]
    assert rows(db_url, "SELECT count(*) AS n FROM checkpoints")[0]["n"] == 3


def test_hook_and_watcher_on_one_run(
    tmp_path: Path, db_url: str, start_watcher: Callable[..., Watcher]
) -> None:
    """A watcher on the output folder and the hook record one run, no duplicates."""
    out = tmp_path / "out"
    out.mkdir()
    watcher = start_watcher(out, db_url)
    done = launch("train_network.py", db_url, *kohya_args(out, "--step_delay", "0.05"))
    assert done.returncode == 0, done.stderr
    wait_for(
        lambda: (
            rows(db_url, "SELECT count(*) AS n FROM checkpoints WHERE kind = 'final'")[0]["n"] == 1
        )
    )
    watcher.stop()
    assert rows(db_url, "SELECT count(*) AS n FROM training_runs")[0]["n"] == 1
    assert rows(db_url, "SELECT count(*) AS n FROM checkpoints")[0]["n"] == 5
    assert [
        e["epoch_number"] for e in rows(db_url, "SELECT epoch_number FROM epoch_results ORDER BY 1")
    ] == [1, 2, 3, 4, 5]


def test_only_the_main_process_records(tmp_path: Path, db_url: str) -> None:
    """A process with RANK=1 trains but records nothing."""
    done = launch(
        "train_network.py",
        db_url,
        *kohya_args(tmp_path, epochs=2),
        env={"RANK": "1", "LOCAL_RANK": "1"},
    )
    assert done.returncode == 0, done.stderr
    assert rows(db_url, "SELECT count(*) AS n FROM training_runs")[0]["n"] == 0


def test_launcher_usage_errors(tmp_path: Path, db_url: str) -> None:
    """No script, or a missing one: exit 2 with a clear line."""
    done = subprocess.run([sys.executable, str(LAUNCHER)], capture_output=True, text=True)
    assert done.returncode == 2 and "usage:" in done.stderr
    done = launch("no_such_train.py", db_url)
    assert done.returncode == 2
    assert "no such training script: no_such_train.py" in done.stderr


def test_post_checkpoint_shell_hook(tmp_path: Path, db_url: str) -> None:
    """hooks/post_checkpoint.sh records a checkpoint, and never fails the trainer."""
    from .kohya_sim import KohyaRun

    sim = KohyaRun(tmp_path, epochs=2, save_last_n=None)
    sim.save_epoch(1)
    env = os.environ.copy()
    env.update(
        LORA_TRACKER_DATABASE_URL=db_url,
        LORA_TRACKER_RUN="simpletuner_run",
        LORA_TRACKER=f"{sys.executable} -m lora_tracker",
    )
    hook = str(ROOT / "hooks" / "post_checkpoint.sh")
    done = subprocess.run(
        ["sh", "-c", f'{hook} "$1"', "sh", str(sim.epoch_path(1))],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert rows(db_url, "SELECT run_name FROM training_runs") == [{"run_name": "simpletuner_run"}]
    bad = tmp_path / "broken-000002.safetensors"
    bad.write_bytes(b"nope")
    done = subprocess.run(
        ["sh", "-c", f'{hook} "$1"', "sh", str(bad)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0
    assert "checkpoint not recorded" in done.stderr
