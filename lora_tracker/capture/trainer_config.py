"""kohya TOML configs: the kohya_ss GUI's ``config_lora-YYYYmmdd-HHMMSS.toml`` beside the
outputs, or a ``--config_file`` TOML. They fill in what checkpoint metadata lacks (for
example runs trained with ``--no_metadata``)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from ..errors import InvalidInput
from ..secrets import mask_secrets
from .checkpoint_metadata import _decimal, _int, _number, _resolution_text

GUI_CONFIG_GLOB = "config_lora-*.toml"


def load_toml(path: Path) -> dict[str, Any]:
    """A TOML file with its sections flattened, as kohya reads ``--config_file``."""
    if sys.version_info >= (3, 11):  # imported when a TOML is read: most folders have none
        import tomllib
    else:  # pragma: no cover - Python 3.10
        import tomli as tomllib
    try:
        with open(path, "rb") as handle:
            document = tomllib.load(handle)
    except OSError as exc:
        raise InvalidInput(f"cannot read {path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise InvalidInput(f"{path} is not valid TOML: {exc}") from None
    except UnicodeDecodeError:
        raise InvalidInput(f"{path} is not a text file (expected a kohya TOML)") from None
    masked: dict[str, Any] = mask_secrets(
        flatten_sections(document)
    )  # a token in a TOML is never stored
    return masked


def flatten_sections(document: dict[str, Any]) -> dict[str, Any]:
    """A kohya TOML's keys at one level: kohya flattens sections; a later section wins."""
    flat: dict[str, Any] = {}
    for key, value in document.items():
        if isinstance(value, dict):
            flat.update(value)
        else:
            flat[key] = value
    return flat


def run_fields_from_config(config: dict[str, Any]) -> dict[str, Any]:
    """Columns of training_runs found in kohya arguments."""
    module = str(config.get("network_module") or "")
    model_type = None
    if "flux" in module or config.get("flux1") is True:
        model_type = "Flux"
    elif config.get("sdxl") is True or "sdxl" in str(config.get("model_list", "")).lower():
        model_type = "SDXL"
    elif config.get("v2") is True:
        model_type = "SD2"
    elif config.get("pretrained_model_name_or_path"):
        model_type = "SD15"
    fields: dict[str, Any] = {
        "model_type": model_type,
        "base_model": config.get("pretrained_model_name_or_path") or None,
        "network_dim": _int(config.get("network_dim")),
        "network_alpha": _decimal(config.get("network_alpha")),
        "resolution": _resolution_text(config.get("resolution")),
        "learning_rate": _number(config.get("learning_rate")),
        "unet_lr": _number(config.get("unet_lr")),
        "text_encoder_lr": _number(config.get("text_encoder_lr")),
        "optimizer": config.get("optimizer_type") or None,
        "lr_scheduler": config.get("lr_scheduler") or None,
        "seed": _int(config.get("seed")),
        "num_epochs": _int(config.get("max_train_epochs") or config.get("epoch")),
        "max_train_steps": _int(config.get("max_train_steps")),
        "batch_size": _int(config.get("train_batch_size")),
        "network_module": module or None,
        "mixed_precision": config.get("mixed_precision") or None,
        "output_name": config.get("output_name") or None,
    }
    if fields["network_dim"] is not None and fields["network_dim"] <= 0:
        fields["network_dim"] = None
    if fields["batch_size"] is not None and fields["batch_size"] <= 0:
        fields["batch_size"] = None
    return {k: v for k, v in fields.items() if v is not None}


def run_fields_from_adapter_files(config: dict[str, Any]) -> dict[str, Any]:
    """Columns from PEFT's adapter_config.json and transformers' trainer_state.json."""
    fields: dict[str, Any] = {}
    adapter = config.get("adapter_config")
    if isinstance(adapter, dict):
        fields["network_dim"] = _int(adapter.get("r"))
        fields["network_alpha"] = _decimal(adapter.get("lora_alpha"))
        fields["base_model"] = adapter.get("base_model_name_or_path") or None
        fields["network_module"] = adapter.get("peft_type") or None
    state = config.get("trainer_state")
    if isinstance(state, dict):
        fields["total_steps"] = _int(state.get("global_step"))
        fields["max_train_steps"] = _int(state.get("max_steps"))
        fields["num_epochs"] = _int(state.get("num_train_epochs"))
        fields["batch_size"] = _int(state.get("train_batch_size"))
    hparams = config.get("hparams")  # issue 17: accelerate's hparams.yml (diffusers)
    if isinstance(hparams, dict):
        for column, value in run_fields_from_generic_config(hparams).items():
            fields.setdefault(column, value)
    if fields.get("network_dim") is None:
        fields["network_dim"] = _int(config.get("lora_rank"))  # from the tensor shapes
    if fields.get("network_dim") is not None and fields["network_dim"] <= 0:
        fields["network_dim"] = None
    return {k: v for k, v in fields.items() if v is not None}


# Names training scripts commonly give their settings, for the Python API's config.
GENERIC_NAMES: dict[str, tuple[str, ...]] = {
    "network_dim": ("network_dim", "rank", "lora_rank", "r"),
    "network_alpha": ("network_alpha", "lora_alpha", "alpha"),
    "learning_rate": ("learning_rate", "lr"),
    "unet_lr": ("unet_lr",),
    "text_encoder_lr": ("text_encoder_lr",),
    "optimizer": ("optimizer", "optimizer_type", "optim"),
    "lr_scheduler": ("lr_scheduler", "lr_scheduler_type", "scheduler"),
    "seed": ("seed",),
    "num_epochs": ("num_epochs", "num_train_epochs", "max_train_epochs", "epochs"),
    "max_train_steps": ("max_train_steps", "max_steps"),
    "batch_size": ("batch_size", "train_batch_size", "per_device_train_batch_size"),
    "base_model": ("base_model", "pretrained_model_name_or_path", "model_name_or_path"),
    "mixed_precision": ("mixed_precision",),
    "resolution": ("resolution",),
    "model_type": ("model_type",),
    "num_images": ("num_images",),
    "caption_version": ("caption_version",),
}


def run_fields_from_generic_config(config: dict[str, Any]) -> dict[str, Any]:
    """Columns of training_runs from a training script's own config dict."""
    fields: dict[str, Any] = {}
    for column, names in GENERIC_NAMES.items():
        for name in names:
            value = config.get(name)
            if value is None or value == "":
                continue
            if column in (
                "network_dim",
                "seed",
                "num_epochs",
                "max_train_steps",
                "batch_size",
                "num_images",
            ):
                value = _int(value)
            elif column == "network_alpha":
                value = _decimal(value)
            elif column in ("learning_rate", "unet_lr", "text_encoder_lr"):
                value = _number(value)
            elif column == "resolution":
                value = _resolution_text(value)
            elif not isinstance(value, str):
                value = str(value)
            if value is not None:
                fields[column] = value
                break
    return fields
