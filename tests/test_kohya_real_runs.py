"""What real kohya runs showed (issue 10), through the launcher and the watcher, with the
stand-in calling the hooks as sd-scripts main does: per-step sample_images with epoch None,
update_metadata before the dataset keys, --save_last_n_steps removals, failures while
loading, reused output folders, Ctrl-C, the embedded server's set-up output."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from lora_tracker import embedded
from lora_tracker.capture.apply import apply_event
from lora_tracker.capture.events import RunStarted
from lora_tracker.capture.watcher import Watcher
from lora_tracker.cli import cli
from lora_tracker.db import Database
from lora_tracker.integrations.kohya import KohyaTracker

from .conftest import rows, wait_for
from .kohya_sim import sample_prompts_file
from .test_hooks_kohya import FAKE, LAUNCHER, kohya_args, launch

PNG = bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
    "1f15c4890000000d49444154789c6360000002000154a24f5d0000000049454e44ae426082"
)


def dataset(tmp_path: Path, images: int = 4, repeats: int = 5) -> Path:
    folder = tmp_path / "img"
    folder.mkdir(exist_ok=True)
    for i in range(images):
        (folder / f"{i}.png").write_bytes(PNG)
    config = tmp_path / "dataset.toml"
    config.write_text(
        f'[[datasets]]\n[[datasets.subsets]]\nimage_dir = "{folder}"\nnum_repeats = {repeats}\n'
    )
    return config


def plain_args(out: Path, *extra: str, epochs: int = 2, name: str = "pixelbaby") -> list[str]:
    """A kohya command line; one that samples names a prompts file of two prompts (kohya
    fails at its first sampling without one)."""
    samples = any(a.startswith("--sample_") for a in extra)
    prompts = ["--sample_prompts", sample_prompts_file(out.parent)] if samples else []
    return [
        "--output_dir", str(out), "--output_name", name, "--max_train_epochs", str(epochs),
        "--network_dim", "16", "--network_alpha", "8", *prompts, *extra,
    ]  # fmt: skip


def samples_of(url: str, run_id: int) -> dict[int, list[str]]:
    found = rows(
        url,
        "SELECT epoch_number, sample_images FROM epoch_results WHERE training_run_id = %s "
        "ORDER BY 1",
        (run_id,),
    )
    return {r["epoch_number"]: [Path(p).name for p in r["sample_images"]] for r in found}


def runs(url: str) -> list[dict[str, Any]]:
    return rows(url, "SELECT * FROM training_runs ORDER BY training_started_at, id")


def sample_stamps(folder: Path) -> set[str]:
    return {p.stem.split("_")[-1] for p in (folder / "sample").iterdir()}


# -- 1 and 6: a reused output folder, under the hook ---------------------------------------


def test_reused_output_folder_under_the_hook(tmp_path: Path, db_url: str) -> None:
    """A second training into the same folder and name: each run has its own samples and
    epochs only, and the first run's overwritten final file is no longer on disk."""
    out = tmp_path / "out"
    first = launch(
        "train_network.py", db_url,
        *kohya_args(out, "--save_last_n_epochs", "5", epochs=3),
    )  # fmt: skip
    assert first.returncode == 0, first.stderr
    time.sleep(1.1)  # kohya's sample names carry whole seconds
    second = launch("train_network.py", db_url, *kohya_args(out, epochs=1))
    assert second.returncode == 0, second.stderr
    a, b = runs(db_url)
    assert (a["status"], b["status"]) == ("completed", "completed")
    a_samples, b_samples = samples_of(db_url, a["id"]), samples_of(db_url, b["id"])
    assert sorted(a_samples) == [1, 2, 3] and sorted(b_samples) == [1]
    assert all(len(names) == 2 for names in [*a_samples.values(), *b_samples.values()])
    a_names = {n for names in a_samples.values() for n in names}
    b_names = {n for names in b_samples.values() for n in names}
    assert not a_names & b_names
    assert len(a_names | b_names) == len(list((out / "sample").iterdir()))
    final = rows(
        db_url,
        "SELECT training_run_id, checkpoint_on_disk, checkpoint_hash FROM epoch_results "
        "WHERE checkpoint_path = %s ORDER BY training_run_id",
        (str(out / "pixelbaby.safetensors"),),
    )
    assert [(r["training_run_id"], r["checkpoint_on_disk"]) for r in final] == [
        (a["id"], False),
        (b["id"], True),
    ]
    owner = rows(
        db_url,
        "SELECT training_run_id, content_hash FROM checkpoints WHERE path = %s",
        (str(out / "pixelbaby.safetensors"),),
    )
    assert owner == [{"training_run_id": b["id"], "content_hash": final[1]["checkpoint_hash"]}]


