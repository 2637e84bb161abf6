"""Checkpoint metadata, file names and trainer configs -> run configuration."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from decimal import Decimal
from pathlib import Path, PurePosixPath

import pytest

from lora_tracker.capture.checkpoint_metadata import (
    decode_value,
    epoch_fields_from_metadata,
    run_fields_from_metadata,
    trainer_of,
)
from lora_tracker.capture.files import classify_checkpoint, classify_sample, output_dir_of
from lora_tracker.capture.trainer_config import load_toml, run_fields_from_config

from .kohya_sim import nometa_metadata, sd15_metadata, sdxl_metadata


def test_decode_values() -> None:
    """JSON, Python repr, None/True/False and numbers-as-text decode to their values."""
    assert decode_value("ss_resolution", "(512, 512)") == (512, 512)
    assert decode_value("ss_noise_offset", "None") is None
    assert decode_value("ss_v2", "False") is False
    assert decode_value("ss_cache_latents", "True") is True
    assert decode_value("ss_dataset_dirs", '{"a": {"img_count": 3}}') == {"a": {"img_count": 3}}
    assert decode_value("ss_learning_rate", "5e-05") == "5e-05"
    assert decode_value("ss_face_crop_aug_range", "(not python") == "(not python"


def test_sd15_legacy_run() -> None:
    """A --train_data_dir SD1.5 run maps onto every configuration column."""
    fields = run_fields_from_metadata(sd15_metadata("pixelbaby", 1234, 1731146400.0))
    assert fields["model_type"] == "SD15"
    assert fields["base_model"] == "v1-5-pruned-emaonly.safetensors"
    assert fields["network_dim"] == 32
    assert fields["network_alpha"] == Decimal(16)
    assert fields["resolution"] == "512x512"
    assert fields["num_images"] == 203
    assert fields["learning_rate"] == 1e-4
    assert fields["unet_lr"] == 1e-4
    assert fields["text_encoder_lr"] == 5e-5
    assert fields["optimizer"] == "AdamW8bit(weight_decay=0.1)"
    assert fields["lr_scheduler"] == "cosine"
    assert fields["seed"] == 42
    assert fields["num_epochs"] == 10
    assert fields["max_train_steps"] == 10150
    assert fields["batch_size"] == 2
    assert fields["session_id"] == "1234"
    assert fields["output_name"] == "pixelbaby"
    assert fields["mixed_precision"] == "fp16"
    assert fields["training_started_at"] == datetime(2024, 11, 9, 10, 0, tzinfo=timezone.utc)
    assert fields["tag_frequency"] == {"pixel art": 203, "baby": 180, "pink onesie": 40, "bow": 12}
    assert fields["dataset_dirs"] == {"10_pixelbaby": {"n_repeats": 10, "img_count": 203}}


def test_sdxl_dataset_config_run() -> None:
    """A --dataset_config SDXL run: resolution, batch size and images from ss_datasets."""
    fields = run_fields_from_metadata(sdxl_metadata("pxl", 99, 1731146400.0, dim=128))
    assert fields["model_type"] == "SDXL"
    assert fields["resolution"] == "1024x1024"
    assert fields["num_images"] == 203
    assert fields["batch_size"] == 1
    assert fields["network_dim"] == 128 and fields["network_alpha"] == Decimal(64)
    assert fields["optimizer"] == "Adafactor(scale_parameter=False,relative_step=False)"
    assert fields["tag_frequency"] == {"pixel art": 203, "baby": 190}
    assert fields["dataset_dirs"][0]["image_dir"] == "pixelbaby"


def test_no_metadata_run() -> None:
    """--no_metadata: network shape, model type and resolution from what is kept."""
    fields = run_fields_from_metadata(nometa_metadata("nm", dim=8))
    assert fields == {
        "model_type": "SD15", "network_dim": 8, "network_alpha": Decimal(4),
        "resolution": "512x512", "network_module": "networks.lora",
    }  # fmt: skip
    assert epoch_fields_from_metadata(nometa_metadata("nm")) == {}


@pytest.mark.parametrize(
    ("meta", "expected"),
    [
        ({"ss_base_model_version": "flux1"}, "Flux"),
        ({"ss_base_model_version": "sd_v2_v"}, "SD2"),
        ({"ss_base_model_version": "chroma"}, "Chroma"),
        ({"modelspec.architecture": "flux-1-dev/lora"}, "Flux"),
        ({"modelspec.architecture": "stable-diffusion-xl-v1-base/lora"}, "SDXL"),
        ({"ss_base_model_version": "sdxl_1.0"}, "SDXL"),  # ai-toolkit
        ({"ss_base_model_version": "sd_1.5"}, "SD15"),  # ai-toolkit
        ({"ss_base_model_version": "something_new"}, "other"),
    ],
)
def test_model_types(meta: dict[str, str], expected: str) -> None:
    """Base model versions and architectures of kohya and ai-toolkit map to model types."""
    assert run_fields_from_metadata(meta)["model_type"] == expected


def test_ai_toolkit_metadata() -> None:
    """ai-toolkit: JSON-dumped values, training_info for step and epoch."""
    meta = {
        "name": "my_lora",
        "software": json.dumps({"name": "ai-toolkit", "url": "https://example.invalid"}),
        "ss_base_model_version": "flux.1",
        "training_info": json.dumps({"step": 1500, "epoch": 3}),
    }
    assert trainer_of(meta) == "ai-toolkit"
    fields = run_fields_from_metadata(meta)
    assert fields["model_type"] == "Flux"
    assert fields["output_name"] == "my_lora"
    assert epoch_fields_from_metadata(meta) == {"epoch": 3, "global_step": 1500}


def test_odd_values_are_dropped_not_fatal() -> None:
    """Nonsense values are left out of the columns instead of failing."""
    fields = run_fields_from_metadata({
        "ss_network_dim": "banana", "ss_learning_rate": "nan", "ss_resolution": "(0, 0)",
        "ss_training_started_at": "-5", "ss_seed": "None",
    })  # fmt: skip
    assert fields == {}


P = PurePosixPath


@pytest.mark.parametrize(
    ("path", "kind", "name", "epoch", "step", "trainer"),
    [
        ("/o/pixelbaby-000003.safetensors", "epoch", "pixelbaby", 3, None, "kohya"),
        ("/o/pixelbaby-step00000500.safetensors", "step", "pixelbaby", None, 500, "kohya"),
        ("/o/pixelbaby.safetensors", "final", "pixelbaby", None, None, None),
        ("/o/epoch-000001.safetensors", "epoch", "epoch", 1, None, "kohya"),
        ("/o/at-step00000100.safetensors", "step", "at", None, 100, "kohya"),
        ("/o/pixelbaby-000002.ckpt", "epoch", "pixelbaby", 2, None, "kohya"),
        ("/o/run/checkpoint-200/pytorch_lora_weights.safetensors", "step", "run", None, 200,
         "diffusers"),
        ("/o/run/pytorch_lora_weights.safetensors", "final", "run", None, None, "diffusers"),
        ("/o/run/checkpoint-50/adapter_model.safetensors", "step", "run", None, 50, "peft"),
        ("/o/my_lora/my_lora_000001500.safetensors", "step", "my_lora", None, 1500, "ai-toolkit"),
    ],
)  # fmt: skip
def test_checkpoint_names(
    path: str, kind: str, name: str, epoch: int | None, step: int | None, trainer: str | None
) -> None:
    """kohya, diffusers, PEFT and ai-toolkit file names are recognised."""
    found = classify_checkpoint(P(path))
    assert found is not None
    assert (found.kind, found.output_name, found.epoch, found.step, found.trainer) == (
        kind, name, epoch, step, trainer,
    )  # fmt: skip


@pytest.mark.parametrize(
    "path",
    [
        "/o/pixelbaby-000003-state/model.safetensors",
        "/o/pixelbaby-state/optimizer.bin",
        "/o/run/checkpoint-200/model.safetensors",
        "/o/run/checkpoint-200/optimizer.bin",
        "/o/.pixelbaby-000003.safetensors",
        "/o/pixelbaby-000003.safetensors.tmp",
        "/o/notes.txt",
        "/o/sample/pixelbaby_e000001_00_20251109010000.png",
    ],
)
def test_not_checkpoints(path: str) -> None:
    """State folders, accelerate files, temp files and images are not checkpoints."""
    assert classify_checkpoint(P(path)) is None


def test_sample_names() -> None:
    """kohya sample images name their output and epoch (or step)."""
    found = classify_sample(P("/o/sample/pixel_baby_e000003_01_20251109103000_42.png"))
    assert found is not None
    assert (found.output_name, found.epoch, found.step, found.index) == ("pixel_baby", 3, None, 1)
    step = classify_sample(P("/o/sample/pixelbaby_000500_00_20251109103000.png"))
    assert step is not None and step.step == 500 and step.epoch is None
    assert classify_sample(P("/o/other/pixelbaby_e000003_01_20251109103000.png")) is None
    assert output_dir_of(P("/o/sample/x.png")) == P("/o")


def test_gui_config_fills_fields(tmp_path: Path) -> None:
    """A kohya_ss GUI TOML supplies the configuration of a --no_metadata run."""
    config = tmp_path / "config_lora-20251109-100000.toml"
    config.write_text(
        'pretrained_model_name_or_path = "runwayml/stable-diffusion-v1-5"\n'
        "network_dim = 32\nnetwork_alpha = 16\nlearning_rate = 0.0001\n"
        'optimizer_type = "AdamW8bit"\nlr_scheduler = "cosine"\nseed = 7\n'
        'max_train_epochs = 10\ntrain_batch_size = 2\nresolution = "512,512"\n'
        'output_name = "pixelbaby"\nnetwork_module = "networks.lora"\n'
        '[extra]\nmixed_precision = "bf16"\n'
    )
    fields = run_fields_from_config(load_toml(config))
    assert fields == {
        "model_type": "SD15", "base_model": "runwayml/stable-diffusion-v1-5",
        "network_dim": 32, "network_alpha": Decimal(16), "resolution": "512x512",
        "learning_rate": 0.0001, "optimizer": "AdamW8bit", "lr_scheduler": "cosine",
        "seed": 7, "num_epochs": 10, "batch_size": 2, "network_module": "networks.lora",
        "mixed_precision": "bf16", "output_name": "pixelbaby",
    }  # fmt: skip


def test_bad_toml_is_one_clear_error(tmp_path: Path) -> None:
    """A broken TOML gives an InvalidInput naming the file."""
    from lora_tracker.errors import InvalidInput

    config = tmp_path / "broken.toml"
    config.write_text("network_dim = = 3\n")
    with pytest.raises(InvalidInput, match=r"broken\.toml is not valid TOML"):
        load_toml(config)


def test_vocabularies_match_the_models() -> None:
    """The plain tuples the CLI uses are the pydantic models' Literal values."""
    from typing import get_args

    from lora_tracker import models, vocab

    assert get_args(models.RunStatus) == vocab.RUN_STATUSES
    assert get_args(models.ModelType) == vocab.MODEL_TYPES
    assert get_args(models.OverallVerdict) == vocab.OVERALL_VERDICTS
    assert get_args(models.EpochVerdict) == vocab.EPOCH_VERDICTS
    assert get_args(models.DetailLevel) == vocab.DETAIL_LEVELS
    assert get_args(models.PromptVerdict) == vocab.PROMPT_VERDICTS
