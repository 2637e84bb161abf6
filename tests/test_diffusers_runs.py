"""diffusers trainings (tests/diffusers_sim.py, train_text_to_image_lora.py's layout) with
the Python API and the watcher: one run per training, re-runs into a used folder, both
arrival orders, removals by --checkpoints_total_limit."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

import lora_tracker
from lora_tracker.cli import cli

from .conftest import proxied, proxy_target, rows
from .diffusers_sim import DiffusersRun
from .netproxy import Proxy

CKPT = "pytorch_lora_weights.safetensors"


def _watch_once(url: str, folder: Path) -> None:
    result = CliRunner().invoke(cli, ["--database-url", url, "watch", "--once", str(folder)])
    assert result.exit_code == 0, result.output


def _train_with_api(sim: DiffusersRun, name: str | None, url: str) -> Path:
    """The script with the README's calls added: start_run(config=args) before the loop,
    log_epoch with the checkpoint saved at the epoch's end, the with-block finishing."""
    with lora_tracker.start_run(name, sim.args(), output_dir=str(sim.out), database_url=url) as run:
        sim.init_trackers()
        for epoch in range(1, sim.epochs + 1):
            saved = None
            for step in range(
                (epoch - 1) * sim.steps_per_epoch + 1, epoch * sim.steps_per_epoch + 1
            ):
                if step % sim.checkpointing_steps == 0:
                    saved = sim.checkpoint(step)
            run.log_epoch(epoch, loss=0.5 / epoch, checkpoint_path=saved)
            run.flush(30)  # an epoch takes minutes: the file is read before the next one
        final = sim.final()
    assert run.flush(30)
    return final


def _runs(url: str) -> list[dict[str, Any]]:
    return rows(url, "SELECT * FROM training_runs ORDER BY id")


def _files(url: str, run_id: int) -> list[tuple[str, str, int | None, bool, bool]]:
    found = rows(
        url,
        "SELECT path, kind, epoch_number, epoch_result_id IS NOT NULL AS linked, on_disk "
        "FROM checkpoints WHERE training_run_id = %s ORDER BY global_step, kind",
        (run_id,),
    )
    return [
        ("/".join(Path(f["path"]).parts[-2:]), f["kind"], f["epoch_number"], f["linked"],
         f["on_disk"])
        for f in found
    ]  # fmt: skip


@pytest.mark.parametrize("hparams", [True, False], ids=["tensorboard", "no-hparams"])
def test_watcher_two_trainings_into_one_folder(tmp_path: Path, db_url: str, hparams: bool) -> None:
    """A second training into a used folder is a second run (a new logs/<time>/hparams.yml,
    or checkpoints restarting at a lower step); the first keeps its rows."""
    out = tmp_path / "sd-model-finetuned-lora"
    DiffusersRun(out, seed=1).run()
    if not hparams:
        shutil.rmtree(out / "logs")
    _watch_once(db_url, out)
    second = DiffusersRun(out, seed=2)
    second.run()
    if not hparams:
        shutil.rmtree(out / "logs")
    _watch_once(db_url, out)
    runs = _runs(db_url)
    assert len(runs) == 2, [r["run_name"] for r in runs]
    first, new = runs
    assert new["total_steps"] == 12 and new["status"] == "completed"
    assert len(_files(db_url, new["id"])) == 4  # the rewritten files are the new run's
    if hparams:
        assert first["config"]["hparams_path"] != new["config"]["hparams_path"]
        old_final = rows(
            db_url, "SELECT checkpoint_on_disk FROM epoch_results WHERE training_run_id = %s",
            (first["id"],),
        )  # fmt: skip
        assert old_final == [{"checkpoint_on_disk": False}]  # its final was overwritten