# -- 2, 3 and 10: per-step sampling, step saves and removals ---------------------------------


def test_per_step_sampling_and_step_checkpoints(tmp_path: Path, db_url: str) -> None:
    """sample_images(..., None, global_step) after each step: no traceback, step samples
    land in the epoch in progress; --save_last_n_steps removals are recorded by the hook
    alone; step files carry the 1-based epoch in progress."""
    out = tmp_path / "out"
    done = launch(
        "train_network.py", db_url,
        *plain_args(
            out, "--sample_every_n_steps", "2", "--save_every_n_steps", "2",
            "--save_last_n_steps", "2", "--steps_per_epoch", "3",
        ),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr and "lora-tracker" not in done.stderr
    (run,) = runs(db_url)
    assert samples_of(db_url, run["id"]) == {
        1: [p.name for p in sorted((out / "sample").glob("pixelbaby_000002_*"))],
        2: [
            p.name
            for p in sorted(
                [*(out / "sample").glob("pixelbaby_000004_*"),
                 *(out / "sample").glob("pixelbaby_000006_*")]
            )
        ],
    }  # fmt: skip
    steps = rows(
        db_url,
        "SELECT global_step, epoch_number, on_disk FROM checkpoints WHERE kind = 'step' "
        "ORDER BY global_step",
    )
    assert steps == [
        {"global_step": 2, "epoch_number": 1, "on_disk": False},
        {"global_step": 4, "epoch_number": 2, "on_disk": True},
        {"global_step": 6, "epoch_number": 2, "on_disk": True},
    ]
    assert not (out / "pixelbaby-step00000002.safetensors").exists()
    assert run["total_steps"] == 6 and run["status"] == "completed"


def test_a_failing_hook_is_reported_once_then_counted(caplog: pytest.LogCaptureFixture) -> None:
    """Anything unexpected in a hook: one traceback for its kind, then only a count."""
    tracker = KohyaTracker()

    def boom() -> None:
        raise ValueError("unexpected")

    with caplog.at_level(logging.WARNING, logger="lora_tracker"):
        for _ in range(50):
            tracker.safely("sample_images", boom)
        tracker.safely("epoch_logging", boom)
    tracebacks = [r for r in caplog.records if r.exc_info]
    assert [r.getMessage() for r in tracebacks] == [
        "lora-tracker: sample_images failed (training goes on; said once)",
        "lora-tracker: epoch_logging failed (training goes on; said once)",
    ]
    assert tracker._failures == {"sample_images": 50, "epoch_logging": 1}


# -- 4: the image count, hook and watcher alike; what a person typed ----------------------


def test_image_count_without_repeats_hook_and_watcher(
    tmp_path: Path, db_url: str, start_watcher: Callable[..., Watcher]
) -> None:
    """4 images x 5 repeats: num_images 4 from the hook alone, and the same with a watcher
    beside it; max_train_steps is kohya's, not the command line's default."""
    config = dataset(tmp_path)
    alone = launch(
        "train_network.py", db_url, *plain_args(tmp_path / "a", "--dataset_config", str(config))
    )
    assert alone.returncode == 0, alone.stderr
    both_out = tmp_path / "b"
    both_out.mkdir()
    watcher = start_watcher(both_out, db_url)
    both = launch(
        "train_network.py", db_url,
        *plain_args(both_out, "--dataset_config", str(config), name="other"),
    )  # fmt: skip
    assert both.returncode == 0, both.stderr
    wait_for(lambda: len(rows(db_url, "SELECT 1 FROM checkpoints WHERE kind = 'final'")) == 2)
    watcher.stop()
    found = rows(db_url, "SELECT output_name, num_images FROM training_runs ORDER BY 1")
    assert found == [
        {"output_name": "other", "num_images": 4},
        {"output_name": "pixelbaby", "num_images": 4},
    ]


def test_later_events_complete_captured_values_not_typed_ones(db_url: str) -> None:
    """A value capture wrote is corrected by a later event that knows better; a value a
    person typed stays."""
    with Database(db_url) as db:
        conn = db.connect()

        def started(**fields: object) -> None:
            event = RunStarted(run_key="k1", run_name="r1", fields=fields, captured=True)
            apply_event(conn, event)

        started(num_images=20, max_train_steps=1600, optimizer="AdamW")
        started(num_images=4, max_train_steps=30, optimizer="AdamW8bit")
        row = conn.execute("SELECT * FROM training_runs WHERE run_name = 'r1'").fetchone()
        assert row is not None
        assert (row["num_images"], row["max_train_steps"], row["optimizer"]) == (
            4, 30, "AdamW8bit",
        )  # fmt: skip
        conn.execute("UPDATE training_runs SET num_images = 7 WHERE run_name = 'r1'")
        started(num_images=5, max_train_steps=31)
        row = conn.execute("SELECT * FROM training_runs WHERE run_name = 'r1'").fetchone()
        assert row is not None
        assert (row["num_images"], row["max_train_steps"]) == (7, 31)


def test_run_started_at_launch_takes_the_session_key(db_url: str) -> None:
    """The run the hook starts at launch takes kohya's session key; if that session's files
    were recorded first (a watcher, a replayed spool), that run is the run and the empty
    launch-time one goes."""
    with Database(db_url) as db:
        conn = db.connect()
        apply_event(conn, RunStarted(run_key="hook:a", fields={"output_name": "one"}))
        apply_event(conn, RunStarted(run_key="session:1", previous_key="hook:a"))
        apply_event(conn, RunStarted(run_key="hook:b", fields={"output_name": "two"}))
        apply_event(conn, RunStarted(run_key="session:2", fields={"output_name": "two"}))
        apply_event(conn, RunStarted(run_key="session:2", previous_key="hook:b"))
        found = conn.execute(
            "SELECT capture_key, output_name FROM training_runs ORDER BY 1"
        ).fetchall()
    assert found == [
        {"capture_key": "session:1", "output_name": "one"},
        {"capture_key": "session:2", "output_name": "two"},
    ]


# -- 5 and 11: failures before the first step, and the traceback -----------------------------


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (
            ["--pretrained_model_name_or_path", "/no/such/model.safetensors"],
            "OSError: /no/such/model.safetensors is not a local folder",
        ),
        (["--fail_at_load"], "RuntimeError: CUDA out of memory. Tried to allocate 3.00 GiB"),
        (["broken-image"], "OSError: cannot identify image file"),
    ],
)
def test_failure_before_the_first_step(
    tmp_path: Path, db_url: str, extra: list[str], message: str
) -> None:
    """A wrong model path, an out-of-memory while loading, a broken image while caching
    latents: kohya exits 1 before update_metadata, and the run is failed with the error
    and its configuration. kohya's traceback is shown without the launcher's frames."""
    config = dataset(tmp_path)
    if extra == ["broken-image"]:
        (tmp_path / "img" / "2.png").write_bytes(b"not an image")
        extra = []
    done = launch(
        "train_network.py", db_url,
        *plain_args(tmp_path / "out", "--dataset_config", str(config), "--seed", "42", *extra),
    )  # fmt: skip
    assert done.returncode == 1
    assert message in done.stderr
    trace = done.stderr[done.stderr.index("Traceback") :]
    assert f'File "{FAKE / "train_network.py"}"' in trace
    assert "lora_tracker_launch.py" not in trace and "integrations/kohya.py" not in trace
    assert "integrations/kohya_patching.py" not in trace  # the wrapper around train()
    (run,) = runs(db_url)
    assert run["status"] == "failed" and message in run["failure_reason"]
    assert (run["network_dim"], run["seed"]) == (16, 42)
    assert run["config"]["args"]["dataset_config"] == str(config)
    assert run["config"]["dataset_config"]["datasets"][0]["subsets"][0]["num_repeats"] == 5
    assert run["capture_key"].startswith("hook:")


