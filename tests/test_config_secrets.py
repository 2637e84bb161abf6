"""A secret in a captured configuration (hub_token, api keys, a password in a URL) never
reaches the database nor the spool, whichever way the configuration came in."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import pytest

import lora_tracker
from lora_tracker.capture.delivery import EventDelivery
from lora_tracker.capture.events import event_to_json, observe_checkpoint
from lora_tracker.secrets import MASK, is_secret_key, mask_mapping, mask_secrets

from .conftest import proxied, proxy_target, rows
from .kohya_sim import checkpoint_bytes, sd15_metadata
from .netproxy import Proxy
from .test_hooks_kohya import kohya_args, launch

HUB_TOKEN = "hf_SeCrEtHuBtOkEn123"
API_KEY = "wandbKEY987654"
URL_PASSWORD = "urlPW4567"


def _everything_stored(url: str) -> str:
    """Every stored configuration and metadata, as text."""
    found = rows(
        url,
        "SELECT coalesce(tr.config::text, '') || coalesce(tr.checkpoint_metadata::text, '')"
        " || coalesce(string_agg(er.checkpoint_metadata::text, ''), '') AS t"
        " FROM training_runs tr LEFT JOIN epoch_results er ON er.training_run_id = tr.id"
        " GROUP BY tr.id",
    )
    return "".join(r["t"] for r in found)


def _spool_text() -> str:
    spool = Path(os.environ["LORA_TRACKER_HOME"]) / "spool" / "events.jsonl"
    return spool.read_text() if spool.exists() else ""


def test_keys_that_name_a_secret() -> None:
    """Keys naming a secret are masked; look-alikes and harmless values under them stay."""
    for key in ("hub_token", "token", "hf_token", "--hub_token", "wandb_api_key", "apiKey",
                "password", "db_password", "client_secret", "auth", "credentials",
                "aws_secret_access_key", "huggingface_token", "private_key"):  # fmt: skip
        assert is_secret_key(key), key
    for key in ("max_token_length", "tokenizer_name", "author", "output_dir", "keyword",
                "pretrained_model_name_or_path", "learning_rate"):  # fmt: skip
        assert not is_secret_key(key), key
    masked = mask_secrets({
        "hub_token": HUB_TOKEN, "use_auth_token": True, "max_token_length": 225,
        "hub_model_id": None, "nested": {"wandb_api_key": API_KEY},
        "command_line": ["train.py", "--hub_token", HUB_TOKEN, "--lr", "1e-4",
                         f"--wandb_api_key={API_KEY}"],
        "repo": f"https://me:{URL_PASSWORD}@git.example.com/x.git",
    })  # fmt: skip
    assert masked == {
        "hub_token": MASK, "use_auth_token": True, "max_token_length": 225,
        "hub_model_id": None, "nested": {"wandb_api_key": MASK},
        "command_line": ["train.py", "--hub_token", MASK, "--lr", "1e-4",
                         f"--wandb_api_key={MASK}"],
        "repo": f"https://me:{MASK}@git.example.com/x.git",
    }  # fmt: skip


def test_metadata_token_counts_stay() -> None:
    """Checkpoint metadata holds only strings: kohya's ``ss_keep_tokens = "1"`` is a count,
    kept; a token under a key ending in "token(s)", or digits under "password", is masked."""
    assert mask_mapping({
        "ss_keep_tokens": "1", "ss_max_tokens": "225", "hub_token": HUB_TOKEN,
        "api_tokens": "hf_abc", "hub_token_number": "12", "password": "1234",
        "tokens": "hf_x", "ss_keep_tokens_separator": "|||",
    }) == {
        "ss_keep_tokens": "1", "ss_max_tokens": "225", "hub_token": MASK,
        "api_tokens": MASK, "hub_token_number": "12", "password": MASK,
        "tokens": MASK, "ss_keep_tokens_separator": "|||",
    }  # fmt: skip
    # a URL's password masked in any value, a secret key's value whole; "None" and an empty
    # value are no secret; the keys keep their order
    masked = mask_mapping({
        "ss_repo": "https://me:pw@h/x", "note": "see http://host/x", "api_key": "https://me:pw@h",
        "password": "None", "auth": "",
    })  # fmt: skip
    assert masked == {
        "ss_repo": f"https://me:{MASK}@h/x", "note": "see http://host/x", "api_key": MASK,
        "password": "None", "auth": "",
    }  # fmt: skip
    assert list(masked) == ["ss_repo", "note", "api_key", "password", "auth"]


def test_a_command_line_written_as_one_string_is_masked() -> None:
    """The kohya_ss GUI keeps extra sd-scripts flags as one string
    (``additional_parameters``); a caller may pass a command line so too: the value after
    a flag naming a secret is masked there as in a list. A count after ``--keep_tokens``,
    a flag after a secret's flag and look-alike flags stay."""
    cases = {
        f"--huggingface_token {HUB_TOKEN} --wandb_api_key={API_KEY}":
            f"--huggingface_token {MASK} --wandb_api_key={MASK}",
        f'train.py --hub_token "{HUB_TOKEN}" --lr 1e-4': f"train.py --hub_token {MASK} --lr 1e-4",
        "--keep_tokens 1 --max_token_length 225 --token-count 5":
            "--keep_tokens 1 --max_token_length 225 --token-count 5",
        "--hub_token --push_to_hub": "--hub_token --push_to_hub",
        f"x --password={URL_PASSWORD} https://me:{URL_PASSWORD}@h/x":
            f"x --password={MASK} https://me:{MASK}@h/x",
        "/data/run-1/out--final": "/data/run-1/out--final",
    }  # fmt: skip
    for given, stored in cases.items():
        assert mask_secrets({"additional_parameters": given}) == {"additional_parameters": stored}
    assert mask_mapping({"ss_args": f"--hub_token {HUB_TOKEN}"}) == {
        "ss_args": f"--hub_token {MASK}"
    }


