"""The Python API (`import lora_tracker`): start, log epochs, finish; safe in a loop."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any, cast

import pytest
from click.testing import CliRunner
from pydantic import BaseModel

import lora_tracker
from lora_tracker.cli import cli
from lora_tracker.db import Database

from .conftest import proxied, proxy_target, rows
from .kohya_sim import KohyaRun
from .netproxy import Proxy


class TrainConfig(BaseModel):
    rank: int = 16
    lora_alpha: int = 8
    learning_rate: float = 2e-4
    resolution: int = 768
    num_train_epochs: int = 3
    pretrained_model_name_or_path: str = "stabilityai/stable-diffusion-2-1"


@pytest.mark.both_servers
def test_start_log_finish(tmp_path: Path, db_url: str) -> None:
    """A run with a pydantic config, epochs with loss, checkpoints and samples, completed."""
    sim = KohyaRun(tmp_path / "out", output_name="api_lora", epochs=2, save_last_n=None)
    run = lora_tracker.start_run(
        "api_run",
        TrainConfig(),
        database_url=db_url,
        model_type="SD2",
        caption_version="captions_v1",
    )
    for epoch in (1, 2):
        path = sim.save_epoch(epoch)
        sample = tmp_path / f"sample_{epoch}.png"
        sample.write_bytes(b"png")
        run.log_epoch(
            epoch,
            loss=0.5 / epoch,
            metrics={"lr": 1e-4, "note": "text"},  # type: ignore[dict-item]  # text is left out
            checkpoint_path=path,
            sample_images=[sample],
        )
    run.finish()
    assert run.flush(30)
    found = rows(db_url, "SELECT * FROM training_runs")
    assert len(found) == 1
    r = found[0]
    assert (r["run_name"], r["status"], r["model_type"], r["network_dim"], r["resolution"]) == (
        "api_run", "completed", "SD2", 16, "768x768",
    )  # fmt: skip
    assert r["learning_rate"] == 2e-4 and r["num_epochs"] == 3
    assert r["caption_version"] == "captions_v1"
    assert r["config"]["pretrained_model_name_or_path"] == "stabilityai/stable-diffusion-2-1"
    epochs = rows(db_url, "SELECT * FROM epoch_results ORDER BY epoch_number")
    assert [(e["epoch_number"], e["loss"]) for e in epochs] == [(1, 0.5), (2, 0.25)]
    assert epochs[0]["metrics"] == {"lr": 1e-4}
    assert epochs[1]["checkpoint_path"] == str(sim.epoch_path(2))
    assert str(tmp_path / "sample_2.png") in epochs[1]["sample_images"]


def test_context_manager_records_failure_and_reraises(db_url: str) -> None:
    """An exception in the with-block marks the run failed and propagates."""
    with (
        pytest.raises(ValueError, match="loss is NaN"),
        lora_tracker.start_run("failing_run", {"rank": 4}, database_url=db_url) as run,
    ):
        run.log_epoch(1, loss=0.3)
        raise ValueError("loss is NaN")
    assert run.flush(30)
    r = rows(db_url, "SELECT status, failure_reason, network_dim FROM training_runs")[0]
    assert r["status"] == "failed" and r["network_dim"] == 4
    assert r["failure_reason"] == "ValueError: loss is NaN"


def test_context_manager_ends_like_the_kohya_hook(db_url: str) -> None:
    """One end-status rule everywhere: sys.exit(0) in the block completes the run (as in the
    kohya hook), sys.exit(2) fails it, Ctrl-C cancels it."""
    for name, error in (
        ("exit_zero", SystemExit(0)),
        ("exit_two", SystemExit(2)),
        ("ctrl_c", KeyboardInterrupt()),
    ):
        with (
            pytest.raises(type(error)),
            lora_tracker.start_run(name, {"rank": 4}, database_url=db_url) as run,
        ):
            raise error
        assert run.flush(30)
    found = rows(db_url, "SELECT run_name, status FROM training_runs ORDER BY run_name")
    assert found == [
        {"run_name": "ctrl_c", "status": "cancelled"},
        {"run_name": "exit_two", "status": "failed"},
        {"run_name": "exit_zero", "status": "completed"},
    ]


def test_bad_values_never_raise_into_training(
    tmp_path: Path, db_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Invalid fields, odd metrics and missing files are logged; the loop goes on."""
    run = lora_tracker.start_run(
        "odd_run",
        {"rank": "many"},
        database_url=db_url,
        network_dim=-3,
        model_type="SD99",
        no_such_column=1,
    )
    run.log_epoch(
        1,
        loss=float("nan"),
        metrics={"x": "y"},  # type: ignore[dict-item]  # a bad value on purpose
        checkpoint_path=tmp_path / "missing.safetensors",
    )
    run.log_checkpoint(tmp_path / "also-missing.safetensors")
    run.finish()
    assert run.flush(30)
    r = rows(db_url, "SELECT run_name, status, network_dim, model_type FROM training_runs")
    assert r == [
        {"run_name": "odd_run", "status": "completed", "network_dim": None, "model_type": None}
    ]
    assert rows(db_url, "SELECT loss FROM epoch_results") == [{"loss": None}]
    text = caplog.text
    assert "ignoring unknown run fields no_such_column" in text
    assert "ignoring invalid run fields" in text
    assert "missing.safetensors not recorded" in text