def test_failure_after_update_metadata_has_the_session_key(tmp_path: Path, db_url: str) -> None:
    """Once kohya's metadata is known, the run started at launch carries its session."""
    done = launch("train_network.py", db_url, *plain_args(tmp_path, "--fail_at_step", "2"))
    assert done.returncode == 1
    (run,) = runs(db_url)
    assert run["status"] == "failed" and run["capture_key"] == f"session:{run['session_id']}"
    assert run["max_train_steps"] == 6  # kohya's, from its metadata


# -- 7: the step reached ----------------------------------------------------------------------


def test_cancelled_run_records_the_step_reached(tmp_path: Path, db_url: str) -> None:
    """Ctrl-C at step 5 of 9 (last checkpoint at step 3): cancelled, total_steps 5."""
    done = launch(
        "train_network.py", db_url,
        *plain_args(tmp_path, "--save_every_n_epochs", "1", "--interrupt_at_step", "5", epochs=3),
    )  # fmt: skip
    assert done.returncode != 0
    assert "KeyboardInterrupt" in done.stderr
    (run,) = runs(db_url)
    assert (run["status"], run["total_steps"]) == ("cancelled", 5)
    assert rows(db_url, "SELECT global_step FROM checkpoints") == [{"global_step": 3}]


# -- 8 and 9: the embedded server -------------------------------------------------------------