def _diffusers_args(out: Path) -> argparse.Namespace:
    """What train_text_to_image_lora.py's parse_args() returns (diffusers 58eb52c)."""
    return argparse.Namespace(
        pretrained_model_name_or_path="hf-internal-testing/tiny-stable-diffusion-pipe",
        output_dir=str(out), hub_token=HUB_TOKEN, push_to_hub=True, rank=4,
        learning_rate=1e-4, resolution=64, seed=0, num_train_epochs=2, train_batch_size=1,
        report_to="tensorboard", logging_dir="logs",
        dataset_name=f"https://user:{URL_PASSWORD}@data.example.com/pokemon",
    )  # fmt: skip


def test_api_config_is_masked_in_database(tmp_path: Path, db_url: str) -> None:
    """start_run(config=args) with --hub_token: the run is recorded, the token is not."""
    run = lora_tracker.start_run("masked", _diffusers_args(tmp_path / "out"), database_url=db_url)
    run.finish()
    assert run.flush(30)
    r = rows(db_url, "SELECT config, network_dim, learning_rate FROM training_runs")[0]
    assert r["config"]["hub_token"] == MASK and r["network_dim"] == 4
    assert r["config"]["dataset_name"] == f"https://user:{MASK}@data.example.com/pokemon"
    stored = _everything_stored(db_url)
    assert HUB_TOKEN not in stored and URL_PASSWORD not in stored


def test_api_config_is_masked_in_spool(tmp_path: Path, db_url: str) -> None:
    """With the database down the events wait in the spool: without the token."""
    down = proxied(db_url, Proxy(proxy_target(db_url)))
    run = lora_tracker.start_run("spooled", _diffusers_args(tmp_path / "out"), database_url=down)
    run.fail(RuntimeError(f"cannot push to https://me:{URL_PASSWORD}@hub.example.com"))
    lora_tracker.tracking.dispatcher().close(5)
    text = _spool_text()
    assert '"run_started"' in text and '"run_finished"' in text
    assert HUB_TOKEN not in text and URL_PASSWORD not in text
    lora_tracker.tracking._dispatcher = None  # the closed one stays closed


