"""Capture under faults: poison events, torn and full spools, deleted runs, a lone watcher.

Each test is one named behaviour of the fault matrix in bench/RESULTS.md: what was
written, what landed, that nothing landed twice, and what was refused (with the reason).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from lora_tracker.capture.delivery import EventDelivery
from lora_tracker.capture.events import observe_checkpoint
from lora_tracker.capture.watcher import Watcher
from lora_tracker.cli import cli
from lora_tracker.spool import Spool

from .conftest import backfilled, proxied, proxy_target, rows, wait_for
from .kohya_sim import KohyaRun, checkpoint_bytes, sd15_metadata, write_in_place
from .netproxy import Proxy


def poison_checkpoint(path: Path, **overrides: str) -> Path:
    """A complete kohya checkpoint whose metadata holds what a hostile trainer wrote."""
    meta = sd15_metadata("poison", session=777, started=1731146400.0)
    meta.update(ss_epoch="1", ss_num_epochs="2")
    meta.update(overrides)
    write_in_place(path, checkpoint_bytes(meta, 8, seed=7))
    return path


def spool_dir() -> Path:
    return Path(os.environ["LORA_TRACKER_HOME"]) / "spool"


def rejected_lines() -> list[dict[str, str]]:
    path = spool_dir() / "rejected.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines()]


# -- a bad event is stored as far as it can be, or rejected alone -----------------------------


def test_nul_in_metadata_is_recorded_without_it(tmp_path: Path, db_url: str) -> None:
    """PostgreSQL cannot store NUL: text loses it, the jsonb keeps it escaped."""
    out = tmp_path / "out"
    out.mkdir()
    poison_checkpoint(
        out / "poison-000001.safetensors", ss_output_name="poi\x00son", ss_optimizer="Ada\x00mW"
    )
    result = CliRunner().invoke(cli, ["--database-url", db_url, "watch", "--once", str(out)])
    assert result.exit_code == 0, result.output
    run = rows(db_url, "SELECT run_name, optimizer, checkpoint_metadata FROM training_runs")
    assert len(run) == 1
    assert "\x00" not in run[0]["run_name"] and run[0]["run_name"].startswith("poison_")
    assert run[0]["optimizer"] == "AdamW"
    assert run[0]["checkpoint_metadata"]["ss_output_name"] == "poi\\u0000son"
    assert rows(db_url, "SELECT count(*) AS n FROM epoch_results")[0]["n"] == 1
    assert rejected_lines() == []


@pytest.mark.both_servers
def test_refused_event_is_set_aside_and_the_rest_lands(
    tmp_path: Path, db_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A file the database refuses (a name too long for its index) costs only itself."""
    out = tmp_path / "out"
    sim = KohyaRun(out, epochs=3, save_last_n=None, samples_per_epoch=0)
    sim.run()
    huge = os.urandom(6000).hex()  # run_name's unique index takes at most ~2.7 kB
    poison_checkpoint(out / "zz-000001.safetensors", ss_output_name=huge, ss_session_id="9")
    caplog.set_level("INFO")
    result = CliRunner().invoke(cli, ["--database-url", db_url, "watch", "--once", str(out)])
    assert result.exit_code == 1, result.output  # after the others are recorded, as `record`
    assert "3 recorded" in result.output and "1 refused" in result.output
    assert (
        "1 file refused by the database, not recorded (why: said above; kept in the "
        "spool's rejected.jsonl)" in result.output
    )
    assert rows(db_url, "SELECT count(*) AS n FROM checkpoints")[0]["n"] == 3
    refused = rejected_lines()
    assert len(refused) == 1
    assert "zz-000001.safetensors" in refused[0]["event"]
    assert "index" in refused[0]["reason"]
    refusal_logs = [r for r in caplog.records if "refused" in r.getMessage()]
    assert len(refusal_logs) == 1 and "\n" not in refusal_logs[0].getMessage()
    # the refused event is never offered again: a second import changes nothing
    again = CliRunner().invoke(cli, ["--database-url", db_url, "watch", "--once", str(out)])
    assert again.exit_code == 1
    assert len(rejected_lines()) == 1  # seen again, refused again, kept once
    assert rows(db_url, "SELECT count(*) AS n FROM checkpoints")[0]["n"] == 3


