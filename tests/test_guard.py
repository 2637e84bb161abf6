"""The launch guard: a training that repeats a failed configuration says so before its first
step, through the kohya launcher (the stand-in trainer in real processes), the Python API,
the transformers callback and the watcher; a database down or hanging costs under a second."""

from __future__ import annotations

import contextlib
import logging
import os
import re
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

import lora_tracker
from lora_tracker.capture.watcher import Watcher
from lora_tracker.guard import GuardResult, RepeatsFailedRun, banner, resolve_mode

from .conftest import backfilled, proxied, rows, wait_for
from .kohya_sim import checkpoint_bytes, sd15_metadata
from .netproxy import Proxy
from .test_hooks_kohya import kohya_args, launch

TIME_LIMIT_S = 1.0  # what the issue allows the check to add


def mark_failed(url: str, run_name: str, **extra: Any) -> None:
    """Judge a recorded run a failure, as `lora-tracker verdict` would."""
    values = {"overall_verdict": "failure", "quality_score": 3, "status": "completed",
              "key_findings": "Backgrounds turn to noise from epoch 3", "issues_found":
              ["wrong_backgrounds", "overfitting"], **extra}  # fmt: skip
    sets = ", ".join(f"{column} = %({column})s" for column in values)
    with psycopg.connect(url) as conn:
        conn.execute(f"UPDATE training_runs SET {sets} WHERE run_name = %(name)s",
                     {**values, "name": run_name})  # fmt: skip


def failed_run(url: str, name: str = "pixel_v1", **settings: Any) -> None:
    """A failed run recorded by hand with these settings."""
    values = {"run_name": name, "model_type": "SD15", "network_dim": 16, "network_alpha": 8,
              "resolution": "512x512", "learning_rate": 1e-4, **settings}  # fmt: skip
    columns = ", ".join(values)
    marks = ", ".join(f"%({c})s" for c in values)
    with psycopg.connect(url) as conn:
        conn.execute(f"INSERT INTO training_runs ({columns}) VALUES ({marks})", values)
    mark_failed(url, name)