def test_api_run_alone_with_total_limit(tmp_path: Path, db_url: str) -> None:
    """Without a watcher, the API notices checkpoints --checkpoints_total_limit deleted."""
    sim = DiffusersRun(tmp_path / "out", total_limit=2, hub_token="hf_tok_NOTSTORED")
    _train_with_api(sim, "api-alone", db_url)
    (run,) = _runs(db_url)
    assert (run["run_name"], run["status"], run["network_dim"], run["num_epochs"]) == (
        "api-alone", "completed", 4, 3,
    )  # fmt: skip
    assert run["config"]["hub_token"] == "***"
    assert _files(db_url, run["id"]) == [
        ("checkpoint-4/" + CKPT, "epoch", 1, True, False),
        ("checkpoint-8/" + CKPT, "epoch", 2, True, True),
        ("checkpoint-12/" + CKPT, "epoch", 3, True, True),
    ]
    epochs = rows(db_url, "SELECT epoch_number, loss, checkpoint_on_disk FROM epoch_results "
                          "ORDER BY epoch_number")  # fmt: skip
    assert epochs == [
        {"epoch_number": 1, "loss": 0.5, "checkpoint_on_disk": False},
        {"epoch_number": 2, "loss": 0.25, "checkpoint_on_disk": True},
        {"epoch_number": 3, "loss": 0.5 / 3, "checkpoint_on_disk": True},
    ]


def test_api_rerun_into_used_folder_is_a_new_run(tmp_path: Path, db_url: str) -> None:
    """A second start_run into the same folder, with a new name, is that new run."""
    out = tmp_path / "out"
    _train_with_api(DiffusersRun(out, seed=1), "first-try", db_url)
    _train_with_api(DiffusersRun(out, seed=2), "second-try", db_url)
    runs = _runs(db_url)
    assert [(r["run_name"], r["status"]) for r in runs] == [
        ("first-try", "completed"), ("second-try", "completed"),
    ]  # fmt: skip
    counts = rows(db_url, "SELECT training_run_id, count(*) AS n FROM epoch_results "
                          "GROUP BY 1 ORDER BY 1")  # fmt: skip
    assert [c["n"] for c in counts] == [3, 3]


@pytest.mark.parametrize("order", ["api-first", "watcher-first"])
def test_api_and_watcher_side_by_side(
    tmp_path: Path, db_url: str, order: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Whichever arrives first: the API's run and name, epochs linked to their checkpoint
    files, the final file the last epoch (never epoch 1), removals marked on the epoch."""
    sim = DiffusersRun(tmp_path / "sd-model-finetuned-lora", total_limit=2)
    if order == "api-first":
        _train_with_api(sim, "api-named", db_url)
        _watch_once(db_url, sim.out)
    else:  # the API's events wait in its spool while the watcher records the files
        api_home = tmp_path / "api-home"
        monkeypatch.setenv("LORA_TRACKER_HOME", str(api_home))
        down = proxied(db_url, Proxy(proxy_target(db_url)))
        _train_with_api(sim, "api-named", down)
        monkeypatch.setenv("LORA_TRACKER_HOME", str(tmp_path / "watch-home"))
        _watch_once(db_url, sim.out)
        assert _runs(db_url)[0]["run_name"] != "api-named"
        result = CliRunner().invoke(
            cli, ["--database-url", db_url, "sync"], env={"LORA_TRACKER_HOME": str(api_home)}
        )
        assert result.exit_code == 0, result.output
    (run,) = _runs(db_url)
    assert (run["run_name"], run["status"], run["num_epochs"]) == ("api-named", "completed", 3)
    assert _files(db_url, run["id"]) == [
        ("checkpoint-4/" + CKPT, "epoch", 1, True, False),
        ("checkpoint-8/" + CKPT, "epoch", 2, True, True),
        ("checkpoint-12/" + CKPT, "epoch", 3, True, True),
        ("sd-model-finetuned-lora/" + CKPT, "final", 3, True, True),
    ]
    epochs = rows(db_url, "SELECT epoch_number, loss, checkpoint_on_disk, checkpoint_path "
                          "FROM epoch_results ORDER BY epoch_number")  # fmt: skip
    assert [(e["epoch_number"], e["loss"], e["checkpoint_on_disk"]) for e in epochs] == [
        (1, 0.5, False), (2, 0.25, True), (3, 0.5 / 3, True),
    ]  # fmt: skip
    assert Path(epochs[2]["checkpoint_path"]).name == CKPT