def peft_checkpoint(out: Path, step: int) -> Path:
    """A transformers+PEFT checkpoint folder (``checkpoint-<step>``), as Trainer saves it."""
    import numpy as np
    from safetensors.numpy import save

    folder = out / f"checkpoint-{step}"
    folder.mkdir(parents=True)
    weights = {"base_model.model.q_proj.lora_A.weight": np.zeros((8, 16), np.float32)}
    (folder / "adapter_model.safetensors").write_bytes(save(weights, metadata={"format": "pt"}))
    config = {"r": 8, "lora_alpha": 16, "peft_type": "LORA", "target_modules": ["q_proj"]}
    (folder / "adapter_config.json").write_text(json.dumps(config))
    return folder / "adapter_model.safetensors"


@pytest.mark.both_servers
def test_step_beyond_an_integer_is_refused_alone(
    tmp_path: Path, db_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Not a CHECK: a step number past PostgreSQL's integer (``checkpoint-3000000000``)
    is the server's "integer out of range". That file alone is refused, in one log line and
    one line of rejected.jsonl; the checkpoints beside it land, once."""
    out = tmp_path / "out"
    good = [peft_checkpoint(out, step) for step in (10, 20)]
    huge = peft_checkpoint(out, 3_000_000_000)
    caplog.set_level("INFO")
    result = CliRunner().invoke(cli, ["--database-url", db_url, "watch", "--once", str(out)])
    assert result.exit_code == 1, result.output  # a file not recorded: after the others
    assert "2 recorded" in result.output and "1 refused" in result.output, result.output
    landed = rows(db_url, "SELECT path, global_step FROM checkpoints ORDER BY global_step")
    assert [(r["path"], r["global_step"]) for r in landed] == [(str(good[0]), 10),
                                                               (str(good[1]), 20)]  # fmt: skip
    refused = rejected_lines()
    assert len(refused) == 1
    assert json.loads(refused[0]["event"])["path"] == str(huge)
    assert "out of range" in refused[0]["reason"] and "\n" not in refused[0]["reason"]
    assert refused[0]["reason"].endswith("(step 3000000000 is beyond the database's integer)")
    refusal_logs = [r.getMessage() for r in caplog.records if "refused" in r.getMessage()]
    assert len(refusal_logs) == 1 and str(huge) in refusal_logs[0]
    assert "\n" not in refusal_logs[0] and "Traceback" not in result.output
    # backfilled again: refused again, said to be kept already, and kept once
    caplog.clear()
    again = CliRunner().invoke(cli, ["--database-url", db_url, "watch", "--once", str(out)])
    assert again.exit_code == 1 and "1 refused" in again.output, again.output
    refusal_logs = [r.getMessage() for r in caplog.records if "refused" in r.getMessage()]
    assert len(refusal_logs) == 1 and "(already kept in " in refusal_logs[0]
    assert len(rejected_lines()) == 1
    # `record` of the folder: the refused file said once (its reason logged, then the
    # count), the others recorded already and left alone
    recorded = CliRunner().invoke(cli, ["--database-url", db_url, "record", str(out)])
    assert recorded.exit_code == 1, recorded.output
    assert "1 file refused by the database, not recorded" in recorded.output
    assert "already recorded" in recorded.output and "rejected " not in recorded.output
    assert len(rejected_lines()) == 1


def test_api_run_name_with_nul_is_recorded(db_url: str) -> None:
    """start_run("a\\x00b") used to drop every event of the run with tracebacks."""
    import lora_tracker

    run = lora_tracker.start_run("nul\x00run", config={"note": "x\x00y"}, database_url=db_url)
    run.log_epoch(1, loss=0.5)
    run.finish()
    assert run.flush(30)
    found = rows(db_url, "SELECT run_name, status, config FROM training_runs")
    assert [(r["run_name"], r["status"]) for r in found] == [("nulrun", "completed")]
    assert found[0]["config"]["note"] == "x\\u0000y"
    assert rows(db_url, "SELECT loss FROM epoch_results")[0]["loss"] == 0.5


def test_api_event_the_database_refuses_goes_to_rejected(db_url: str) -> None:
    """An API event no retry can land is kept in rejected.jsonl; the others land."""
    import lora_tracker

    run = lora_tracker.start_run("refused_epoch", database_url=db_url)
    run.log_epoch(-3, loss=0.1)  # epoch_number >= 0
    run.log_epoch(1, loss=0.2)
    run.finish()
    assert run.flush(30)
    assert [r["epoch_number"] for r in rows(db_url, "SELECT epoch_number FROM epoch_results")] == [
        1
    ]
    refused = rejected_lines()
    assert len(refused) == 1 and "epoch_number" in refused[0]["reason"]
    assert json.loads(refused[0]["event"])["epoch"] == -3


# -- the spool survives a torn write ---------------------------------------------------------


def test_append_after_a_torn_line_starts_a_new_line(tmp_path: Path, db_url: str) -> None:
    """A crash mid-write leaves a fragment: the next event is not glued onto it."""
    proxy = Proxy(proxy_target(db_url))
    url = proxied(db_url, proxy)
    KohyaRun(tmp_path, epochs=2, save_last_n=None, samples_per_epoch=0).run()
    spool_dir().mkdir(parents=True)
    (spool_dir() / "events.jsonl").write_text('{"kind": "checkpoint", "path": "/cut')  # torn
    result = CliRunner().invoke(cli, ["--database-url", url, "record", str(tmp_path)])
    assert "2 events kept in the spool" in result.output
    assert Spool(spool_dir()).pending() == 3  # the fragment, now closed, and two events
    status = CliRunner().invoke(cli, ["--database-url", url, "db", "status"])
    assert "3 events waiting" in status.output
    synced = CliRunner().invoke(cli, ["--database-url", db_url, "sync"])
    assert "Replayed 2 events, 0 still waiting, 1 rejected" in synced.output
    assert synced.exit_code == 1  # (the torn line set aside: said, as a refused file is)
    assert "1 event set aside, not recorded" in synced.output
    assert rows(db_url, "SELECT count(*) AS n FROM checkpoints")[0]["n"] == 2
    assert [r["event"] for r in rejected_lines()] == ['{"kind": "checkpoint", "path": "/cut']


def test_repeated_sync_while_down_rejects_a_torn_line_once(tmp_path: Path, db_url: str) -> None:
    proxy = Proxy(proxy_target(db_url))
    url = proxied(db_url, proxy)
    KohyaRun(tmp_path, epochs=1, save_last_n=None, samples_per_epoch=0).run()
    CliRunner().invoke(cli, ["--database-url", url, "record", str(tmp_path)])
    with open(spool_dir() / "events.jsonl", "a") as handle:
        handle.write('{"kind": "sampl')  # a crash mid-append
    for _ in range(3):
        result = CliRunner().invoke(cli, ["--database-url", url, "sync"])
        assert result.exit_code == 1
        assert "1 event still waiting" in result.output
    assert len(rejected_lines()) == 1
    status = CliRunner().invoke(cli, ["--database-url", url, "db", "status"])
    assert "1 event waiting" in status.output


# -- a full disk ------------------------------------------------------------------------------


@pytest.fixture
def tiny_disk(tmp_path: Path) -> Iterator[Path]:
    """A 4 MiB tmpfs: real ENOSPC, no mocked write."""
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a tmpfs needs root")
    mount = tmp_path / "tiny"
    mount.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mount)], capture_output=True
    )
    if done.returncode != 0:
        if os.environ.get("CI"):
            pytest.fail(f"cannot mount a tmpfs: {done.stderr.decode().strip()}")
        pytest.skip(f"cannot mount a tmpfs: {done.stderr.decode().strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def fill(folder: Path) -> None:
    """Fill the disk up to the last byte."""
    try:
        with open(folder / "filler", "ab") as handle:
            while True:
                handle.write(b"\0" * 4096)
                handle.flush()
    except OSError:
        pass
    try:
        with open(folder / "filler", "ab") as handle:  # the last few bytes
            while True:
                handle.write(b"\0")
                handle.flush()
    except OSError:
        pass


def test_full_disk_while_the_database_is_down(
    tmp_path: Path,
    db_url: str,
    tiny_disk: Path,
    monkeypatch: pytest.MonkeyPatch,
    start_watcher: Callable[..., Watcher],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Nothing can be spooled: the watcher says so once, keeps watching, and records the
    files once the database is back; `sync` on the full disk is one line."""
    monkeypatch.setenv("LORA_TRACKER_HOME", str(tiny_disk / "home"))
    proxy = Proxy(proxy_target(db_url))
    url = proxied(db_url, proxy)
    out = tmp_path / "out"
    out.mkdir()
    (tiny_disk / "home" / "spool").mkdir(parents=True)
    fill(tiny_disk)
    caplog.set_level("INFO")
    watcher = start_watcher(out, url, retry_s=0.05)
    sim = KohyaRun(out, epochs=3, save_last_n=None, samples_per_epoch=0)
    sim.run(pause=0.2)
    wait_for(lambda: len(watcher._unsaved) == 3)
    assert not (tiny_disk / "home" / "spool" / "events.jsonl").exists() or (
        Spool(tiny_disk / "home" / "spool").pending() == 0
    )
    spool_errors = [r for r in caplog.records if "cannot write the spool" in r.getMessage()]
    assert len(spool_errors) == 1

    synced = CliRunner().invoke(cli, ["--database-url", url, "sync"])
    assert synced.exit_code in (0, 1) and "Traceback" not in synced.output

    proxy.up()
    try:
        watcher._last_replay = 0.0
        watcher.schedule("/nonexistent-wakeup.safetensors")
        wait_for(lambda: rows(db_url, "SELECT count(*) AS n FROM checkpoints")[0]["n"] == 3, 30)
        assert rows(db_url, "SELECT count(*) AS n FROM training_runs")[0]["n"] == 1
        assert watcher._unsaved == []
    finally:
        watcher.stop()
        proxy.down()


def test_sync_on_a_full_disk_is_one_line_and_loses_nothing(
    tmp_path: Path, db_url: str, tiny_disk: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Replay applies what it can; when the spool cannot be rewritten, one line says so,
    and the next sync (disk freed) lands each event exactly once."""
    monkeypatch.setenv("LORA_TRACKER_HOME", str(tiny_disk / "home"))
    proxy = Proxy(proxy_target(db_url))
    url = proxied(db_url, proxy)
    KohyaRun(tmp_path, epochs=3, save_last_n=None, samples_per_epoch=0).run()
    CliRunner().invoke(cli, ["--database-url", url, "record", str(tmp_path)])
    spool = Spool(tiny_disk / "home" / "spool")
    assert spool.pending() == 3
    # one event the database refuses, so replay must rewrite the spool with what is left
    lines = spool.path.read_text().splitlines()
    bad = json.loads(lines[1])
    bad["epoch"] = -1
    spool.path.write_text("".join(line + "\n" for line in [lines[0], json.dumps(bad), lines[2]]))
    fill(tiny_disk)
    result = subprocess.run(
        [sys.executable, "-m", "lora_tracker", "--database-url", db_url, "sync"],
        capture_output=True,
        text=True,
        env=os.environ.copy(),
        timeout=60,
    )
    assert "Traceback" not in result.stderr, result.stderr
    assert result.returncode == 1
    said = result.stderr.strip().splitlines()  # the refusal, with its reason; the error
    assert len(said) == 2 and "No space left on device" in said[1], result.stderr
    assert said[0].startswith("refused ") and "epoch_number >= 0" in said[0]
    (tiny_disk / "filler").unlink()
    again = CliRunner().invoke(cli, ["--database-url", db_url, "sync"])
    assert "Traceback" not in again.output
    assert rows(db_url, "SELECT count(*) AS n FROM checkpoints")[0]["n"] == 2
    assert rows(db_url, "SELECT count(*) AS n FROM applied_events")[0]["n"] == 2
    assert spool.pending() == 0


# -- a deleted run stays deleted --------------------------------------------------------------


def test_deleted_run_is_not_resurrected(tmp_path: Path, db_url: str) -> None:
    out = tmp_path / "out"
    KohyaRun(out, epochs=2, save_last_n=None).run()
    runner = CliRunner()
    assert (
        runner.invoke(cli, ["--database-url", db_url, "watch", "--once", str(out)]).exit_code == 0
    )
    deleted = runner.invoke(
        cli, ["--database-url", db_url, "cleanup", "--older-than", "0d", "--yes"]
    )
    assert deleted.exit_code == 0, deleted.output
    assert "Files on disk stay" in deleted.output  # and what goes, as `delete` says it:
    assert "2 checkpoint file records" in deleted.output, deleted.output
    assert rows(db_url, "SELECT count(*) AS n FROM training_runs")[0]["n"] == 0

    again = runner.invoke(cli, ["--database-url", db_url, "watch", "--once", str(out)])
    assert again.exit_code == 0
    assert "2 of deleted runs left out" in again.output
    assert rows(db_url, "SELECT count(*) AS n FROM training_runs")[0]["n"] == 0
    # a watcher that sees the file again live leaves it out too
    delivery = EventDelivery(db_url)
    try:
        event = observe_checkpoint(out / "pixelbaby-000001.safetensors")
        assert delivery.submit(event)[0] == "deleted"
    finally:
        delivery.close()

    forced = runner.invoke(cli, ["--database-url", db_url, "record", "--force", str(out)])
    assert forced.exit_code == 0, forced.output
    assert (
        rows(db_url, "SELECT count(*) AS n FROM epoch_results WHERE checkpoint_path IS NOT NULL")[
            0
        ]["n"]
        == 2
    )

    # a new training into the same folder (new files) is a new run, never left out
    runner.invoke(cli, ["--database-url", db_url, "cleanup", "--older-than", "0d", "--yes"])
    time.sleep(0.01)
    KohyaRun(out, epochs=2, save_last_n=None, session=4242).run()
    fresh = runner.invoke(cli, ["--database-url", db_url, "watch", "--once", str(out)])
    assert "2 recorded" in fresh.output, fresh.output


# -- a watcher left alone with poison beside it -----------------------------------------------


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@pytest.mark.slow  # measures the idle CPU over 12 s
@pytest.mark.parametrize("server", ["embedded"], indirect=True)
def test_lone_watcher_with_poison_files_stays_idle(tmp_path: Path, db_url: str) -> None:
    """A refused file, a NUL file, a torn file and a corrupt one beside good ones: the
    start-up scan records the good ones, "Watching" is printed, and for 12 s (the torn
    file retried at its back-off meanwhile) the watcher uses under 5% of a core and writes
    under 20 log lines."""
    out = tmp_path / "out"
    KohyaRun(out, epochs=2, save_last_n=None, samples_per_epoch=1).run()
    poison_checkpoint(out / "nul-000001.safetensors", ss_output_name="n\x00ul", ss_session_id="5")
    poison_checkpoint(
        out / "big-000001.safetensors", ss_output_name=os.urandom(6000).hex(), ss_session_id="6"
    )
    payload = checkpoint_bytes(sd15_metadata("torn", 8, 1731146400.0), 8, seed=3)
    (out / "torn-000001.safetensors").write_bytes(payload[: len(payload) // 2])
    (out / "corrupt-000001.safetensors").write_bytes(b"\xff" * 64)
    log = tmp_path / "watch.log"
    with open(log, "w") as handle:
        proc = subprocess.Popen(
            [sys.executable, "-m", "lora_tracker", "--database-url", db_url, "watch", str(out)],
            stdout=handle,
            stderr=subprocess.STDOUT,
            env=os.environ.copy(),
        )
        try:
            wait_for(lambda: "Watching" in log.read_text() or proc.poll() is not None, 60)
            assert proc.poll() is None, log.read_text()
            time.sleep(2)  # the torn file's first retries
            before, started = cpu_seconds(proc.pid), time.monotonic()
            time.sleep(12)
            used = (cpu_seconds(proc.pid) - before) / (time.monotonic() - started)
        finally:
            proc.send_signal(2)
            proc.wait(30)
    text = log.read_text()
    print(f"lone watcher: {used:.2%} of a core, {len(text.splitlines())} log lines")
    assert used < 0.05, f"{used:.1%} of a core\n{text}"
    assert len(text.splitlines()) < 20, text
    assert "Traceback" not in text
    runs = {r["run_name"] for r in rows(db_url, "SELECT run_name FROM training_runs")}
    assert len(runs) == 2 and any(name.startswith("nul_") for name in runs)
    assert len(rejected_lines()) == 1


# -- a folder that cannot be read -------------------------------------------------------------

WITHOUT_ROOT_READ = [
    "setpriv",
    "--inh-caps=-dac_override,-dac_read_search",
    "--bounding-set=-dac_override,-dac_read_search",
    "--",
]


@pytest.mark.parametrize("server", ["pg15"], indirect=True)
def test_unreadable_folder_is_one_line_and_read_later(tmp_path: Path, db_url: str) -> None:
    """A folder the watcher may not read is one line; once its permissions allow, its
    files are recorded. (As root, the watcher runs without the capability to read
    everything, so permissions apply to it as to any user.)"""
    if os.geteuid() != 0 or shutil.which("setpriv") is None:
        pytest.skip("needs root and setpriv to drop the read-anything capability")
    out = tmp_path / "out"
    KohyaRun(out, epochs=1, save_last_n=None, samples_per_epoch=0).run()
    locked = out / "later"
    KohyaRun(locked, output_name="later", epochs=1, save_last_n=None, samples_per_epoch=0,
             session=99).run()  # fmt: skip
    locked.chmod(0)
    log = tmp_path / "watch.log"
    home = tmp_path / "home"
    home.mkdir()
    command = [sys.executable, "-m", "lora_tracker", "--database-url", db_url, "watch", str(out)]
    with open(log, "w") as handle:
        proc = subprocess.Popen(
            WITHOUT_ROOT_READ + command,
            stdout=handle,
            stderr=subprocess.STDOUT,
            env={**os.environ, "LORA_TRACKER_HOME": str(home)},
        )
        try:
            wait_for(lambda: "Watching" in log.read_text() or proc.poll() is not None, 60)
            assert proc.poll() is None, log.read_text()
            assert rows(db_url, "SELECT count(*) AS n FROM checkpoints")[0]["n"] == 1
            locked.chmod(0o755)
            wait_for(lambda: rows(db_url, "SELECT count(*) AS n FROM checkpoints")[0]["n"] == 2)
        finally:
            locked.chmod(0o755)
            proc.send_signal(2)
            proc.wait(30)
    text = log.read_text()
    assert "Traceback" not in text, text
    assert len([line for line in text.splitlines() if "cannot read" in line]) == 1, text


# -- the spool remembers which database an event is for --------------------------------------


def test_events_spooled_for_a_database_wait_for_it(
    tmp_path: Path, db_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Events spooled while a shared database was down are not replayed into the embedded
    one by a plain `sync`; they land once in their own database."""
    proxy = Proxy(proxy_target(db_url))
    url = proxied(db_url, proxy)  # same database, through a proxy that is down
    KohyaRun(tmp_path, epochs=2, save_last_n=None, samples_per_epoch=0).run()
    CliRunner().invoke(cli, ["--database-url", url, "record", str(tmp_path)])
    assert Spool(spool_dir()).pending() == 2
    caplog.clear()
    plain = CliRunner().invoke(cli, ["sync"])  # no URL: the embedded database of the folder
    assert plain.exit_code == 0, plain.output
    assert "2 events waiting are for another database" in plain.output
    assert "database unavailable" not in caplog.text  # it answered: nothing was down
    assert Spool(spool_dir()).pending() == 2
    synced = CliRunner().invoke(cli, ["--database-url", db_url, "sync"])
    assert "Replayed 2 events, 0 still waiting" in synced.output
    assert rows(db_url, "SELECT count(*) AS n FROM checkpoints")[0]["n"] == 2


def test_a_deleted_copy_leaves_the_epoch_on_disk(tmp_path: Path, db_url: str) -> None:
    """A run's folder copied and watched, then the copy deleted: the epochs still point at
    a file that exists."""
    out = tmp_path / "out"
    KohyaRun(out, epochs=2, save_last_n=None, samples_per_epoch=0).run()
    runner = CliRunner()
    runner.invoke(cli, ["--database-url", db_url, "watch", "--once", str(out)])
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    runner.invoke(cli, ["--database-url", db_url, "watch", "--once", str(copy)])
    assert rows(db_url, "SELECT count(*) AS n FROM training_runs")[0]["n"] == 1
    shutil.rmtree(copy)
    runner.invoke(cli, ["--database-url", db_url, "watch", "--once", str(copy.parent)])
    epochs = rows(
        db_url, "SELECT checkpoint_path, checkpoint_on_disk FROM epoch_results ORDER BY 1"
    )
    assert len(epochs) == 2
    assert all(e["checkpoint_on_disk"] for e in epochs), epochs
    assert all(Path(e["checkpoint_path"]).exists() for e in epochs), epochs


def test_a_deadlock_during_replay_keeps_the_event_for_next_time(
    tmp_path: Path, db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A replayed event that meets a deadlock (another writer) is neither lost nor refused:
    the replay stops there and the next one lands it. (PostgreSQL's deadlock error is raised
    here at the moment capture would meet it; a real one cannot be timed in a test.)"""
    import psycopg

    from lora_tracker.capture import delivery

    proxy = Proxy(proxy_target(db_url))
    KohyaRun(tmp_path, epochs=2, save_last_n=None, samples_per_epoch=0).run()
    CliRunner().invoke(cli, ["--database-url", proxied(db_url, proxy), "record", str(tmp_path)])
    assert Spool(spool_dir()).pending() == 2
    real = delivery.apply_event  # type: ignore[attr-defined]

    def deadlocked(*args: object, **kwargs: object) -> object:
        raise psycopg.errors.DeadlockDetected("deadlock detected")

    monkeypatch.setattr(delivery, "apply_event", deadlocked)
    blocked = CliRunner().invoke(cli, ["--database-url", db_url, "sync"])
    assert blocked.exit_code == 1 and "2 events still waiting" in blocked.output, blocked.output
    assert Spool(spool_dir()).pending() == 2 and rejected_lines() == []
    monkeypatch.setattr(delivery, "apply_event", real)
    synced = CliRunner().invoke(cli, ["--database-url", db_url, "sync"])
    assert "Replayed 2 events, 0 still waiting" in synced.output
    assert rows(db_url, "SELECT count(*) AS n FROM checkpoints")[0]["n"] == 2


def test_a_deleted_runs_files_are_said_once_a_run(
    tmp_path: Path, db_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Watching a folder again after its run was deleted says so in one line for the run
    (how many files, which run, how to record one again), not one line a file."""
    import logging

    out = tmp_path / "out"
    KohyaRun(out, epochs=3, save_last_n=None).run()
    runner = CliRunner()
    assert (
        runner.invoke(cli, ["--database-url", db_url, "watch", "--once", str(out)]).exit_code == 0
    )
    [run] = rows(db_url, "SELECT run_name, output_name FROM training_runs")
    deleted = runner.invoke(cli, ["--database-url", db_url, "delete", run["run_name"], "--yes"])
    assert deleted.exit_code == 0, deleted.output
    caplog.set_level(logging.INFO, logger="lora_tracker")
    stats = backfilled(out, db_url)
    assert (stats.deleted, stats.recorded) == (3, 0)
    said = [r.getMessage() for r in caplog.records if "left out" in r.getMessage()]
    assert said == [
        f"left out 3 checkpoint files of {run['output_name']} in {out}: deleted with their run "
        "(`lora-tracker record --force FILE` records one again)"
    ], said


def test_connect_ahead_makes_one_connection_and_says_a_failure_once(db_url: str) -> None:
    """`Database.connect_ahead` (what `watch` does while it imports the capture stack):
    the first `connect` gets the connection the thread made, not a second one; a database
    that cannot be reached is said by that `connect`, once, without a second attempt, and
    the one after tries again."""
    import psycopg

    from lora_tracker.db import Database
    from lora_tracker.errors import DatabaseUnavailable

    database = Database(db_url)
    database.connect_ahead()
    conn = database.connect()
    assert database.connect() is conn
    with psycopg.connect(db_url) as other:
        mine = other.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'lora-tracker' "
            "AND pid = %s",
            (conn.info.backend_pid,),
        ).fetchone()
        assert mine == (1,)
    database.close()

    refused = Database("postgresql://lora:secret-pw@127.0.0.1:9/lora_tracker")
    refused.connect_ahead()
    started = time.monotonic()
    with pytest.raises(DatabaseUnavailable, match="Connection refused") as said:
        refused.connect()
    assert "secret-pw" not in str(said.value)
    assert time.monotonic() - started < 2
    with pytest.raises(DatabaseUnavailable):  # tried again, not the old failure kept
        refused.connect()