@contextlib.contextmanager
def silent_server() -> Iterator[int]:
    """A TCP listener that accepts connections and never answers: a hanging database."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.1)
        while not stop.is_set():
            with contextlib.suppress(OSError):
                held.append(server.accept()[0])

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield int(server.getsockname()[1])
    finally:
        stop.set()
        thread.join(5)
        for conn in held:
            conn.close()
        server.close()


def hanging_url(port: int) -> str:
    return f"postgresql://lora:secret-pw@127.0.0.1:{port}/lora_tracker"


def down_url(db_url: str) -> str:
    proxy = Proxy(("127.0.0.1", 9))  # never put up: connection refused
    return proxied(db_url, proxy)


# -- the kohya launcher ------------------------------------------------------------------------


def trained(url: str, out: Path, *extra: str, env: dict[str, str] | None = None) -> Any:
    done = launch("train_network.py", url, *kohya_args(out, *extra, epochs=2), env=env)
    return done


def test_kohya_banner_for_a_repeated_failure_only(tmp_path: Path, db_url: str) -> None:
    """A relaunch of a failed configuration shows the banner before the first step and
    trains on; a different network_dim shows nothing."""
    first = trained(db_url, tmp_path / "a")
    assert first.returncode == 0, first.stderr
    assert "ALREADY FAILED" not in first.stderr
    [run] = rows(db_url, "SELECT run_name FROM training_runs")
    mark_failed(db_url, run["run_name"], key_findings="faces melt\x1b[31m at epoch 2")

    again = trained(db_url, tmp_path / "b")
    assert again.returncode == 0, again.stderr
    console = again.stderr
    assert "THIS CONFIGURATION ALREADY FAILED (1 earlier run)" in console
    assert run["run_name"] in console and "quality 3/10" in console
    assert "faces melt\\x1b[31m at epoch 2" in console and "\x1b" not in console
    assert "issues: wrong_backgrounds, overfitting" in console
    assert "Training goes on" in console
    banner_at = (again.stdout + again.stderr).find("ALREADY FAILED")
    assert banner_at >= 0 and "epoch 1/2" in again.stdout  # trained, after the banner
    block = console[console.index("=" * 20) : console.rindex("=" * 20) + 20]
    assert max(len(line) for line in block.splitlines()) <= 100

    other = trained(db_url, tmp_path / "c", "--network_dim", "32")
    assert other.returncode == 0, other.stderr
    assert "ALREADY FAILED" not in other.stderr and "launch check" not in other.stderr

    off = trained(db_url, tmp_path / "d", env={"LORA_TRACKER_GUARD": "off"})
    assert off.returncode == 0 and "ALREADY FAILED" not in off.stderr


def test_kohya_strict_stops_before_the_first_step(tmp_path: Path, db_url: str) -> None:
    """--guard strict: exit 3 before the first step, the run recorded as cancelled with the
    reason; LORA_TRACKER_GUARD=strict does the same."""
    first = trained(db_url, tmp_path / "a")
    assert first.returncode == 0, first.stderr
    [run] = rows(db_url, "SELECT run_name FROM training_runs")
    mark_failed(db_url, run["run_name"])

    out = tmp_path / "b"
    command = ["--guard", "strict", "train_network.py", *kohya_args(out, epochs=2)]
    stopped = launch(command[0], db_url, *command[1:])
    assert stopped.returncode == 3, stopped.stderr
    assert "Stopping before the first step" in stopped.stderr
    assert "epoch 1/" not in stopped.stdout and not out.exists()
    assert "Traceback" not in stopped.stderr
    cancelled = rows(db_url, "SELECT * FROM training_runs WHERE status = 'cancelled'")
    assert len(cancelled) == 1
    assert "already failed in " + run["run_name"] in cancelled[0]["failure_reason"]
    assert cancelled[0]["network_dim"] == 16

    by_env = trained(db_url, tmp_path / "c", env={"LORA_TRACKER_GUARD": "strict"})
    assert by_env.returncode == 3 and not (tmp_path / "c").exists()
    different = trained(db_url, tmp_path / "d", "--network_alpha", "16",
                        env={"LORA_TRACKER_GUARD": "strict"})  # fmt: skip
    assert different.returncode == 0, different.stderr


def test_kohya_bad_guard_value_is_one_line(tmp_path: Path, db_url: str) -> None:
    """A mode that is not strict, warn or off: one line, exit 2, nothing recorded."""
    bad = launch("--guard", db_url, "sometimes", "train_network.py", *kohya_args(tmp_path))
    assert bad.returncode == 2
    assert (
        bad.stderr.strip() == "lora-tracker: --guard must be strict, warn or off, not 'sometimes'"
    )
    by_env = trained(db_url, tmp_path / "x", env={"LORA_TRACKER_GUARD": "loud"})
    assert by_env.returncode == 2 and "LORA_TRACKER_GUARD must be" in by_env.stderr
    assert rows(db_url, "SELECT * FROM training_runs") == []


def test_kohya_database_down_or_hanging(tmp_path: Path, db_url: str) -> None:
    """An unreachable or silent database: one skip line, no traceback, training runs, and
    the check adds under a second (compared with the guard off)."""
    env = {"LORA_TRACKER_FLUSH_TIMEOUT": "0", "LORA_TRACKER_GUARD_TIMEOUT": "0.8"}
    down = trained(down_url(db_url), tmp_path / "down", env=env)
    assert down.returncode == 0, down.stderr
    assert down.stderr.count("launch check skipped") == 1 and "Traceback" not in down.stderr
    assert "secret" not in down.stderr
    with silent_server() as port:
        url = hanging_url(port)
        # each in its own data folder: a spool left by the other would be replayed first
        # (against the silent server), which is not the guard's cost
        began = time.monotonic()
        off = trained(
            url,
            tmp_path / "off",
            env={**env, "LORA_TRACKER_GUARD": "off", "LORA_TRACKER_HOME": str(tmp_path / "h1")},
        )
        off_s = time.monotonic() - began
        began = time.monotonic()
        hung = trained(
            url, tmp_path / "hung", env={**env, "LORA_TRACKER_HOME": str(tmp_path / "h2")}
        )
        hung_s = time.monotonic() - began
    assert off.returncode == 0 and hung.returncode == 0, hung.stderr
    assert "launch check skipped: the database did not answer within 0.8 s" in hung.stderr
    assert "Traceback" not in hung.stderr and "secret-pw" not in hung.stderr
    assert hung_s - off_s < TIME_LIMIT_S, (hung_s, off_s)


# -- the Python API ----------------------------------------------------------------------------


@pytest.fixture
def guard_log(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.WARNING, logger="lora_tracker")
    return caplog


def api_config(**changes: Any) -> dict[str, Any]:
    return {"model_type": "SD15", "rank": 16, "lora_alpha": 8, "resolution": 512,
            "lr": 1e-4, "epochs": 3, **changes}  # fmt: skip


@pytest.mark.both_servers
def test_api_banner_for_a_repeated_failure(
    db_url: str, guard_log: pytest.LogCaptureFixture
) -> None:
    """start_run(config=...) logs the banner for the same settings, nothing for others,
    and one line for an equivalent success."""
    failed_run(db_url)
    run = lora_tracker.start_run("again", config=api_config(), database_url=db_url)
    # warn mode: the answer comes from the check's thread while training starts
    wait_for(lambda: "THIS CONFIGURATION ALREADY FAILED" in guard_log.text)
    assert "pixel_v1" in guard_log.text
    run.finish()
    assert run.flush(10)
    guard_log.clear()
    other = lora_tracker.start_run("other", config=api_config(rank=32), database_url=db_url)
    other.finish()
    assert other.flush(10)
    assert "ALREADY FAILED" not in guard_log.text and "launch check" not in guard_log.text
    with psycopg.connect(db_url) as conn:
        conn.execute("UPDATE training_runs SET overall_verdict = 'success', quality_score = 8, "
                     "status = 'completed' WHERE run_name = 'other'")  # fmt: skip
    guard_log.clear()
    third = lora_tracker.start_run("third", config=api_config(rank=32), database_url=db_url)
    third.finish()
    assert third.flush(10)
    lines = [r.getMessage() for r in guard_log.records]
    assert lines == ["lora-tracker: these settings already succeeded: run other "
                     "(quality 8/10, best epoch not set)"]  # fmt: skip


def test_no_banner_when_no_training_setting_is_known(
    db_url: str, guard_log: pytest.LogCaptureFixture
) -> None:
    """With only the model type and resolution known (a config without its dim, alpha,
    learning rate or optimizer), "the same settings" would be every run of that model: the
    check says nothing (it printed the failure banner, then a success line for another
    run). One training setting known, it compares again."""
    failed_run(db_url)
    vague = lora_tracker.start_run("vague", database_url=db_url, model_type="SD15",
                                   resolution="512x512")  # fmt: skip
    vague.finish()
    assert vague.flush(10)
    assert guard_log.text == ""
    known = lora_tracker.start_run("known", database_url=db_url, model_type="SD15",
                                   resolution="512x512", network_dim=16)  # fmt: skip
    wait_for(lambda: "THIS CONFIGURATION ALREADY FAILED" in guard_log.text)
    known.finish()
    assert known.flush(10)


def test_api_strict_raises_exit_3_and_records_cancelled(db_url: str) -> None:
    """guard="strict": RepeatsFailedRun (SystemExit 3) before training, the run cancelled."""
    failed_run(db_url)
    with pytest.raises(RepeatsFailedRun) as stopped:
        lora_tracker.start_run("repeat", config=api_config(), database_url=db_url, guard="strict")
    assert isinstance(stopped.value, SystemExit) and stopped.value.code == 3
    [run] = rows(db_url, "SELECT * FROM training_runs WHERE run_name = 'repeat'")
    assert run["status"] == "cancelled" and "pixel_v1" in run["failure_reason"]


def test_api_run_started_again_is_not_its_own_repeated_failure(
    db_url: str, guard_log: pytest.LogCaptureFixture
) -> None:
    """start_run with the name of a recorded run starts that run again: the run is not
    another run with its settings. In strict mode its failure does not stop it, and its
    record is not turned into a cancelled run (it was: its status and reason overwritten);
    another failed run with those settings still stops it."""
    failed_run(db_url, name="t", status="completed")
    again = lora_tracker.start_run("t", config=api_config(), database_url=db_url, guard="strict")
    again.log_epoch(1, loss=0.5)
    again.finish()
    assert again.flush(10)
    assert "ALREADY FAILED" not in guard_log.text
    [run] = rows(db_url, "SELECT status, failure_reason FROM training_runs WHERE run_name = 't'")
    assert run == {"status": "completed", "failure_reason": None}
    failed_run(db_url, name="u")  # another run, same settings, failed
    with pytest.raises(RepeatsFailedRun):
        lora_tracker.start_run("t", config=api_config(), database_url=db_url, guard="strict")


@pytest.mark.parametrize("problem", ["down", "hanging"])
def test_api_database_down_or_hanging_costs_under_a_second(
    problem: str, db_url: str, guard_log: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """start_run returns within the time limit with one skip line and no traceback."""
    monkeypatch.setenv("LORA_TRACKER_GUARD_TIMEOUT", "0.8")  # the product's default
    with silent_server() as port:
        url = down_url(db_url) if problem == "down" else hanging_url(port)
        began = time.monotonic()
        run = lora_tracker.start_run("unreachable", config=api_config(), database_url=url)
        took = time.monotonic() - began
        # warn mode: start_run does not wait; the skip line comes when the check gives up
        # (its own time-outs: libpq's 2 s connect time-out for a silent server)
        wait_for(lambda: "launch check skipped" in guard_log.text, timeout=10)
        answered = time.monotonic() - began
    assert took < TIME_LIMIT_S and answered < 4, (took, answered)
    skipped = [r for r in guard_log.records if "launch check skipped" in r.getMessage()]
    assert len(skipped) == 1 and skipped[0].exc_info is None
    assert "secret-pw" not in guard_log.text
    run.finish()


def test_modes() -> None:
    """strict, warn and off (any case); anything else is a one-line error."""
    assert resolve_mode("STRICT") == "strict" and resolve_mode("off") == "off"
    with pytest.raises(ValueError, match="must be strict, warn or off"):
        resolve_mode("loud")


def test_banner_fits_100_columns_and_escapes() -> None:
    """Long findings wrap under 100 columns; control characters are escaped."""
    result = GuardResult(
        settings={"model_type": "SD15", "network_dim": 16, "learning_rate": 1e-4},
        failed=[{"id": 1, "run_name": "bad\x1b]0;x\x07run", "run_date": None,
                 "overall_verdict": "failure", "quality_score": None,
                 "key_findings": "word " * 60, "issues_found": ["a\u202eb"]}] * 7,
    )  # fmt: skip
    text = banner(result, "warn")
    assert all(len(line) <= 100 for line in text.splitlines())
    assert "\x1b" not in text and "\u202e" not in text and "bad\\x1b]0;x\\x07run" in text
    assert "... and 2 more" in text


# -- the transformers callback -----------------------------------------------------------------


def tiny_trainer(out: Path, url: str, guard: str | None = None) -> Any:
    peft = pytest.importorskip("peft")
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    from lora_tracker.integrations.transformers import LoraTrackerCallback

    from .test_hooks_hf import TinyTextDataset

    torch.manual_seed(0)
    config = transformers.GPT2Config(vocab_size=64, n_positions=32, n_embd=32, n_layer=1, n_head=2)
    model = peft.get_peft_model(
        transformers.GPT2LMHeadModel(config),
        peft.LoraConfig(r=4, lora_alpha=8, target_modules=["c_attn"], task_type="CAUSAL_LM"),
    )
    args = transformers.TrainingArguments(
        output_dir=str(out), num_train_epochs=1, per_device_train_batch_size=4,
        save_strategy="epoch", logging_steps=1, report_to=[], use_cpu=True,
        learning_rate=1e-3, seed=7, disable_tqdm=True,
    )  # fmt: skip
    return transformers.Trainer(
        model=model, args=args, train_dataset=TinyTextDataset(8, 16, 64),
        callbacks=[LoraTrackerCallback(database_url=url, guard=guard)],
    )  # fmt: skip


def test_transformers_callback_banner_and_strict(
    tmp_path: Path, db_url: str, guard_log: pytest.LogCaptureFixture
) -> None:
    """The callback's run repeats a failed one: banner and training in warn mode; in strict
    mode SystemExit 3 out of trainer.train() before the first step, the run cancelled."""
    tiny_trainer(tmp_path / "first", db_url).train()
    assert "ALREADY FAILED" not in guard_log.text
    [first] = rows(db_url, "SELECT run_name, network_dim, learning_rate FROM training_runs")
    assert (first["network_dim"], first["learning_rate"]) == (4, 1e-3)
    mark_failed(db_url, first["run_name"])

    tiny_trainer(tmp_path / "second", db_url).train()
    assert "THIS CONFIGURATION ALREADY FAILED" in guard_log.text
    assert list((tmp_path / "second").glob("checkpoint-*"))

    trainer = tiny_trainer(tmp_path / "third", db_url, guard="strict")
    with pytest.raises(SystemExit) as stopped:
        trainer.train()
    assert stopped.value.code == 3
    assert trainer.state.global_step == 0 and not list((tmp_path / "third").glob("checkpoint-*"))
    cancelled = rows(db_url, "SELECT * FROM training_runs WHERE status = 'cancelled'")
    assert len(cancelled) == 1 and first["run_name"] in cancelled[0]["failure_reason"]


# -- the watcher -------------------------------------------------------------------------------


def test_watcher_banner_at_a_new_runs_first_checkpoint(
    tmp_path: Path,
    db_url: str,
    start_watcher: Callable[..., Watcher],
    guard_log: pytest.LogCaptureFixture,
) -> None:
    """`watch` logs the banner when a new run's first checkpoint repeats a failed run, and
    nothing for a run with other settings."""
    out = tmp_path / "out"
    out.mkdir()
    start_watcher(out, db_url)
    now = time.time()

    def write(name: str, session: int, dim: int) -> None:
        meta = sd15_metadata(name, session, now, dim=dim) | {"ss_epoch": "1"}
        path = out / f"{name}-000001.safetensors"
        path.write_bytes(checkpoint_bytes(meta, dim, seed=session))

    write("first", 1, 32)
    wait_for(lambda: len(rows(db_url, "SELECT id FROM training_runs")) == 1)
    [first] = rows(db_url, "SELECT run_name FROM training_runs")
    mark_failed(db_url, first["run_name"])
    assert "ALREADY FAILED" not in guard_log.text

    write("second", 2, 32)
    wait_for(lambda: "ALREADY FAILED" in guard_log.text)
    assert first["run_name"] in guard_log.text and "which cannot stop a training" in guard_log.text
    guard_log.clear()

    write("third", 3, 16)
    wait_for(lambda: len(rows(db_url, "SELECT id FROM training_runs")) == 3)
    time.sleep(0.5)
    assert "ALREADY FAILED" not in guard_log.text
    assert os.path.exists(out / "third-000001.safetensors")


def test_watch_once_banner_for_a_new_run_that_repeats_a_failure(
    tmp_path: Path, db_url: str, guard_log: pytest.LogCaptureFixture
) -> None:
    """`watch --once` (a backfill) checks the runs it records for the first time; runs it
    had recorded before stay quiet."""

    now = time.time()

    def folder(name: str, session: int, dim: int) -> Path:
        out = tmp_path / name
        out.mkdir()
        meta = sd15_metadata(name, session, now, dim=dim) | {"ss_epoch": "1"}
        (out / f"{name}-000001.safetensors").write_bytes(checkpoint_bytes(meta, dim, seed=session))
        return out

    first = folder("first", 1, 32)
    backfilled(first, db_url)
    [recorded] = rows(db_url, "SELECT run_name FROM training_runs")
    mark_failed(db_url, recorded["run_name"])
    backfilled(first, db_url)  # nothing new: no banner
    assert "ALREADY FAILED" not in guard_log.text
    backfilled(folder("second", 2, 32), db_url)
    assert "ALREADY FAILED" in guard_log.text and recorded["run_name"] in guard_log.text
    guard_log.clear()
    backfilled(folder("third", 3, 16), db_url)
    assert "ALREADY FAILED" not in guard_log.text


def test_new_data_folder_is_silent_and_a_stopped_server_is_one_line(tmp_path: Path) -> None:
    """The embedded default: a data folder with nothing recorded says nothing; a server that
    exists but is not running is a skip (starting it would take seconds)."""
    from lora_tracker.guard import start_check
    from lora_tracker.settings import Target

    home = tmp_path / "home"
    target = Target(None, "embedded", home)
    settings = {"network_dim": 16, "learning_rate": 1e-4}
    result = start_check(target, lambda: settings).result()
    assert (result.skipped, result.failed) == (None, [])
    (home / "pgdata").mkdir(parents=True)
    (home / "pgdata" / "PG_VERSION").write_text("18\n")
    result = start_check(target, lambda: settings).result()
    assert result.skipped == "the embedded database is not running yet"
    assert not (home / "pgdata" / "postmaster.pid").exists()


@pytest.mark.parametrize(
    ("value", "expected"), [("2.5", 2.5), ("", 0.8), ("soon", 0.8), ("-1", 0.8), ("inf", 0.8)]
)
def test_time_limit_setting(value: str, expected: float, monkeypatch: pytest.MonkeyPatch) -> None:
    """LORA_TRACKER_GUARD_TIMEOUT gives a far-away database longer; a bad value is the
    default, never an error in a training."""
    from lora_tracker.guard import time_limit

    monkeypatch.setenv("LORA_TRACKER_GUARD_TIMEOUT", value)
    assert time_limit() == expected


def test_backfill_of_several_batches_says_one_banner_naming_its_new_runs(
    tmp_path: Path,
    db_url: str,
    guard_log: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A backfill larger than one transaction: every file lands once, in its run and epoch;
    its seven new runs, all with a failed run's settings, get one banner naming them in the
    order they were recorded (five, and how many more)."""
    from lora_tracker.capture import watcher

    monkeypatch.setattr(watcher, "BACKFILL_BATCH", 7)
    old = tmp_path / "old"
    old.mkdir()
    meta = sd15_metadata("old", 1, time.time() - 86400, dim=32) | {"ss_epoch": "1"}
    (old / "old-000001.safetensors").write_bytes(checkpoint_bytes(meta, 32, seed=1))
    backfilled(old, db_url)
    [failed] = rows(db_url, "SELECT run_name FROM training_runs")
    mark_failed(db_url, failed["run_name"])
    guard_log.clear()

    out = tmp_path / "out"
    out.mkdir()
    for run in range(7):  # 7 trainings of 4 epochs: 28 files in 4 transactions
        started = time.time() - 3600 + run * 60
        for epoch in range(1, 5):
            meta = sd15_metadata(f"r{run}", 100 + run, started, dim=32)
            meta |= {"ss_epoch": str(epoch), "ss_num_epochs": "4", "ss_steps": str(epoch * 10)}
            path = out / (f"r{run}-{epoch:06d}.safetensors" if epoch < 4 else f"r{run}.safetensors")
            path.write_bytes(checkpoint_bytes(meta, 32, seed=run * 10 + epoch))
            stamp = started + epoch
            os.utime(path, (stamp, stamp))
    stats = backfilled(out, db_url)
    assert (stats.checkpoints, stats.recorded, stats.skipped) == (28, 28, 0)
    epochs = rows(
        db_url,
        "SELECT tr.output_name, array_agg(er.epoch_number ORDER BY er.epoch_number) AS e, "
        "count(c.id) AS files FROM training_runs tr JOIN epoch_results er "
        "ON er.training_run_id = tr.id JOIN checkpoints c ON c.epoch_result_id = er.id "
        "WHERE tr.output_dir = %s GROUP BY tr.output_name ORDER BY tr.output_name",
        (str(out),),
    )
    assert [(r["output_name"], r["e"], r["files"]) for r in epochs] == [
        (f"r{run}", [1, 2, 3, 4], 4) for run in range(7)
    ]
    banners = [
        line for line in guard_log.text.splitlines() if "THIS CONFIGURATION ALREADY FAILED" in line
    ]
    assert len(banners) == 1  # one answer for the seven new runs with these settings
    seen = " ".join(guard_log.text.split())  # (the banner wraps at 98 columns)
    named = re.search(r"Seen by lora-tracker watch in runs (.*?), which", seen)
    assert named is not None
    assert re.sub(r"_[0-9-]+", "", named.group(1)) == "r0, r1, r2, r3, r4 and 2 more"


