"""Automatic capture on real files and a real database: watcher, record, spool."""

from __future__ import annotations

import dataclasses
import io
import json
import logging
import os
import struct
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from lora_tracker.capture.delivery import EventDelivery
from lora_tracker.capture.events import event_from_json
from lora_tracker.capture.watcher import BackfillStats, Watcher
from lora_tracker.cli import cli

from .conftest import backfilled, proxied, proxy_target, rows, wait_for
from .kohya_sim import PNG, KohyaRun, checkpoint_bytes, sd15_metadata
from .netproxy import Proxy


def test_live_kohya_run(tmp_path: Path, db_url: str, start_watcher: Callable[..., Watcher]) -> None:
    """A kohya run watched live: one run, the right configuration, one row per epoch."""
    out = tmp_path / "output"
    out.mkdir()
    start_watcher(out, db_url)
    sim = KohyaRun(out, epochs=5, save_last_n=2, chunks=5, chunk_delay=0.05)
    writer = threading.Thread(target=sim.run)
    writer.start()
    writer.join()

    def final_recorded() -> bool:
        found = rows(db_url, "SELECT count(*) AS n FROM checkpoints WHERE kind = 'final'")
        removed = rows(db_url, "SELECT count(*) AS n FROM checkpoints WHERE NOT on_disk")
        samples = rows(
            db_url, "SELECT count(*) AS n FROM epoch_results WHERE cardinality(sample_images) = 2"
        )
        return bool(found[0]["n"] == 1 and removed[0]["n"] == 2 and samples[0]["n"] == 5)

    wait_for(final_recorded)
    runs = rows(db_url, "SELECT * FROM training_runs")
    assert len(runs) == 1
    run = runs[0]
    assert run["run_name"] == "pixelbaby_2024-11-09"
    assert (run["model_type"], run["network_dim"], run["resolution"], run["num_images"]) == (
        "SD15", 32, "512x512", 203,
    )  # fmt: skip
    assert run["network_alpha"] == 16
    assert run["optimizer"] == "AdamW8bit(weight_decay=0.1)"
    assert run["session_id"] == str(sim.session)
    assert run["status"] == "completed"
    assert run["checkpoint_metadata"]["ss_epoch"] == "5"
    assert run["total_steps"] == 500

    epochs = rows(db_url, "SELECT * FROM epoch_results ORDER BY epoch_number")
    assert [e["epoch_number"] for e in epochs] == [1, 2, 3, 4, 5]
    assert [e["checkpoint_on_disk"] for e in epochs] == [False, False, True, True, True]
    for epoch in epochs:
        path = sim.epoch_path(epoch["epoch_number"])
        assert epoch["checkpoint_path"] == str(path)
        assert epoch["checkpoint_size_bytes"] == len(
            checkpoint_bytes(
                sim.metadata(epoch["epoch_number"]),
                sim.dim,
                seed=sim.session + epoch["epoch_number"],
            )
        )
        assert len(epoch["sample_images"]) == 2
    files = rows(db_url, "SELECT path, kind, on_disk FROM checkpoints ORDER BY path")
    assert len(files) == 5
    assert {f["path"] for f in files if not f["on_disk"]} == {str(p) for p in sim.removed}