def test_values_of_the_wrong_kind_are_left_out_with_one_line(
    tmp_path: Path, db_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """What is no path (a sample image given as 123, a checkpoint as 7), no mapping or no
    number is left out with a line, and the rest of the call is recorded (a TypeError
    came out of log_epoch into the training loop; a bad checkpoint cost the epoch its
    loss); a bad epoch costs that call, in one line, not a traceback; finish() with a
    status that is none leaves the run to end as if it was not called."""
    caplog.set_level(logging.WARNING)
    (tmp_path / "a.png").write_bytes(b"png")
    run = lora_tracker.start_run("kinds", database_url=db_url)
    bad: Any = [123, tmp_path / "a.png"]
    run.log_epoch(1, loss=0.5, sample_images=bad, metrics=cast(Any, {"bad": "x", "ok": 1.0}))
    run.log_epoch(2, loss=0.4, sample_images=str(tmp_path / "a.png"), checkpoint_path=bad[0])
    run.log_epoch(3, loss=0.3, metrics=bad)
    run.log_checkpoint(bad)
    run.log_epoch(cast(int, 3.5), loss=0.2)
    run.finish(cast(Any, "done"))
    assert not run.finished
    run.finish()
    assert run.flush(30)
    epochs = rows(
        db_url,
        "SELECT epoch_number, loss, metrics, sample_images FROM epoch_results "
        "ORDER BY epoch_number",
    )
    image = str(tmp_path / "a.png")
    assert [(e["epoch_number"], e["loss"], e["sample_images"]) for e in epochs] == [
        (1, 0.5, [image]), (2, 0.4, [image]), (3, 0.3, []),
    ]  # fmt: skip
    assert epochs[0]["metrics"] == {"ok": 1.0}
    assert rows(db_url, "SELECT status FROM training_runs") == [{"status": "completed"}]
    said = [r.getMessage() for r in caplog.records]
    assert "lora-tracker: sample image 123 is no file path: left out" in said
    assert "lora-tracker: metric 'bad' = 'x' is no number: left out" in said
    assert any(line.startswith("lora-tracker: metrics [123") for line in said), said
    assert any(line.startswith("lora-tracker could not record an event: epoch:") for line in said)
    ended = "completed, failed or cancelled"
    assert f"lora-tracker: finish(status='done') ignored: a run ends {ended}" in said
    assert not any(r.exc_info for r in caplog.records)  # no traceback


def test_numpy_values_in_a_config_are_stored_as_numbers(db_url: str) -> None:
    """A config built from numpy (or torch) values keeps them as JSON numbers and lists,
    not as their text ("16"), so they compare as numbers and fill the run's columns."""
    import numpy as np

    config = {"rank": np.int64(16), "learning_rate": np.float32(0.5), "shape": np.arange(3)}
    with lora_tracker.start_run("numbers", config, database_url=db_url) as run:
        pass
    assert run.flush(30)
    stored = rows(db_url, "SELECT config, network_dim, learning_rate FROM training_runs")
    assert stored == [{
        "config": {"rank": 16, "learning_rate": 0.5, "shape": [0, 1, 2]},
        "network_dim": 16, "learning_rate": 0.5,
    }]  # fmt: skip


def test_a_finished_run_started_again_under_its_name_says_so(
    db_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A script run twice with the same name continues the run (a resumed training): when
    that run had ended, and was judged, a line says its epochs are now this training's."""
    caplog.set_level(logging.WARNING)
    with lora_tracker.start_run("twice_named", database_url=db_url) as run:
        run.log_epoch(1, loss=0.5)
    assert run.flush(30)
    with Database(db_url) as db, db.transaction() as conn:
        conn.execute("UPDATE training_runs SET overall_verdict = 'success'")
    assert not [r for r in caplog.records if "started again" in r.getMessage()]
    with lora_tracker.start_run("twice_named", database_url=db_url) as again:
        again.log_epoch(1, loss=0.25)
    assert again.flush(30)
    said = [r.getMessage() for r in caplog.records if "started again" in r.getMessage()]
    assert said == [
        "run twice_named was completed, judged success: started again under its name, it "
        "takes this training's epochs (a new experiment wants a new name)"
    ]
    assert rows(db_url, "SELECT status FROM training_runs") == [{"status": "completed"}]
    assert rows(db_url, "SELECT loss FROM epoch_results") == [{"loss": 0.25}]


def test_output_dir_joins_the_watchers_run(tmp_path: Path, db_url: str) -> None:
    """With output_dir, files a watcher records land in the API's run, not a new one."""
    from click.testing import CliRunner

    from lora_tracker.cli import cli

    out = tmp_path / "out"
    out.mkdir()
    ckpt_dir = out / "checkpoint-10"
    ckpt_dir.mkdir()
    import numpy as np
    from safetensors.numpy import save

    (ckpt_dir / "pytorch_lora_weights.safetensors").write_bytes(
        save({"w": np.zeros(4, np.float32)}, metadata={"format": "pt"})
    )
    run = lora_tracker.start_run("diffusers_run", {"rank": 4}, database_url=db_url, output_dir=out)
    run.log_epoch(1, loss=0.2)
    assert run.flush(30)
    result = CliRunner().invoke(cli, ["--database-url", db_url, "watch", "--once", str(out)])
    assert result.exit_code == 0, result.output
    assert rows(db_url, "SELECT run_name FROM training_runs") == [{"run_name": "diffusers_run"}]
    assert rows(db_url, "SELECT count(*) AS n FROM checkpoints")[0]["n"] == 1


SCRIPT = """
import sys, lora_tracker
run = lora_tracker.start_run("proc_run", {"rank": 8}, database_url=sys.argv[1])
for epoch in range(1, 4):
    run.log_epoch(epoch, loss=1.0 / epoch)
if sys.argv[2] == "crash":
    raise RuntimeError("diverged at epoch 3")
# no finish(), no flush(): exit must still deliver what was logged
"""


def _script(tmp_path: Path, url: str, mode: str) -> subprocess.CompletedProcess[str]:
    path = tmp_path / "train.py"
    path.write_text(textwrap.dedent(SCRIPT))
    return subprocess.run(
        [sys.executable, str(path), url, mode],
        capture_output=True,
        text=True,
        timeout=120,
        env=os.environ.copy(),
    )


def test_pending_events_flushed_at_exit(tmp_path: Path, db_url: str) -> None:
    """A script that exits right after logging still has every epoch recorded."""
    done = _script(tmp_path, db_url, "ok")
    assert done.returncode == 0, done.stderr
    epochs = rows(db_url, "SELECT epoch_number FROM epoch_results ORDER BY 1")
    assert [e["epoch_number"] for e in epochs] == [1, 2, 3]
    assert rows(db_url, "SELECT status FROM training_runs") == [{"status": "in_progress"}]


def test_uncaught_exception_marks_run_failed(tmp_path: Path, db_url: str) -> None:
    """A script that dies of an exception leaves its run failed, with the error."""
    done = _script(tmp_path, db_url, "crash")
    assert done.returncode == 1
    assert "RuntimeError: diverged at epoch 3" in done.stderr
    r = rows(db_url, "SELECT status, failure_reason FROM training_runs")[0]
    assert r == {"status": "failed", "failure_reason": "RuntimeError: diverged at epoch 3"}


def test_database_down_spools_and_exits_in_time(tmp_path: Path, db_url: str) -> None:
    """With the database down, the script runs normally and its events wait in the spool."""
    down = proxied(db_url, Proxy(proxy_target(db_url)))
    done = _script(tmp_path, down, "ok")
    assert done.returncode == 0, done.stderr
    spool = Path(os.environ["LORA_TRACKER_HOME"]) / "spool" / "events.jsonl"
    kinds = [json.loads(line)["kind"] for line in spool.read_text().splitlines()]
    assert kinds == ["run_started", "epoch_logged", "epoch_logged", "epoch_logged"]
    from click.testing import CliRunner

    from lora_tracker.cli import cli

    assert CliRunner().invoke(cli, ["--database-url", db_url, "sync"]).exit_code == 0
    assert len(rows(db_url, "SELECT * FROM epoch_results")) == 3


def test_diffusers_style_example(tmp_path: Path, db_url: str) -> None:
    """examples/diffusers_style_loop.py runs and records its run."""
    from .conftest import ROOT

    env = os.environ.copy()
    env["LORA_TRACKER_DATABASE_URL"] = db_url
    done = subprocess.run(
        [
            sys.executable,
            str(ROOT / "examples" / "diffusers_style_loop.py"),
            str(tmp_path / "o"),
            "--run_name",
            "example_run",
            "--num_train_epochs",
            "2",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert done.returncode == 0, done.stderr
    r = rows(db_url, "SELECT run_name, status, network_dim, resolution, trainer FROM training_runs")
    assert r == [
        {
            "run_name": "example_run",
            "status": "completed",
            "network_dim": 16,
            "resolution": "512x512",
            "trainer": "diffusers",
        }
    ]
    epochs = rows(
        db_url,
        "SELECT epoch_number, loss IS NOT NULL AS has_loss, "
        "cardinality(sample_images) AS samples, checkpoint_path "
        "FROM epoch_results ORDER BY 1",
    )
    assert [(e["epoch_number"], e["has_loss"], e["samples"]) for e in epochs] == [
        (1, True, 1),
        (2, True, 1),
    ]
    assert epochs[1]["checkpoint_path"].endswith("checkpoint-40/pytorch_lora_weights.safetensors")


def test_exit_is_bounded_when_the_database_hangs(tmp_path: Path) -> None:
    """A database that accepts connections but never answers: the script still exits
    within the flush timeout, and every event is in the spool."""
    import socket
    import time

    with socket.socket() as blackhole:
        blackhole.bind(("127.0.0.1", 0))
        blackhole.listen(64)  # completes TCP handshakes, never answers
        url = f"postgresql://u:p@127.0.0.1:{blackhole.getsockname()[1]}/db?connect_timeout=30"
        env = os.environ.copy()
        env["LORA_TRACKER_FLUSH_TIMEOUT"] = "1"
        path = tmp_path / "train.py"
        path.write_text(textwrap.dedent(SCRIPT))
        start = time.monotonic()
        done = subprocess.run(
            [sys.executable, str(path), url, "ok"],
            capture_output=True,
            text=True,
            timeout=60,
            env=env,
        )
        elapsed = time.monotonic() - start
    assert done.returncode == 0, done.stderr
    assert elapsed < 15, elapsed
    spool = Path(os.environ["LORA_TRACKER_HOME"]) / "spool" / "events.jsonl"
    kinds = sorted(json.loads(line)["kind"] for line in spool.read_text().splitlines())
    assert kinds == ["epoch_logged", "epoch_logged", "epoch_logged", "run_started"]


SLOW_JOB_SCRIPT = """
import sys, time, lora_tracker
from lora_tracker.capture.events import EpochLogged
run = lora_tracker.start_run("slow_job", {"rank": 8}, database_url=sys.argv[1], guard="off")

def slow():  # a job still being read by the background thread when the exit flush runs out
    time.sleep(2)
    return [EpochLogged(run_key=run.run_key, run_name=run.run_name, epoch=1, loss=0.5)]

run.submit(slow)
run.log_epoch(2, loss=0.25)
"""


def test_exit_spools_what_the_background_thread_holds(tmp_path: Path, db_url: str) -> None:
    """Events the background thread has taken but not written when the exit flush runs
    out (it was still building them: a loaded machine) go to the spool too, and land
    exactly once after `sync`, whether or not the thread wrote some of them after all."""
    env = {**os.environ, "LORA_TRACKER_FLUSH_TIMEOUT": "0.5"}
    path = tmp_path / "train.py"
    path.write_text(textwrap.dedent(SLOW_JOB_SCRIPT))
    done = subprocess.run(
        [sys.executable, str(path), db_url], capture_output=True, text=True, timeout=60, env=env
    )
    assert done.returncode == 0, done.stderr
    spool = Path(os.environ["LORA_TRACKER_HOME"]) / "spool" / "events.jsonl"
    kinds = [json.loads(line)["kind"] for line in spool.read_text().splitlines()]
    assert kinds.count("epoch_logged") == 2, kinds  # each once: no line twice
    synced = CliRunner().invoke(cli, ["--database-url", db_url, "sync"])
    assert synced.exit_code == 0, synced.output
    epochs = rows(db_url, "SELECT epoch_number, loss FROM epoch_results ORDER BY epoch_number")
    assert [(r["epoch_number"], r["loss"]) for r in epochs] == [(1, 0.5), (2, 0.25)]


def test_one_epoch_reported_twice_in_a_batch(db_url: str) -> None:
    """Reports of the same epoch in one batch land in order: the later loss, both metrics,
    every sample image (a statement may not touch a row twice: they go in waves)."""
    from lora_tracker.capture.delivery import EventDelivery
    from lora_tracker.capture.events import EpochLogged, RunStarted

    key = "api:twice"
    events: list[RunStarted | EpochLogged] = [
        RunStarted(run_key=key, run_name="twice"),
        EpochLogged(run_key=key, epoch=1, loss=0.5, metrics={"a": 1.0}, sample_images=["/s/1"]),
        EpochLogged(run_key=key, epoch=2, loss=0.4),
        EpochLogged(run_key=key, epoch=1, loss=0.3, metrics={"b": 2.0}, sample_images=["/s/2"]),
        EpochLogged(run_key=key, epoch=1, loss=None, metrics={"a": 3.0}),
    ]
    delivery = EventDelivery(db_url)
    try:
        outcomes = delivery.submit_many(events).outcomes
    finally:
        delivery.close()
    assert [delivery for _, delivery, _ in outcomes] == ["recorded"] * 5
    found = rows(
        db_url,
        "SELECT epoch_number, loss, metrics, sample_images FROM epoch_results ORDER BY 1",
    )
    assert found == [
        {"epoch_number": 1, "loss": 0.3, "metrics": {"a": 3.0, "b": 2.0},
         "sample_images": ["/s/1", "/s/2"]},
        {"epoch_number": 2, "loss": 0.4, "metrics": None, "sample_images": []},
    ]  # fmt: skip