@pytest.fixture
def fresh_home(tmp_path: Path) -> Iterator[Path]:
    home = tmp_path / "fresh-home"
    yield home
    if embedded.pgdata_path(home).exists():
        embedded.stop(home)


def test_embedded_set_up_stays_out_of_the_trainer_console(tmp_path: Path, fresh_home: Path) -> None:
    """kohya's root logger is at INFO: creating the embedded server says one line, not
    initdb's and pg_ctl's output."""
    env = os.environ.copy()
    env.pop("LORA_TRACKER_DATABASE_URL", None)
    env["LORA_TRACKER_HOME"] = str(fresh_home)
    env["LORA_TRACKER_FLUSH_TIMEOUT"] = "120"  # a loaded machine: no "database is slow" line
    done = subprocess.run(
        [sys.executable, str(LAUNCHER), "train_network.py", *plain_args(tmp_path / "out")],
        cwd=FAKE, env=env, capture_output=True, text=True, timeout=180,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    ours = [line for line in done.stderr.splitlines() if line.strip()]
    assert ours == [f"lora-tracker: creating the embedded PostgreSQL server in {fresh_home}/pgdata"]
    assert "initdb" not in done.stdout + done.stderr
    with Database() as db:
        assert db.target.embedded
    os.environ["LORA_TRACKER_HOME"] = str(fresh_home)  # restored by the autouse fixture
    with Database() as db:
        found = db.connect().execute("SELECT status FROM training_runs").fetchall()
    assert found == [{"status": "completed"}]


def test_db_status_on_a_fresh_embedded_folder(
    fresh_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The embedded schema is applied on first use: status says so, not "run init"."""
    monkeypatch.setenv("LORA_TRACKER_HOME", str(fresh_home))
    done = CliRunner().invoke(cli, ["db", "status"])
    assert done.exit_code == 0, done.output
    assert "applied on first use (or now: `lora-tracker init`)" in done.output
    assert "run `lora-tracker init`" not in done.output
    pending = [line for line in done.output.splitlines() if "pending" in line]
    assert len(pending) == 1 and len(pending[0]) <= 100


# -- the watcher on a reused folder ------------------------------------------------------------


def two_trainings(out: Path) -> None:
    """kohya itself (no hook) twice into one folder: 3 epochs, then 1 epoch."""
    for epochs in (3, 1):
        done = launch(
            "train_network.py", "unused",
            *plain_args(out, "--save_every_n_epochs", "1", "--sample_every_n_epochs", "1",
                        "--sample_at_first", epochs=epochs),
            hooked=False,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        time.sleep(1.1)


def check_two_trainings(url: str, out: Path) -> None:
    a, b = runs(url)
    a_samples, b_samples = samples_of(url, a["id"]), samples_of(url, b["id"])
    assert sorted(a_samples) == [0, 1, 2, 3] and sorted(b_samples) == [0, 1]
    a_names = {n for names in a_samples.values() for n in names}
    b_names = {n for names in b_samples.values() for n in names}
    assert not a_names & b_names and len(a_names) == 8 and len(b_names) == 4
    assert {n.split("_")[-1][:-4] for n in b_names}.isdisjoint(
        {n.split("_")[-1][:-4] for n in a_names}
    )
    final = str(out / "pixelbaby.safetensors")
    by_run = {
        r["training_run_id"]: r["checkpoint_on_disk"]
        for r in rows(
            url,
            "SELECT training_run_id, checkpoint_on_disk FROM epoch_results "
            "WHERE checkpoint_path = %s",
            (final,),
        )
    }
    assert by_run.get(b["id"]) is True and by_run.get(a["id"]) in (False, None)
    owner = rows(url, "SELECT training_run_id FROM checkpoints WHERE path = %s", (final,))
    assert owner == [{"training_run_id": b["id"]}]
    # the first run's epochs 1 and 2 files are still there and still its own
    kept = rows(
        url,
        "SELECT epoch_number FROM epoch_results WHERE training_run_id = %s "
        "AND checkpoint_on_disk ORDER BY 1",
        (a["id"],),
    )
    assert [r["epoch_number"] for r in kept] == [1, 2]


def test_watcher_scan_of_a_reused_folder(
    tmp_path: Path, db_url: str, start_watcher: Callable[..., Watcher]
) -> None:
    """Two trainings already in the folder when the watcher starts: samples go to the run
    whose time they were written in; the final file to the run that wrote it last."""
    out = tmp_path / "out"
    two_trainings(out)
    start_watcher(out, db_url).stop()
    check_two_trainings(db_url, out)


def test_watcher_live_on_a_reused_folder(
    tmp_path: Path, db_url: str, start_watcher: Callable[..., Watcher]
) -> None:
    """The watcher running while both trainings write: the same result, and the first
    run's final row marked replaced when the second overwrites the file."""
    out = tmp_path / "out"
    out.mkdir()
    watcher = start_watcher(out, db_url)
    two_trainings(out)
    wait_for(lambda: len(rows(db_url, "SELECT 1 FROM training_runs")) == 2)
    wait_for(
        lambda: (
            len(rows(db_url, "SELECT 1 FROM epoch_results WHERE cardinality(sample_images) > 0"))
            == 6
        )
    )
    watcher.stop()
    check_two_trainings(db_url, out)


def test_watcher_trainer_in_another_time_zone(
    tmp_path: Path, db_url: str, start_watcher: Callable[..., Watcher]
) -> None:
    """kohya stamps samples in its own local time: a trainer in another time zone (a
    container) than the watcher still gets every sample of a folder only it wrote."""
    out = tmp_path / "out"
    zone = "America/New_York" if time.strftime("%z") != "-0500" else "Asia/Tokyo"
    done = launch(
        "train_network.py", "unused",
        *plain_args(out, "--save_every_n_epochs", "1", "--sample_every_n_epochs", "1",
                    epochs=3),
        env={"TZ": zone}, hooked=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    start_watcher(out, db_url).stop()
    (run,) = runs(db_url)
    assert {e: len(names) for e, names in samples_of(db_url, run["id"]).items()} == {
        1: 2, 2: 2, 3: 2,
    }  # fmt: skip


def test_overwritten_file_event_replayed_late(tmp_path: Path, db_url: str) -> None:
    """The older run's event for a file another run has since overwritten, applied last (a
    spool replayed late): the file stays the newer run's; the older row is not on disk."""
    from lora_tracker.capture.events import observe_checkpoint

    from .kohya_sim import KohyaRun

    path = KohyaRun(tmp_path, epochs=1, save_last_n=None, session=111).save_epoch(1)
    older = observe_checkpoint(path)
    path = KohyaRun(tmp_path, epochs=1, save_last_n=None, session=222, dim=16).save_epoch(1)
    os.utime(path, (time.time() + 5, time.time() + 5))
    newer = observe_checkpoint(path)
    assert older.content_hash != newer.content_hash
    with Database(db_url) as db:
        conn = db.connect()
        apply_event(conn, newer)
        apply_event(conn, older)
        owner = conn.execute(
            "SELECT tr.session_id, c.content_hash FROM checkpoints c "
            "JOIN training_runs tr ON tr.id = c.training_run_id"
        ).fetchall()
        on_disk = conn.execute(
            "SELECT tr.session_id, er.checkpoint_on_disk FROM epoch_results er "
            "JOIN training_runs tr ON tr.id = er.training_run_id ORDER BY 1"
        ).fetchall()
    assert owner == [{"session_id": "222", "content_hash": newer.content_hash}]
    assert on_disk == [
        {"session_id": "111", "checkpoint_on_disk": False},
        {"session_id": "222", "checkpoint_on_disk": True},
    ]


def test_sampling_without_a_prompts_file_fails_as_kohya_does(tmp_path: Path, db_url: str) -> None:
    """--sample_every_n_epochs without --sample_prompts: sd-scripts 48d368fa stops at its
    first sampling (os.path.isfile(None) raises TypeError); the hook records the run failed
    with that reason, the epoch it saved before kept."""
    out = tmp_path / "out"
    done = launch(
        "train_network.py", db_url,
        "--output_dir", str(out), "--output_name", "nosample", "--max_train_epochs", "2",
        "--save_every_n_epochs", "1", "--sample_every_n_epochs", "1",
    )  # fmt: skip
    assert done.returncode != 0 and "TypeError" in done.stderr, done.stderr
    [run] = rows(db_url, "SELECT id, status, failure_reason FROM training_runs")
    assert run["status"] == "failed" and "TypeError" in (run["failure_reason"] or ""), run
    epochs = rows(db_url, "SELECT epoch_number FROM epoch_results WHERE training_run_id = %s",
                  (run["id"],))  # fmt: skip
    assert [e["epoch_number"] for e in epochs] == [1]  # saved, then the sampling failed
