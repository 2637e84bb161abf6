"""Who owns an EventDelivery: its creator closes it, a watcher only borrows it, and the kohya
hook's fallback watcher shares the process's one delivery with the API's thread."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from lora_tracker.capture.delivery import EventDelivery
from lora_tracker.capture.events import RunStarted, observe_checkpoint
from lora_tracker.capture.watcher import Watcher
from lora_tracker.integrations.kohya_tracker import KohyaTracker
from lora_tracker.settings import Target, resolve_target
from lora_tracker.tracking import dispatcher

from .conftest import rows
from .kohya_sim import checkpoint_bytes, sd15_metadata


def _checkpoint(path: Path, epoch: int) -> Path:
    meta = sd15_metadata("owned", 7, 1731146400.0) | {"ss_epoch": str(epoch)}
    path.write_bytes(checkpoint_bytes(meta, 4, seed=epoch, pairs=1))
    return path


def test_a_stopped_watcher_leaves_its_delivery_open(
    tmp_path: Path, db_url: str, no_thread_leak: None
) -> None:
    """Stopping a watcher does not close the delivery it was given: its creator still
    delivers through the same connection, and closes it."""
    out = tmp_path / "out"
    out.mkdir()
    _checkpoint(out / "owned-000001.safetensors", 1)
    delivery = EventDelivery(db_url)
    try:
        watcher = Watcher([out], delivery)
        watcher.start()
        assert watcher.wait_backfilled(30) is not None
        watcher.stop()
        connection = delivery._db  # opened by the backfill
        assert connection is not None
        later = observe_checkpoint(_checkpoint(out / "owned-000002.safetensors", 2))
        assert delivery.submit(later)[0] == "recorded"
        assert delivery._db is connection  # the same connection, never closed by stop()
    finally:
        delivery.close()
    assert delivery._db is None
    epochs = rows(db_url, "SELECT epoch_number FROM epoch_results ORDER BY 1")
    assert [e["epoch_number"] for e in epochs] == [1, 2]


def test_the_kohya_fallback_watcher_shares_the_process_delivery(
    tmp_path: Path, db_url: str, monkeypatch: pytest.MonkeyPatch, no_thread_leak: None
) -> None:
    """The kohya hook's fallback watcher delivers through the API thread's delivery for the
    same database, and stopping it leaves that delivery to the dispatcher."""
    monkeypatch.setenv("LORA_TRACKER_DATABASE_URL", db_url)
    target = resolve_target()
    shared = dispatcher().delivery(target)
    tracker = KohyaTracker()
    tracker.output_dir = str(tmp_path / "out")
    try:
        tracker.start_fallback_watcher()
        watcher = tracker.fallback_watcher
        assert watcher is not None
        assert watcher.delivery is shared
        assert watcher.wait_backfilled(30) is not None
        watcher.stop()
        assert shared._db is not None  # still open: the dispatcher closes it at exit
        assert shared.submit(RunStarted(run_key="hook:shared", fields={}))[0] == "recorded"
    finally:
        if tracker.fallback_watcher is not None:
            tracker.fallback_watcher.stop()
        shared.close()
    assert dispatcher().delivery(resolve_target()) is shared  # one per process and target


def test_spooling_at_exit_does_not_wait_for_a_busy_delivery(tmp_path: Path) -> None:
    """While another thread is stuck delivering (a hanging database), ``keep`` still puts
    events in the spool at once: the exit of a training script stays bounded."""
    url = "postgresql://u:p@127.0.0.1:1/none"
    delivery = EventDelivery(target=Target(url, "--database-url", tmp_path / "home"))
    busy = threading.Event()
    release = threading.Event()

    def stuck_worker() -> None:
        with delivery._turn:  # what submit_many holds while the database hangs
            busy.set()
            release.wait(10)

    worker = threading.Thread(target=stuck_worker)
    worker.start()
    try:
        assert busy.wait(5)
        start = time.monotonic()
        kept = delivery.keep([RunStarted(run_key="hook:late", fields={})])
        assert time.monotonic() - start < 2
        assert kept == ["spooled"]
        assert delivery.pending() == 1
    finally:
        release.set()
        worker.join(10)
        delivery.close()
