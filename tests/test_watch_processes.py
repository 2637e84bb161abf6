"""`lora-tracker watch` as real processes: two at once, kill -9 and restart, clean stops."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from .conftest import rows, wait_for
from .kohya_sim import KohyaRun


class WatchProcess:
    def __init__(self, url: str, folder: Path, log: Path) -> None:
        self.log = log
        self.handle = open(log, "w")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "lora_tracker", "--database-url", url, "watch", str(folder)],
            stdout=self.handle,
            stderr=subprocess.STDOUT,
            env=os.environ.copy(),
        )
        wait_for(lambda: "Watching" in self.log.read_text() or self.proc.poll() is not None, 60)
        assert self.proc.poll() is None, self.log.read_text()

    def stop(self, sig: int = signal.SIGTERM) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        code = self.proc.wait(30)
        self.handle.close()
        return code


@pytest.fixture
def watchers() -> Iterator[list[WatchProcess]]:
    started: list[WatchProcess] = []
    yield started
    for process in started:
        if process.proc.poll() is None:
            process.stop(signal.SIGKILL)


def counts(url: str) -> dict[str, int]:
    found = rows(
        url,
        "SELECT (SELECT count(*) FROM training_runs) AS runs, "
        "(SELECT count(*) FROM epoch_results) AS epochs, "
        "(SELECT count(*) FROM checkpoints) AS files, "
        "(SELECT count(*) FROM checkpoints WHERE NOT on_disk) AS removed",
    )[0]
    return {k: int(v) for k, v in found.items()}


def test_two_watchers_one_folder_no_duplicates(
    tmp_path: Path, db_url: str, watchers: list[WatchProcess]
) -> None:
    """Two daemons on the same folder record each checkpoint once."""
    out = tmp_path / "out"
    out.mkdir()
    watchers.append(WatchProcess(db_url, out, tmp_path / "a.log"))
    watchers.append(WatchProcess(db_url, out, tmp_path / "b.log"))
    KohyaRun(out, epochs=5, save_last_n=2, chunks=3, chunk_delay=0.02).run(pause=0.3)
    wait_for(lambda: counts(db_url) == {"runs": 1, "epochs": 5, "files": 5, "removed": 2}, 30)
    time.sleep(1.0)  # let both finish whatever they still had queued
    assert counts(db_url) == {"runs": 1, "epochs": 5, "files": 5, "removed": 2}
    for process in watchers:
        assert process.stop() == 0
        assert "Stopped." in process.log.read_text()


def test_kill_9_and_restart_catches_up(
    tmp_path: Path, db_url: str, watchers: list[WatchProcess]
) -> None:
    """A daemon killed mid-run catches up on restart, with no duplicates."""
    out = tmp_path / "out"
    out.mkdir()
    first = WatchProcess(db_url, out, tmp_path / "first.log")
    watchers.append(first)
    sim = KohyaRun(out, epochs=6, save_last_n=2)
    sim.save_epoch(1)
    sim.save_epoch(2)
    wait_for(lambda: counts(db_url)["files"] == 2)
    first.stop(signal.SIGKILL)
    for epoch in (3, 4, 5, 6):  # removes epochs 1, 2 and 3 while nobody watches
        sim.save_epoch(epoch)
    second = WatchProcess(db_url, out, tmp_path / "second.log")
    watchers.append(second)
    # epoch 3 was saved and deleted while nobody watched: its samples still make a row
    wait_for(lambda: counts(db_url) == {"runs": 1, "epochs": 6, "files": 5, "removed": 2}, 30)
    log = second.log.read_text()
    assert "3 checkpoints found: 3 recorded" in log and "2 marked removed" in log
    on_disk = rows(
        db_url, "SELECT epoch_number FROM epoch_results WHERE checkpoint_on_disk ORDER BY 1"
    )
    assert [r["epoch_number"] for r in on_disk] == [4, 5, 6]
    assert second.stop() == 0


def test_sigint_stops_cleanly(tmp_path: Path, db_url: str, watchers: list[WatchProcess]) -> None:
    """Ctrl-C (SIGINT) stops the daemon with exit 0 and no traceback."""
    process = WatchProcess(db_url, tmp_path, tmp_path / "w.log")
    watchers.append(process)
    assert process.stop(signal.SIGINT) == 0
    text = process.log.read_text()
    assert "Traceback" not in text and "Stopped." in text