def test_watch_log_lines_keep_a_banner_whole() -> None:
    """`watch` prints its log lines with the time; a block (the banner starts with a newline
    so no prefix cuts into it) comes without a time left alone on a line above it."""
    from lora_tracker.cli.capture_commands import _EscapingFormatter

    formatter = _EscapingFormatter("%(asctime)s %(message)s", "%H:%M:%S")
    line = logging.LogRecord(
        "lora_tracker", logging.INFO, __file__, 1, "recorded %s", ("a\x1b",), None
    )
    block = logging.LogRecord(
        "lora_tracker", logging.WARNING, __file__, 1, "%s", ("\n===\n !!!",), None
    )
    assert re.fullmatch(r"\d\d:\d\d:\d\d recorded a\\x1b", formatter.format(line))
    assert formatter.format(block) == "\n===\n !!!"


def test_backfill_asks_on_its_own_connection_and_a_slow_answer_is_a_skip(
    tmp_path: Path,
    db_url: str,
    guard_log: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A backfill asks about its new runs on the connection it wrote them with (no thread
    and connection each); a question that takes too long there is one skip line a run,
    and the connection still works after it."""
    from lora_tracker import guard

    def no_thread(*_: object) -> None:
        raise AssertionError("the backfill opened a connection of its own for a check")

    def backfill(name: str, session: int) -> None:
        out = tmp_path / name
        out.mkdir()
        meta = sd15_metadata(name, session, time.time(), dim=32) | {"ss_epoch": "1"}
        (out / f"{name}-000001.safetensors").write_bytes(checkpoint_bytes(meta, 32, seed=session))
        backfilled(out, db_url)

    backfill("first", 1)
    [first] = rows(db_url, "SELECT run_name FROM training_runs")
    mark_failed(db_url, first["run_name"])
    monkeypatch.setattr(guard, "start_recorded_check", no_thread)
    backfill("again", 2)
    [again] = rows(db_url, "SELECT run_name FROM training_runs WHERE run_name <> %s",
                   (first["run_name"],))  # fmt: skip
    assert "THIS CONFIGURATION ALREADY FAILED" in guard_log.text
    assert f"Seen by lora-tracker watch in run {again['run_name']}" in guard_log.text

    # the same question while another session holds the table: skipped at the time-out
    monkeypatch.setenv("LORA_TRACKER_GUARD_TIMEOUT", "0.8")  # the default (tests allow more)
    with psycopg.connect(db_url) as holder, psycopg.connect(
        db_url, autocommit=True, row_factory=psycopg.rows.dict_row
    ) as conn:  # fmt: skip
        holder.execute("LOCK training_runs IN ACCESS EXCLUSIVE MODE")
        started = time.monotonic()
        names = [first["run_name"], again["run_name"]]
        results = guard.check_recorded_runs(conn, names, db_url)
        elapsed = time.monotonic() - started
        holder.rollback()
        too_slow = "the database was too slow to answer"
        assert [(r.run_name, r.skipped) for r in results] == [(n, too_slow) for n in names]
        assert elapsed < 1.6
        assert conn.execute("SELECT count(*) AS n FROM training_runs").fetchone() == {"n": 2}
        # the question's transaction is read only
        wrote = guard._answer(conn, lambda c: c.execute("DELETE FROM training_runs"), db_url)
        assert isinstance(wrote, GuardResult) and "read-only transaction" in str(wrote.skipped)
        assert conn.execute("SELECT count(*) AS n FROM training_runs").fetchone() == {"n": 2}


def test_a_failure_among_many_runs_alike_is_never_cut_off(
    db_url: str,
) -> None:
    """More than 20 runs with the same settings (tried's limit): the old, low-scored failure
    among them still makes `tried` exit 3 and a backfill's new run show the banner."""
    from click.testing import CliRunner

    from lora_tracker.cli import cli

    failed_run(db_url, "old_failure", network_dim=8, run_date="2020-01-01")  # quality 3
    with psycopg.connect(db_url) as conn:
        for n in range(24):  # newer, better scored runs with the same settings
            conn.execute(
                "INSERT INTO training_runs (run_name, model_type, network_dim, network_alpha, "
                "resolution, learning_rate, overall_verdict, quality_score) "
                "VALUES (%s, 'SD15', 8, 8, '512x512', 1e-4, 'partial', 7)",
                (f"alike_{n}",),
            )
    asked = CliRunner().invoke(cli, [
        "--database-url", db_url, "tried", "--model-type", "SD15", "--network-dim", "8",
        "--network-alpha", "8", "--resolution", "512x512", "--learning-rate", "1e-4",
    ])  # fmt: skip
    assert asked.exit_code == 3, asked.output
    assert "old_failure" in asked.output