def test_kohya_command_line_and_toml_are_masked(tmp_path: Path, db_url: str) -> None:
    """The kohya hook stores args, command line and TOMLs without the tokens in them."""
    config = tmp_path / "run.toml"
    config.write_text(f'[logging]\nwandb_api_key = "{API_KEY}"\nlearning_rate = 0.0003\n')
    out = tmp_path / "out"
    done = launch(
        "train_network.py",
        db_url,
        *kohya_args(out, "--config_file", str(config), "--huggingface_token", HUB_TOKEN,
                    epochs=1),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    r = rows(db_url, "SELECT config, learning_rate FROM training_runs")[0]
    assert r["learning_rate"] == 0.0003
    assert r["config"]["args"]["huggingface_token"] == MASK
    assert r["config"]["config_file"]["logging"]["wandb_api_key"] == MASK
    assert "--huggingface_token" in r["config"]["command_line"]
    stored = _everything_stored(db_url)
    assert HUB_TOKEN not in stored and API_KEY not in stored


def test_trainer_config_file_and_metadata_are_masked(tmp_path: Path, db_url: str) -> None:
    """A GUI config beside the outputs and metadata holding a URL with a password."""
    out = tmp_path / "out"
    out.mkdir()
    (out / "config_lora-20260101-120000.toml").write_text(
        f'hub_token = "{HUB_TOKEN}"\nnetwork_dim = 8\n'
        f'huggingface_repo_id = "https://me:{URL_PASSWORD}@hub.example.com/x"\n'
    )
    meta = sd15_metadata("masked", 1, 1_700_000_000.0, dim=8)
    meta["ss_huggingface_repo_id"] = f"https://me:{URL_PASSWORD}@hub.example.com/x"
    meta["ss_wandb_api_key"] = API_KEY
    path = out / "masked-000001.safetensors"
    path.write_bytes(checkpoint_bytes(meta, 8, seed=1))
    event = observe_checkpoint(path)
    assert HUB_TOKEN not in event_to_json(event) and API_KEY not in event_to_json(event)
    assert URL_PASSWORD not in event_to_json(event)
    delivery = EventDelivery(db_url)
    try:
        assert delivery.submit(event)[0] == "recorded"
    finally:
        delivery.close()
    stored = _everything_stored(db_url)
    assert "network_dim" in stored and "ss_huggingface_repo_id" in stored
    assert HUB_TOKEN not in stored and URL_PASSWORD not in stored and API_KEY not in stored


def test_transformers_training_arguments_are_masked(tmp_path: Path, db_url: str) -> None:
    """TrainingArguments(hub_token=...) through the callback: the token is not stored."""
    transformers = pytest.importorskip("transformers")
    from lora_tracker.integrations.transformers import LoraTrackerCallback

    args = transformers.TrainingArguments(
        output_dir=str(tmp_path / "hf-out"), hub_token=HUB_TOKEN, report_to=[], use_cpu=True,
        num_train_epochs=1,
    )  # fmt: skip
    callback = LoraTrackerCallback("hf-masked", database_url=db_url)
    state = transformers.TrainerState()
    callback.on_train_begin(args, state, transformers.TrainerControl())
    callback.on_train_end(args, state, transformers.TrainerControl())
    assert callback.run is not None and callback.run.flush(30)
    r = rows(db_url, "SELECT config FROM training_runs")[0]
    assert r["config"]["training_args"]["hub_token"] in (MASK, "<HUB_TOKEN>")
    assert HUB_TOKEN not in json.dumps(r["config"]) and HUB_TOKEN not in _everything_stored(db_url)
