"""`lora-tracker watch --images DIR`: rendered test images linked live, through the same
delivery as checkpoints (spooled while the database is away, applied exactly once), and a
bad image never stops the watcher."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

from click.testing import CliRunner

from lora_tracker.capture.delivery import EventDelivery
from lora_tracker.capture.events import observe_checkpoint
from lora_tracker.capture.watcher import Watcher
from lora_tracker.cli import cli
from lora_tracker.images.lora_hash import a1111_lora_hash
from lora_tracker.spool import Spool

from .conftest import proxied, proxy_target, rows, wait_for
from .image_makers import a1111_infotext, a1111_png, comfyui_graph, comfyui_png
from .kohya_sim import KohyaRun
from .netproxy import Proxy

PROMPT = "a knight in silver armour, pixel art"


def _captured(tmp_path: Path, db_url: str, epochs: int = 2) -> KohyaRun:
    run = KohyaRun(tmp_path / "train", output_name="knight", epochs=epochs, save_last_n=None,
                   samples_per_epoch=0)  # fmt: skip
    for epoch in range(1, epochs + 1):
        run.save_epoch(epoch)
    delivery = EventDelivery(db_url)
    try:
        delivery.submit_many([observe_checkpoint(p) for p in run.written])
    finally:
        delivery.close()
    return run


def _a1111(path: Path, run: KohyaRun, epoch: int, seed: int) -> Path:
    short = a1111_lora_hash(run.epoch_path(epoch))[:12]
    text = a1111_infotext(f"{PROMPT} <lora:knight_e{epoch}:1>", seed=seed,
                          lora_hashes={f"knight_e{epoch}": short})  # fmt: skip
    return a1111_png(path, text, seed=seed)


def _linked(db_url: str) -> list[tuple[int, int | None]]:
    found = rows(db_url, """
        SELECT e.epoch_number, ptr.seed FROM prompt_test_results ptr
        JOIN epoch_results e ON e.id = ptr.epoch_result_id ORDER BY 1, 2""")  # fmt: skip
    return [(r["epoch_number"], r["seed"]) for r in found]


def test_images_are_linked_live_and_bad_ones_never_stop_it(
    tmp_path: Path, db_url: str, start_watcher: Callable[..., Watcher]
) -> None:
    run = _captured(tmp_path, db_url)
    images = tmp_path / "outputs"
    images.mkdir()
    _a1111(images / "00000-1.png", run, 1, seed=1)  # before the watcher: the backfill
    watcher = start_watcher(tmp_path / "train", db_url, image_folders=[images],
                            settle_s=0.2)  # fmt: skip
    stats = watcher.backfill_stats
    assert stats is not None and (stats.images, stats.images_linked) == (1, 1)
    assert _linked(db_url) == [(1, 1)]

    def render() -> None:  # as a tool saves them, while the watcher runs
        full = _a1111(tmp_path / "staging.png", run, 2, seed=9).read_bytes()
        (images / "00001-2.png").write_bytes(full[: len(full) // 3])  # truncated for good
        (images / "00002-3.png").write_bytes(b"\x89PNG not really")
        a1111_png(images / "00003-4.png", "", seed=4)  # no metadata
        sub = images / "2025-11-10"
        sub.mkdir()
        _a1111(sub / "00004-5.png", run, 2, seed=5)
        graph = comfyui_graph(PROMPT, "", [("knight-000001.safetensors", 0.5)], seed=6)
        comfyui_png(sub / "ComfyUI_00001_.png", graph)

    writer = threading.Thread(target=render)
    writer.start()
    writer.join()
    wait_for(lambda: _linked(db_url) == [(1, 1), (1, 6), (2, 5)])
    assert watcher.alive
    # a linked image saved again unchanged is not linked twice
    os.utime(images / "2025-11-10" / "00004-5.png")
    time.sleep(1.0)
    assert _linked(db_url) == [(1, 1), (1, 6), (2, 5)]
    weight = rows(db_url, "SELECT lora_weight FROM prompt_test_results WHERE seed = 6")
    assert float(weight[0]["lora_weight"]) == 0.5


def _spool() -> Spool:
    return Spool(Path(os.environ["LORA_TRACKER_HOME"]) / "spool")


def test_images_wait_in_the_spool_and_land_once(tmp_path: Path, db_url: str) -> None:
    """With the database away, image events are spooled; `sync` applies each once, and a
    second `watch --images` over the same folder adds nothing."""
    run = _captured(tmp_path, db_url)
    images = tmp_path / "outputs"
    images.mkdir()
    for seed, epoch in ((1, 1), (2, 2), (3, 2)):
        _a1111(images / f"0000{seed}-{seed}.png", run, epoch, seed=seed)
    down = proxied(db_url, Proxy(proxy_target(db_url)))
    result = CliRunner().invoke(cli, ["--database-url", down, "watch", "--once",
                                      "--images", str(images)])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert _spool().pending() == 3 and _linked(db_url) == []
    synced = CliRunner().invoke(cli, ["--database-url", db_url, "sync"])
    assert "Replayed 3 events, 0 still waiting" in synced.output, synced.output
    assert _linked(db_url) == [(1, 1), (2, 2), (2, 3)]
    again = CliRunner().invoke(cli, ["--database-url", db_url, "watch", "--once",
                                     "--images", str(images)])  # fmt: skip
    assert "3 test images: 3 linked, 0 unmatched, 0 skipped" in again.output, again.output
    applied = rows(db_url, "SELECT count(*) AS n FROM applied_events WHERE kind = 'image'")
    assert applied[0]["n"] == 3
    assert _linked(db_url) == [(1, 1), (2, 2), (2, 3)]


def test_watch_needs_a_folder_or_images(db_url: str) -> None:
    result = CliRunner().invoke(cli, ["--database-url", db_url, "watch", "--once"])
    assert result.exit_code == 2
    assert "give a FOLDER to watch, or --images DIR" in result.output