@pytest.mark.both_servers
def test_backfill_sdxl_nometa_and_gui_config(tmp_path: Path, db_url: str) -> None:
    """`watch --once` records an SDXL dataset-config run and a --no_metadata run."""
    KohyaRun(
        tmp_path / "xl", output_name="pxl", flavour="sdxl", dim=16, epochs=3, save_last_n=None
    ).run()
    nometa_dir = tmp_path / "nm"
    KohyaRun(nometa_dir, output_name="nm", flavour="nometa", epochs=3, save_last_n=None).run()
    (nometa_dir / "config_lora-20251109-100000.toml").write_text(
        'pretrained_model_name_or_path = "runwayml/stable-diffusion-v1-5"\n'
        'learning_rate = 0.0002\noptimizer_type = "Lion"\nseed = 9\nmax_train_epochs = 3\n'
        "train_batch_size = 4\nnetwork_dim = 999\n"
    )
    result = CliRunner().invoke(cli, ["--database-url", db_url, "watch", "--once", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert "6 checkpoints found: 6 recorded" in result.output
    runs = {r["output_name"]: r for r in rows(db_url, "SELECT * FROM training_runs")}
    assert set(runs) == {"pxl", "nm"}
    xl = runs["pxl"]
    assert (xl["model_type"], xl["resolution"], xl["batch_size"], xl["network_dim"]) == (
        "SDXL", "1024x1024", 1, 16,
    )  # fmt: skip
    nm = runs["nm"]
    # metadata wins where it has a value (dim 32); the GUI config fills the rest
    assert (nm["network_dim"], nm["learning_rate"], nm["optimizer"], nm["seed"]) == (
        32, 0.0002, "Lion", 9,
    )  # fmt: skip
    assert nm["base_model"] == "runwayml/stable-diffusion-v1-5"
    assert nm["config"]["train_batch_size"] == 4
    epochs = rows(
        db_url,
        "SELECT tr.output_name, er.epoch_number FROM epoch_results er "
        "JOIN training_runs tr ON tr.id = er.training_run_id ORDER BY 1, 2",
    )
    assert [(e["output_name"], e["epoch_number"]) for e in epochs] == [
        ("nm", 1), ("nm", 2), ("nm", 3), ("pxl", 1), ("pxl", 2), ("pxl", 3),
    ]  # fmt: skip
    again = CliRunner().invoke(cli, ["--database-url", db_url, "watch", "--once", str(tmp_path)])
    assert "0 recorded, 6 already recorded" in again.output


def write_bad_files(folder: Path) -> dict[str, Path]:
    good = checkpoint_bytes(sd15_metadata("x", 1, 1.0), 8, seed=1)
    bad = {
        "truncated": (folder / "bad-000001.safetensors", good[: len(good) // 2]),
        "zero": (folder / "bad-000002.safetensors", b""),
        "corrupt": (folder / "bad-000003.safetensors",
                    struct.pack("<Q", 20) + b"{this is not json!!}" + b"\0" * 10),
        "png": (folder / "bad-000004.safetensors", PNG),
        "huge": (folder / "bad-000005.safetensors", struct.pack("<Q", 2**40) + b"{}"),
    }  # fmt: skip
    for path, content in bad.values():
        path.write_bytes(content)
    return {name: path for name, (path, _) in bad.items()}


def test_bad_files_are_logged_and_the_daemon_goes_on(
    tmp_path: Path,
    db_url: str,
    start_watcher: Callable[..., Watcher],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Truncated, empty, corrupt, non-safetensors and huge-header files: logged, not recorded."""
    caplog.set_level(logging.WARNING, logger="lora_tracker")
    out = tmp_path / "out"
    out.mkdir()
    start_watcher(out, db_url, stuck_after_s=0.5)
    bad = write_bad_files(out)
    wait_for(lambda: all(p.name in caplog.text for p in bad.values()), timeout=15)
    assert rows(db_url, "SELECT count(*) AS n FROM checkpoints")[0]["n"] == 0
    # and a good file afterwards is still recorded
    KohyaRun(out, output_name="after", epochs=1).run()
    wait_for(lambda: rows(db_url, "SELECT count(*) AS n FROM checkpoints")[0]["n"] == 1)


def test_hidden_folders_are_skipped_at_start_and_live(
    tmp_path: Path, db_url: str, start_watcher: Callable[..., Watcher]
) -> None:
    """A file under ``out/.trash/`` is left out by the backfill and by live watching alike."""
    out = tmp_path / "out"
    trash = out / ".trash"
    trash.mkdir(parents=True)
    KohyaRun(trash, output_name="binned_before", epochs=1, save_last_n=None).run()
    start_watcher(out, db_url, settle_s=0.2)
    live_trash = trash / "later"
    live_trash.mkdir()
    KohyaRun(live_trash, output_name="binned_live", epochs=1, save_last_n=None).run()
    # a file written after the hidden ones: once it is in, the hidden ones had their turn
    KohyaRun(out, output_name="kept", epochs=1, save_last_n=None).run()
    wait_for(lambda: rows(db_url, "SELECT count(*) AS n FROM checkpoints")[0]["n"] >= 1)
    time.sleep(1.0)  # five times the settle delay: a hidden file seen live would be in
    paths = [r["path"] for r in rows(db_url, "SELECT path FROM checkpoints")]
    assert paths == [str(out / "kept.safetensors")]
    assert rows(db_url, "SELECT count(*) AS n FROM training_runs")[0]["n"] == 1


def test_backfill_skips_bad_files(tmp_path: Path, db_url: str) -> None:
    """`watch --once` skips bad files, saying so, and records the good ones."""
    write_bad_files(tmp_path)
    KohyaRun(tmp_path, output_name="good", epochs=2).run()
    result = CliRunner().invoke(cli, ["--database-url", db_url, "watch", "--once", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert "7 checkpoints found: 2 recorded" in result.output
    assert "5 skipped" in result.output
    assert rows(db_url, "SELECT count(*) AS n FROM checkpoints")[0]["n"] == 2


def test_rewritten_file_updates_its_row(tmp_path: Path, db_url: str) -> None:
    """A resumed run rewrites a file: its row moves to the new run, no duplicate."""
    first = KohyaRun(tmp_path, epochs=3, save_last_n=None, session=111)
    first.run()
    invoke = ["--database-url", db_url, "record", str(tmp_path)]
    assert CliRunner().invoke(cli, invoke).exit_code == 0
    second = KohyaRun(tmp_path, epochs=3, save_last_n=None, session=222, dim=16)
    second.save_epoch(1)
    result = CliRunner().invoke(
        cli, ["--database-url", db_url, "record", str(second.epoch_path(1))]
    )
    assert result.exit_code == 0, result.output
    files = rows(
        db_url,
        "SELECT c.path, tr.session_id, c.size_bytes FROM checkpoints c "
        "JOIN training_runs tr ON tr.id = c.training_run_id ORDER BY c.path",
    )
    assert len(files) == 3
    rewritten = [f for f in files if f["path"] == str(second.epoch_path(1))]
    assert rewritten[0]["session_id"] == "222"
    assert rewritten[0]["size_bytes"] == second.epoch_path(1).stat().st_size
    runs = rows(db_url, "SELECT session_id, run_name FROM training_runs ORDER BY session_id")
    assert [r["session_id"] for r in runs] == ["111", "222"]
    assert runs[1]["run_name"] == "pixelbaby_2024-11-09_2"  # same name and date: made unique


def test_a_file_put_in_a_run_by_hand_stays_there_when_met_again(
    tmp_path: Path, db_url: str
) -> None:
    """`record --run NAME` of a file its training's run holds puts it in NAME; met again
    unchanged but touched (its time newer), by `record` or `watch --once`, on a folder or
    alone, it stays in NAME (it went back to its training's run). Another model written
    at the path goes by its training, as any new file."""
    sim = KohyaRun(tmp_path, epochs=4, save_last_n=None)
    sim.run()
    third = sim.epoch_path(3)
    base = ["--database-url", db_url]
    assert CliRunner().invoke(cli, [*base, "record", str(tmp_path)]).exit_code == 0
    moved = CliRunner().invoke(cli, [*base, "record", "--run", "elsewhere", str(third)])
    assert moved.exit_code == 0, moved.output

    def owner() -> list[Any]:
        return [
            (r["run_name"], r["epoch_number"])
            for r in rows(
                db_url,
                "SELECT tr.run_name, er.epoch_number FROM checkpoints c "
                "JOIN training_runs tr ON tr.id = c.training_run_id "
                "JOIN epoch_results er ON er.id = c.epoch_result_id WHERE c.path = %s",
                (str(third),),
            )
        ]

    assert owner() == [("elsewhere", 3)]
    again = [
        [*base, "record", str(tmp_path)],
        [*base, "watch", "--once", str(tmp_path)],
        [*base, "record", str(third)],
    ]
    for n, command in enumerate(again, start=1):
        os.utime(third, (time.time() + 5 * n, time.time() + 5 * n))  # touched
        done = CliRunner().invoke(cli, command)
        assert done.exit_code == 0, done.output
        assert owner() == [("elsewhere", 3)], command
    assert "pixelbaby-000003.safetensors -> run elsewhere epoch 3" in done.output
    # one event alone (a spool's replay, a batch done again event by event)
    from lora_tracker.capture.apply import apply_event
    from lora_tracker.capture.events import observe_checkpoint
    from lora_tracker.db import Database

    os.utime(third, (time.time() + 20, time.time() + 20))
    with Database(db_url) as db, db.transaction() as conn:
        assert apply_event(conn, observe_checkpoint(third)).run_name == "elsewhere"
    assert owner() == [("elsewhere", 3)]
    elsewhere = rows(
        db_url,
        "SELECT session_id, (SELECT count(*) FROM epoch_results er "
        "WHERE er.training_run_id = tr.id) AS epochs FROM training_runs tr "
        "WHERE run_name = 'elsewhere'",
    )
    assert elsewhere == [{"session_id": None, "epochs": 1}]  # nor did it take the others
    # another model at the path (the training saved epoch 3 again): its training's run
    third.write_bytes(checkpoint_bytes(sim.metadata(3), sim.dim, seed=999))
    os.utime(third, (time.time() + 30, time.time() + 30))
    assert CliRunner().invoke(cli, [*base, "record", str(tmp_path)]).exit_code == 0
    assert owner() == [(rows(db_url, "SELECT run_name FROM training_runs WHERE session_id "
                             "IS NOT NULL")[0]["run_name"], 3)]  # fmt: skip


def test_record_says_what_was_recorded_already(tmp_path: Path, db_url: str) -> None:
    """`record` on a folder says a run's many files in one line, as `watch` does; run again,
    it says the files are recorded already (not "recorded" again), but for a file written
    since; into another run (--run), a file is recorded anew."""
    sim = KohyaRun(tmp_path, epochs=8, save_last_n=None)
    sim.run()
    record = ["--database-url", db_url, "record", str(tmp_path)]
    first = CliRunner().invoke(cli, record)
    assert first.exit_code == 0, first.output
    lines = first.output.splitlines()
    assert len(lines) == 1 and lines[0].startswith("recorded 8 files -> run pixelbaby_"), lines
    assert lines[0].split(" (")[0].endswith(" epochs 1-8")
    again = CliRunner().invoke(cli, record)
    assert again.exit_code == 0, again.output
    assert again.output.splitlines() == ["already " + lines[0]]
    written = (
        "SELECT c.path, c.updated_at, er.updated_at AS epoch_written FROM checkpoints c "
        "JOIN epoch_results er ON er.id = c.epoch_result_id ORDER BY c.path"
    )
    before = rows(db_url, written)
    assert len(before) == 8
    assert CliRunner().invoke(cli, record).exit_code == 0
    assert rows(db_url, written) == before  # left alone: not written again
    os.utime(sim.epoch_path(2), (time.time() + 5, time.time() + 5))  # written again
    third = CliRunner().invoke(cli, record)
    assert third.exit_code == 0, third.output
    said = third.output.splitlines()
    assert said[0].startswith("recorded pixelbaby-000002.safetensors -> run pixelbaby_")
    assert " epoch 2 (" in said[0]
    assert said[1].startswith("already recorded 7 files -> run pixelbaby_"), said
    assert said[1].split(" (")[0].endswith(" epochs 1, 3-8") and len(said) == 2
    moved = CliRunner().invoke(
        cli, ["--database-url", db_url, "record", "--run", "elsewhere", str(sim.epoch_path(3))]
    )
    assert moved.exit_code == 0, moved.output  # (it was refused: the session was taken)
    assert moved.output.startswith("recorded pixelbaby-000003.safetensors -> run elsewhere ")
    owner = rows(
        db_url,
        "SELECT tr.run_name, tr.session_id FROM checkpoints c "
        "JOIN training_runs tr ON tr.id = c.training_run_id WHERE c.path = %s",
        (str(sim.epoch_path(3)),),
    )
    assert owner == [{"run_name": "elsewhere", "session_id": None}]  # the session: the first's
    epochs = rows(
        db_url,
        "SELECT er.epoch_number, er.sample_images FROM epoch_results er JOIN training_runs tr "
        "ON tr.id = er.training_run_id WHERE tr.run_name = 'elsewhere'",
    )
    assert [e["epoch_number"] for e in epochs] == [3]  # not its training's other samples
    assert epochs[0]["sample_images"] and all("_e000003_" in p for p in epochs[0]["sample_images"])
    once_more = CliRunner().invoke(
        cli, ["--database-url", db_url, "record", "--run", "elsewhere", str(sim.epoch_path(3))]
    )
    assert once_more.output.startswith("already recorded pixelbaby-000003.safetensors -> run")
    # the folder again, without --run: the file stays where it was put, and is said so
    folder = CliRunner().invoke(cli, record)
    assert folder.exit_code == 0, folder.output
    said = folder.output.splitlines()
    assert said[0].startswith("already recorded 7 files -> run pixelbaby_"), said
    assert said[0].split(" (")[0].endswith(" epochs 1-2, 4-8")
    assert said[1].startswith("already recorded pixelbaby-000003.safetensors -> run elsewhere ")
    assert len(said) == 2
    assert rows(db_url, "SELECT tr.run_name FROM checkpoints c JOIN training_runs tr "
                "ON tr.id = c.training_run_id WHERE c.path = %s",
                (str(sim.epoch_path(3)),)) == [{"run_name": "elsewhere"}]  # fmt: skip


def test_record_command(tmp_path: Path, db_url: str) -> None:
    """`record` files into a named run; a bad file in the list records nothing."""
    sim = KohyaRun(tmp_path, epochs=2, save_last_n=None)
    sim.run()
    bad = tmp_path / "broken-000001.safetensors"
    bad.write_bytes(b"\x00" * 3)
    result = CliRunner().invoke(
        cli, ["--database-url", db_url, "record", str(sim.epoch_path(1)), str(bad)]
    )
    assert result.exit_code == 1
    assert "not recorded: broken-000001.safetensors" in result.output
    assert rows(db_url, "SELECT count(*) AS n FROM checkpoints")[0]["n"] == 0
    result = CliRunner().invoke(
        cli,
        [
            "--database-url",
            db_url,
            "record",
            "--run",
            "my_named_run",
            str(sim.epoch_path(1)),
            str(sim.epoch_path(2)),
        ],
    )
    assert result.exit_code == 0, result.output
    assert "recorded pixelbaby-000001.safetensors -> run my_named_run epoch 1" in result.output
    runs = rows(db_url, "SELECT run_name, network_dim FROM training_runs")
    assert runs == [{"run_name": "my_named_run", "network_dim": 32}]
    missing = CliRunner().invoke(cli, ["--database-url", db_url, "record", "/no/such/file"])
    assert missing.exit_code == 2


def test_database_down_for_the_whole_run_then_back(
    tmp_path: Path, db_url: str, start_watcher: Callable[..., Watcher]
) -> None:
    """Every epoch seen while the database is down lands exactly once when it is back."""
    proxy = Proxy(proxy_target(db_url))
    url = proxied(db_url, proxy)
    out = tmp_path / "out"
    out.mkdir()
    watcher = start_watcher(out, url)  # database down from the start
    sim = KohyaRun(out, epochs=4, save_last_n=2)
    sim.run(pause=0.3)  # training takes a while between two saves
    spool = watcher.delivery.spool
    # 4 checkpoints, 1 removal (at epoch 3), 8 sample images
    wait_for(lambda: spool.pending() >= 13)
    status = CliRunner().invoke(cli, ["--database-url", url, "db", "status"])
    assert status.exit_code == 1
    assert "events waiting" in status.output
    assert rows(db_url, "SELECT count(*) AS n FROM checkpoints")[0]["n"] == 0

    proxy.up()
    try:
        watcher.schedule("/nonexistent-wakeup.safetensors")  # wake the worker
        wait_for(lambda: spool.pending() == 0, timeout=30)
        epochs = rows(
            db_url,
            "SELECT epoch_number, checkpoint_on_disk FROM epoch_results ORDER BY epoch_number",
        )
        assert [(e["epoch_number"], e["checkpoint_on_disk"]) for e in epochs] == [
            (1, False), (2, True), (3, True), (4, True),
        ]  # fmt: skip
        assert rows(db_url, "SELECT count(*) AS n FROM training_runs")[0]["n"] == 1
        assert rows(db_url, "SELECT count(*) AS n FROM checkpoints")[0]["n"] == 4
    finally:
        watcher.stop()
        proxy.down()


@pytest.mark.both_servers
def test_replay_is_exactly_once(tmp_path: Path, db_url: str) -> None:
    """Replaying the same spooled events again (a crash before the spool was rewritten)
    changes nothing."""
    proxy = Proxy(proxy_target(db_url))
    url = proxied(db_url, proxy)
    KohyaRun(tmp_path, epochs=3, save_last_n=None).run()
    result = CliRunner().invoke(cli, ["--database-url", url, "record", str(tmp_path)])
    assert result.exit_code == 0
    assert "database unavailable: 3 events kept in the spool" in result.output
    spool_file = Path(os.environ["LORA_TRACKER_HOME"]) / "spool" / "events.jsonl"
    lines = spool_file.read_text().splitlines()
    assert len(lines) == 3 and all(event_from_json(line).kind == "checkpoint" for line in lines)

    synced = CliRunner().invoke(cli, ["--database-url", db_url, "sync"])
    assert synced.exit_code == 0, synced.output
    assert "Replayed 3 events, 0 still waiting" in synced.output
    before = rows(db_url, "SELECT * FROM epoch_results ORDER BY id")
    spool_file.write_text("".join(line + "\n" for line in lines))  # as if never rewritten
    again = CliRunner().invoke(cli, ["--database-url", db_url, "sync"])
    assert "Replayed 3 events" in again.output
    assert rows(db_url, "SELECT * FROM epoch_results ORDER BY id") == before
    assert rows(db_url, "SELECT count(*) AS n FROM applied_events")[0]["n"] == 3
    empty = CliRunner().invoke(cli, ["--database-url", db_url, "sync"])
    assert "Spool is empty" in empty.output


def test_sync_with_database_down_keeps_events(tmp_path: Path, db_url: str) -> None:
    """`sync` while the database is down fails in one line and keeps every event."""
    proxy = Proxy(proxy_target(db_url))
    url = proxied(db_url, proxy)
    KohyaRun(tmp_path, epochs=2, save_last_n=None).run()
    CliRunner().invoke(cli, ["--database-url", url, "record", str(tmp_path)])
    result = CliRunner().invoke(cli, ["--database-url", url, "sync"])
    assert result.exit_code == 1
    assert "2 events still waiting" in result.output
    spool_file = Path(os.environ["LORA_TRACKER_HOME"]) / "spool" / "events.jsonl"
    assert len(spool_file.read_text().splitlines()) == 2


def test_unreadable_spool_line_is_kept_aside(tmp_path: Path, db_url: str) -> None:
    """A spool line that can never be applied goes to rejected.jsonl; the rest lands."""
    proxy = Proxy(proxy_target(db_url))
    KohyaRun(tmp_path, epochs=2, save_last_n=None).run()
    CliRunner().invoke(cli, ["--database-url", proxied(db_url, proxy), "record", str(tmp_path)])
    spool_dir = Path(os.environ["LORA_TRACKER_HOME"]) / "spool"
    with open(spool_dir / "events.jsonl", "a") as handle:
        handle.write('{"kind": "nonsense"}\n')
    result = CliRunner().invoke(cli, ["--database-url", db_url, "sync"])
    assert "Replayed 2 events, 0 still waiting, 1 rejected" in result.output
    rejected = [
        json.loads(line) for line in (spool_dir / "rejected.jsonl").read_text().splitlines()
    ]
    assert rejected[0]["event"] == '{"kind": "nonsense"}'
    assert rows(db_url, "SELECT count(*) AS n FROM checkpoints")[0]["n"] == 2


@pytest.mark.both_servers
def test_one_bad_event_in_a_batch_is_set_aside(tmp_path: Path, db_url: str) -> None:
    """A batch with an event the schema refuses records the rest; the bad one is kept aside."""
    from lora_tracker.capture.events import observe_checkpoint

    sim = KohyaRun(tmp_path, epochs=3, save_last_n=None)
    sim.run()
    events = [observe_checkpoint(sim.epoch_path(e)) for e in (1, 2, 3)]
    events[1] = dataclasses.replace(events[1], epoch=-1)  # violates epoch_number >= 0
    delivery = EventDelivery(db_url)
    try:
        result = delivery.submit_many(events)
    finally:
        delivery.close()
    assert [outcome for _, outcome, _ in result.outcomes] == ["recorded", "rejected", "recorded"]
    files = rows(db_url, "SELECT epoch_number FROM checkpoints ORDER BY 1")
    assert [f["epoch_number"] for f in files] == [1, 3]
    rejected = delivery.spool.rejected_path.read_text().splitlines()
    assert len(rejected) == 1 and "epoch_number" in json.loads(rejected[0])["reason"]


def test_peft_and_step_checkpoints(tmp_path: Path, db_url: str) -> None:
    """transformers+PEFT checkpoint folders and kohya step files are recorded as steps."""
    import numpy as np
    from safetensors.numpy import save

    out = tmp_path / "peft-run"
    for step in (10, 20):
        folder = out / f"checkpoint-{step}"
        folder.mkdir(parents=True)
        (folder / "adapter_model.safetensors").write_bytes(
            save(
                {"base_model.model.q_proj.lora_A.weight": np.zeros((8, 16), np.float32)},
                metadata={"format": "pt"},
            )
        )
        (folder / "adapter_config.json").write_text(
            json.dumps(
                {"r": 8, "lora_alpha": 16, "peft_type": "LORA", "target_modules": ["q_proj"]}
            )
        )
        (folder / "trainer_state.json").write_text(
            json.dumps(
                {
                    "global_step": step,
                    "epoch": step / 10,
                    "max_steps": 20,
                    "num_train_epochs": 2,
                    "log_history": [{"loss": 1.0 / step, "step": step}],
                }
            )
        )
        (folder / "optimizer.pt").write_bytes(b"\0" * 64)  # accelerate state: not a LoRA
    kohya = tmp_path / "kohya"
    sim = KohyaRun(kohya, epochs=2, save_last_n=None)
    sim.save_epoch(1)
    step_file = kohya / "pixelbaby-step00000150.safetensors"
    step_file.write_bytes(checkpoint_bytes(sim.metadata(1) | {"ss_steps": "150"}, 8, seed=5))
    result = CliRunner().invoke(cli, ["--database-url", db_url, "watch", "--once", str(tmp_path)])
    assert result.exit_code == 0, result.output
    files = rows(
        db_url,
        "SELECT c.kind, c.global_step, c.epoch_number, tr.output_name, "
        "tr.network_dim, tr.trainer FROM checkpoints c "
        "JOIN training_runs tr ON tr.id = c.training_run_id "
        "ORDER BY tr.output_name, c.global_step",
    )
    assert [(f["output_name"], f["kind"], f["global_step"]) for f in files] == [
        ("peft-run", "step", 10), ("peft-run", "step", 20),
        ("pixelbaby", "epoch", 100), ("pixelbaby", "step", 150),
    ]  # fmt: skip
    assert {f["network_dim"] for f in files if f["output_name"] == "peft-run"} == {8}
    assert {f["trainer"] for f in files} == {"peft", "kohya"}
    peft_run = rows(
        db_url,
        "SELECT network_alpha, total_steps, num_epochs FROM training_runs "
        "WHERE output_name = 'peft-run'",
    )[0]
    assert (peft_run["network_alpha"], peft_run["total_steps"], peft_run["num_epochs"]) == (
        16, 20, 2,
    )  # fmt: skip
    # a step checkpoint adds no epoch row; epoch 1 has its own
    epochs = rows(
        db_url,
        "SELECT epoch_number FROM epoch_results er JOIN training_runs tr "
        "ON tr.id = er.training_run_id WHERE tr.output_name = 'pixelbaby'",
    )
    assert [e["epoch_number"] for e in epochs] == [1]


def test_run_updates_of_a_batch_in_one_statement_equal_one_by_one(db_url: str) -> None:
    """A batch's runs that change the same columns are updated in one statement (through
    JSON); the rows equal what one UPDATE a run writes, for every kind of column: exact
    numbers, times, JSON, arrays, NULLs, a NUL in text and a float's NaN."""
    from datetime import datetime, timedelta, timezone
    from decimal import Decimal

    from lora_tracker.capture.apply import _set, _set_many
    from lora_tracker.capture.nul_safe import make_nul_safe
    from lora_tracker.db import Database

    when = datetime(2026, 11, 28, 1, 2, 3, 456789, tzinfo=timezone(timedelta(hours=-5)))
    values = [
        {"checkpoint_file_size_mb": Decimal("144.07"), "network_alpha": Decimal("0.5"),
         "learning_rate": 1e-4, "unet_lr": float("nan"), "total_steps": 2**31 - 1,
         "training_finished_at": when, "config": {"a": [1, "x\x00y"], "b": None},
         "issues_found": ["overfitting", "wrong_backgrounds"], "production_ready": True,
         "notes": "tab\tnul\x00end", "captured_values": {"seed": 7}},
        {"checkpoint_file_size_mb": Decimal("0.01"), "network_alpha": Decimal("16"),
         "learning_rate": 3.5e-05, "unet_lr": None, "total_steps": 0,
         "training_finished_at": None, "config": [], "issues_found": [],
         "production_ready": False, "notes": None, "captured_values": {}},
    ]  # fmt: skip
    db = Database(db_url, on_connect=make_nul_safe)
    try:
        with db.transaction() as conn:
            made = conn.execute(
                "INSERT INTO training_runs (run_name) SELECT unnest(%s::text[]) "
                "ORDER BY 1 RETURNING id, run_name",
                (["many_a", "many_b", "one_a", "one_b"],),
            ).fetchall()
            by_name = {row["run_name"]: row["id"] for row in made}
            ids = [by_name[name] for name in ("one_a", "one_b", "many_a", "many_b")]
            for run_id, update in zip(ids[:2], values, strict=True):
                _set(conn, run_id, dict(update))
            _set_many(conn, {ids[2]: dict(values[0]), ids[3]: dict(values[1])})
    finally:
        db.close()
    found = {r["id"]: r for r in rows(db_url, "SELECT * FROM training_runs")}

    def same(a: object, b: object) -> bool:
        return a == b or (a != a and b != b)  # NaN is NaN

    for one, many in ((ids[0], ids[2]), (ids[1], ids[3])):
        for column in values[0]:
            assert same(found[one][column], found[many][column]), column
    assert found[ids[2]]["unet_lr"] != found[ids[2]]["unet_lr"]  # NaN stayed NaN
    assert found[ids[2]]["training_finished_at"] == when
    assert found[ids[2]]["checkpoint_file_size_mb"] == Decimal("144.07")


def test_runs_started_in_one_batch_equal_one_by_one(db_url: str) -> None:
    """Runs the Python API starts in one batch (a sweep) are created in one statement; each
    row equals the one a start applied on its own makes, and a start whose name is taken
    still goes the careful way (it takes the unkeyed run of that name)."""
    from datetime import datetime, timedelta, timezone
    from decimal import Decimal

    from lora_tracker.capture.apply import apply_event, apply_events
    from lora_tracker.capture.events import RunStarted
    from lora_tracker.capture.nul_safe import make_nul_safe
    from lora_tracker.db import Database
    from lora_tracker.models import valid_run_fields

    def started(prefix: str, n: int) -> RunStarted:
        fields = valid_run_fields({
            "model_type": "SDXL", "network_dim": 16 + n, "network_alpha": Decimal("8.5"),
            "learning_rate": 1e-4 / (n + 1), "resolution": "1024x1024",
            "training_started_at": datetime(2026, 11, 28, 1, 2, 3, 4567,
                                            tzinfo=timezone(timedelta(hours=9))),
            "tag_frequency": {"pixel": 3}, "trainer": "api", "host": "gpu-1",
            "output_dir": "/out", "output_name": "sweep", "notes": "nul\x00here",
        }, mode="json")  # fmt: skip
        return RunStarted(
            run_key=f"api:{prefix}:{n}", run_name=f"{prefix}_{n}", fields=fields,
            config={"lr": 1e-4, "nested": {"k": [1, 2.5, None]}}, default_name="sweep",
            observed_at=datetime(2026, 11, 28, 2, 0, n, tzinfo=timezone.utc),
        )  # fmt: skip

    db = Database(db_url, on_connect=make_nul_safe)
    try:
        with db.transaction() as conn:
            for name in ("batch_2", "single_2"):  # made by hand before: no key yet
                conn.execute("INSERT INTO training_runs (run_name) VALUES (%s)", (name,))
            applied = apply_events(conn, [started("batch", n) for n in range(3)], runs={})
            for n in range(3):
                apply_event(conn, started("single", n))
    finally:
        db.close()
    assert [(a.outcome, a.run_name, a.new_run) for a in applied] == [
        ("recorded", "batch_0", True), ("recorded", "batch_1", True),
        ("recorded", "batch_2", False),
    ]  # fmt: skip
    found = {r["run_name"]: r for r in rows(db_url, "SELECT * FROM training_runs")}
    for n in range(3):
        batch, single = found[f"batch_{n}"], found[f"single_{n}"]
        assert batch["capture_key"] == f"api:batch:{n}"
        for column in batch:
            if column not in ("id", "run_name", "capture_key", "created_at", "updated_at"):
                assert batch[column] == single[column], (n, column)


def test_backfill_creates_its_runs_together_and_a_taken_name_still_works(
    tmp_path: Path, db_url: str
) -> None:
    """A batch's new runs are created together; a run whose first name is taken (a run
    entered by hand, or a training of the same name that day in the same batch) and a run
    deleted with cleanup are still handled one by one: the first get the next free name,
    the last stays out."""
    from datetime import datetime, timezone

    started = datetime(2026, 11, 20, 10, 0, tzinfo=timezone.utc).timestamp()
    out = tmp_path / "out"
    out.mkdir()
    for name, session in (("alpha", 11), ("beta", 12), ("gamma", 13), ("gone", 14)):
        for epoch in (1, 2):
            meta = sd15_metadata(name, session, started) | {"ss_epoch": str(epoch)}
            path = out / f"{name}-{epoch:06d}.safetensors"
            path.write_bytes(checkpoint_bytes(meta, 4, seed=session * 10 + epoch))
    again = out / "again"  # alpha trained again the same day: the same first name
    again.mkdir()
    meta = sd15_metadata("alpha", 15, started + 3600) | {"ss_epoch": "1"}
    (again / "alpha-000001.safetensors").write_bytes(checkpoint_bytes(meta, 4, seed=151))
    rows(db_url, "INSERT INTO training_runs (run_name) VALUES ('beta_2026-11-20') RETURNING id")
    rows(db_url, "INSERT INTO deleted_runs (capture_key, run_name) "
                 "VALUES ('session:14', 'gone_2026-11-20') RETURNING capture_key")  # fmt: skip
    stats = backfilled(out, db_url)
    assert (stats.recorded, stats.deleted) == (7, 2)
    found = rows(
        db_url,
        "SELECT tr.run_name, tr.capture_key, count(er.id) AS epochs FROM training_runs tr "
        "LEFT JOIN epoch_results er ON er.training_run_id = tr.id "
        "GROUP BY tr.id ORDER BY tr.run_name",
    )
    assert [(r["run_name"], r["capture_key"], r["epochs"]) for r in found] == [
        ("alpha_2026-11-20", "session:11", 2),
        ("alpha_2026-11-20_2", "session:15", 1),
        ("beta_2026-11-20", None, 0),
        ("beta_2026-11-20_2", "session:12", 2),
        ("gamma_2026-11-20", "session:13", 2),
    ]


def test_backfill_logs_a_long_run_in_one_line(tmp_path: Path, db_url: str) -> None:
    """`watch --once` lists a run's files one by one up to five; a run of more is one line
    saying which epochs (consecutive ones as a span) and how many step files it holds."""
    out = tmp_path / "out"
    out.mkdir()
    started = time.time() - 3600

    def save(name: str, filename: str, epoch: int, session: int) -> None:
        meta = sd15_metadata(name, session, started + session, dim=8) | {"ss_epoch": str(epoch)}
        path = out / filename
        path.write_bytes(checkpoint_bytes(meta, 8, seed=session * 100 + epoch))
        os.utime(path, (started + epoch, started + epoch))

    for epoch in (1, 2, 3, 5, 6, 7):
        save("long", f"long-{epoch:06d}.safetensors", epoch, 1)
    for step, epoch in ((150, 4), (250, 6)):  # kohya writes the 0-based epoch in progress
        save("long", f"long-step{step:08d}.safetensors", epoch - 1, 1)
    for epoch in (1, 2):
        save("short", f"short-{epoch:06d}.safetensors", epoch, 2)
    stats, said = logged_backfill(out, db_url)
    assert stats.recorded == 10
    lines = [line for line in said if line.startswith("recorded")]
    [long_run] = rows(db_url, "SELECT run_name FROM training_runs WHERE output_name = 'long'")
    size_mb = sum(p.stat().st_size for p in out.glob("long*")) / (1024 * 1024)
    assert lines[0] == (
        f"recorded 8 files -> run {long_run['run_name']} epochs 1-3, 5-7 "
        f"and 2 step files ({size_mb:.1f} MB)"
    )
    assert [line.split(" -> ")[0] for line in lines[1:]] == [
        "recorded short-000001.safetensors",
        "recorded short-000002.safetensors",
    ]


def test_backfill_chunks_sent_ahead_and_a_refused_one(
    tmp_path: Path, db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A batch's files go to the server in chunks without waiting for it (pipeline mode).
    When the server refuses a file in a chunk already sent, the batch is rolled back whole
    and done again the careful way: that file alone is refused (kept in the spool's
    rejected file), every other lands once, and nothing else is said about it."""
    from lora_tracker.capture import apply

    monkeypatch.setattr(apply, "FIRST_FILE_CHUNK", 2)
    monkeypatch.setattr(apply, "FILE_CHUNK", 4)
    sent: list[int] = []
    write_files = apply._FileBatch._write_files

    def counted(self: apply._FileBatch) -> None:
        sent.append(len(self.file_rows) if self.pipeline is not None else -1)
        write_files(self)

    monkeypatch.setattr(apply._FileBatch, "_write_files", counted)
    out = tmp_path / "out"
    out.mkdir()
    started = time.time() - 3600

    def save(filename: str, epoch: str, at: float) -> None:
        meta = sd15_metadata("chunks", 1, started, dim=8) | {"ss_epoch": epoch}
        path = out / filename
        path.write_bytes(checkpoint_bytes(meta, 8, seed=int(at)))
        os.utime(path, (started + at, started + at))

    for epoch in range(1, 10):
        save(f"chunks-{epoch:06d}.safetensors", str(epoch), epoch)
    save("chunks.safetensors", "99999999999", 5.5)  # the 6th file: an epoch out of range
    stats, lines = logged_backfill(out, db_url)
    assert sent[:3] == [2, 4, 4]  # the first chunks sent in pipeline mode (the 6th file
    # in the second)
    assert (stats.recorded, stats.rejected) == (9, 1)
    epochs = rows(db_url, "SELECT epoch_number FROM epoch_results ORDER BY 1")
    assert [r["epoch_number"] for r in epochs] == list(range(1, 10))
    assert rows(db_url, "SELECT count(*) AS n FROM checkpoints")[0]["n"] == 9
    said = "\n".join(lines)
    assert "refused" in said and "chunks.safetensors" in said and "out of range" in said
    assert "pipeline" not in said.lower()


def test_backfill_with_the_database_away_then_back(tmp_path: Path, db_url: str) -> None:
    """A backfill while the database is away spools its files, a training of more than five
    in one line; the next one replays them first, then finds them all recorded: nothing
    is written twice."""
    proxy = Proxy(proxy_target(db_url))  # down until up()
    url = proxied(db_url, proxy)
    out = tmp_path / "out"
    out.mkdir()
    started = time.time() - 3600
    for name, epochs in (("long", 7), ("short", 2)):
        for epoch in range(1, epochs + 1):
            meta = sd15_metadata(name, len(name), started, dim=8) | {"ss_epoch": str(epoch)}
            path = out / f"{name}-{epoch:06d}.safetensors"
            path.write_bytes(checkpoint_bytes(meta, 8, seed=len(name) * 100 + epoch))
    try:
        away, said = logged_backfill(out, url)
        proxy.up()
        back, _ = logged_backfill(out, url)
    finally:
        proxy.down()
    size_mb = sum(p.stat().st_size for p in out.glob("long-*")) / (1024 * 1024)
    assert away.spooled == 9
    assert f"spooled 7 files of long in {out} (database unavailable; {size_mb:.1f} MB)" in said
    assert sum(line.startswith("spooled short-00000") for line in said) == 2
    assert (back.recorded, back.unchanged) == (0, 9)
    files = rows(db_url, "SELECT count(*) AS n, count(*) FILTER (WHERE updated_at > created_at) "
                         "AS rewritten FROM checkpoints")  # fmt: skip
    assert files == [{"n": 9, "rewritten": 0}]


def test_a_runs_epochs_in_one_line() -> None:
    """Consecutive epochs as spans, up to four of them; more (every other epoch saved) as
    a range and a count, so the line stays short."""
    from lora_tracker.capture.apply import Applied
    from lora_tracker.capture.watcher import _saves

    def files(epochs: list[int], steps: int = 0) -> list[tuple[Any, Applied]]:
        epoch_files = [(_Kind("epoch"), Applied("recorded", "r", e)) for e in epochs]
        return epoch_files + [(_Kind("step"), Applied("recorded", "r", 1))] * steps

    assert _saves(files([1, 2, 3, 5, 6, 7, 9], steps=2)) == "epochs 1-3, 5-7, 9 and 2 step files"
    assert _saves(files([4])) == "epoch 4"
    assert _saves(files([], steps=1)) == "1 step file"
    assert _saves(files(list(range(2, 101, 2)))) == "epochs 2 to 100 (50 of them)"


class _Kind:
    def __init__(self, kind: str) -> None:
        self.checkpoint_kind = kind


def logged_backfill(folder: Path, url: str) -> tuple[BackfillStats, list[str]]:
    """A backfill of ``folder`` (a delivery of its own) and every line logged meanwhile:
    lora-tracker's from INFO up, and anything a library says."""
    root = logging.getLogger()
    ours = logging.getLogger("lora_tracker")
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    root.addHandler(handler)
    level = ours.level
    ours.setLevel(logging.INFO)
    try:
        stats = backfilled(folder, url)
    finally:
        root.removeHandler(handler)
        ours.setLevel(level)
    return stats, stream.getvalue().splitlines()


def test_watch_once_says_a_file_still_being_written_is_left_out(
    tmp_path: Path, db_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """`watch --once` does not look again: a checkpoint still being written (its data short
    of what its header promises) is said to be left out, not to be recorded later."""
    out = tmp_path / "out"
    out.mkdir()
    meta = sd15_metadata("partial", 1, time.time()) | {"ss_epoch": "1"}
    (out / "partial-000001.safetensors").write_bytes(checkpoint_bytes(meta, 8, seed=1)[:-64])
    caplog.set_level(logging.INFO, logger="lora_tracker")
    result = CliRunner().invoke(cli, ["--database-url", db_url, "watch", "--once", str(out)])
    assert result.exit_code == 0, result.output
    assert "1 skipped" in result.output
    assert "left out, not complete yet: partial-000001.safetensors" in caplog.text
    assert "recorded once it is" not in caplog.text


def test_an_event_read_from_a_file_is_the_validated_one(tmp_path: Path) -> None:
    """`observe_checkpoint` builds an event from what it read without validating it again:
    for every kind of file a watcher meets, that event equals the one validation makes from
    it, reads back from the spool the same, and holds no secret."""
    import numpy as np
    from safetensors.numpy import save

    from lora_tracker.capture.events import (
        CheckpointObserved,
        event_to_json,
        observe_checkpoint,
        validated,
    )

    from .diffusers_sim import DiffusersRun
    from .kohya_sim import sample_prompts_file

    kohya = tmp_path / "kohya"
    sim = KohyaRun(kohya, epochs=3, save_last_n=None)
    sim.run()
    sim.save_step(250)
    (kohya / "config_lora-20260101-120000.toml").write_text(
        'hub_token = "hf_notStored"\nnetwork_dim = 32\n'
        f'sample_prompts = "{sample_prompts_file(kohya)}"\n'
    )
    other = KohyaRun(tmp_path / "nometa", flavour="nometa", epochs=2, save_last_n=None)
    other.run()
    meta = sd15_metadata("secretive", 7, 1_700_000_000.0)
    meta.update(ss_wandb_api_key="wandbNotStored", ss_repo="https://me:pwNotStored@example.com/")
    secretive = tmp_path / "secretive" / "secretive-000001.safetensors"
    secretive.parent.mkdir()
    secretive.write_bytes(checkpoint_bytes(meta, 8, seed=3))
    peft = tmp_path / "peft" / "checkpoint-10"
    peft.mkdir(parents=True)
    (peft / "adapter_model.safetensors").write_bytes(
        save({"q_proj.lora_A.weight": np.zeros((8, 16), np.float32)}, metadata={"format": "pt"})
    )
    (peft / "adapter_config.json").write_text(json.dumps({"r": 8, "peft_type": "LORA"}))
    diffusers = DiffusersRun(tmp_path / "diffusers", hub_token="hf_notStoredEither")
    diffusers.run()
    files = [*sim.written, *other.written, secretive, peft / "adapter_model.safetensors",
             *diffusers.saved]  # fmt: skip
    events = [observe_checkpoint(path) for path in files]
    SECRETS = ("hf_notStored", "wandbNotStored", "pwNotStored")
    assert any(e.samples_by_epoch for e in events) and any(e.sample_prompts for e in events)
    assert any(e.checkpoint_kind == "step" for e in events) and any(e.config for e in events)
    for event in events:
        fields = {f.name: getattr(event, f.name) for f in dataclasses.fields(event)}
        assert validated(CheckpointObserved, **fields) == event, event.path
        assert event_from_json(event_to_json(event)) == event, event.path
        spooled = event_to_json(event)
        assert not any(secret in spooled for secret in SECRETS), event.path


def test_watch_pauses_the_collector_only_while_it_backfills(
    tmp_path: Path, db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`watch --once` pauses the cyclic collector while it backfills and has it running
    after; a watcher anywhere else (a hook's, inside a training) never touches it."""
    import gc

    from lora_tracker.capture import watcher as watcher_module

    seen: list[bool] = []
    real = watcher_module.Watcher.backfill

    def backfill(self: Watcher, *args: Any, **kwargs: Any) -> BackfillStats:
        seen.append(gc.isenabled())
        return real(self, *args, **kwargs)

    monkeypatch.setattr(watcher_module.Watcher, "backfill", backfill)
    KohyaRun(tmp_path / "out", epochs=2, save_last_n=None).run()
    result = CliRunner().invoke(
        cli, ["--database-url", db_url, "watch", "--once", str(tmp_path / "out")]
    )
    assert result.exit_code == 0, result.output
    assert seen == [False] and gc.isenabled()
    backfilled(tmp_path / "out", db_url)  # as a hook's fallback watcher does
    assert seen == [False, True] and gc.isenabled()


def test_an_odd_setting_in_the_metadata_costs_only_itself(
    tmp_path: Path, db_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A setting beyond its column (an epoch count past PostgreSQL's integer), an alpha of
    1e308 or a start time in the year 3e12 costs that setting, not the checkpoint: `record`
    crashed (the time overflowed) or had the file refused whole (the number reached the
    server)."""
    odd = {
        "ss_training_started_at": "1e20", "ss_num_epochs": "99999999999",
        "ss_num_train_images": "3000000000", "ss_network_alpha": "1e308",
        "ss_seed": str(2**64), "ss_max_train_steps": "2147483647",
    }  # fmt: skip
    paths = []
    for epoch in (1, 2):
        meta = sd15_metadata("odd", 77, 1_700_000_000.0)
        meta.update(odd, ss_epoch=str(epoch))
        path = tmp_path / f"odd-{epoch:06d}.safetensors"
        path.write_bytes(checkpoint_bytes(meta, 4, seed=epoch))
        paths.append(str(path))
    caplog.set_level(logging.WARNING)
    done = CliRunner().invoke(cli, ["--database-url", db_url, "record", *paths])
    assert done.exit_code == 0, done.output
    assert [line.split(" -> ")[0] for line in done.output.splitlines()] == [
        "recorded odd-000001.safetensors", "recorded odd-000002.safetensors",
    ], done.output  # fmt: skip
    run = rows(
        db_url,
        "SELECT num_epochs, network_alpha::float8 AS alpha, seed, max_train_steps, "
        "training_started_at, (SELECT count(*) FROM checkpoints) AS files FROM training_runs",
    )
    assert run == [{
        "num_epochs": None, "alpha": 1e308, "seed": None,
        "max_train_steps": 2147483647, "training_started_at": None, "files": 2,
    }]  # fmt: skip
    said = " ".join(r.getMessage() for r in caplog.records)
    assert "ignoring invalid run fields num_epochs=99999999999" in said, said
