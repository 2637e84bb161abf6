"""Checkpoint metadata: from a checkpoint's ``__metadata__`` to the run's configuration
columns (image metadata is another matter, and another module).

kohya sd-scripts writes ``ss_*`` and ``modelspec.*`` keys, all strings: some JSON
(``ss_datasets``, ``ss_tag_frequency``...), some Python repr (``ss_resolution`` =
``"(512, 512)"``), ``"None"``/``"True"``/``"False"``, numbers as text. ai-toolkit writes
its own values (``sd_1.5``, JSON-dumped non-strings, ``training_info``). Whatever is not
mapped stays in the raw metadata, which is stored whole.
"""

from __future__ import annotations

import ast
import json
import re
from datetime import datetime, timezone
from decimal import Decimal, InvalidOperation
from typing import Any

JSON_KEYS = frozenset(
    {"ss_datasets", "ss_tag_frequency", "ss_dataset_dirs", "ss_reg_dataset_dirs",
     "ss_bucket_info", "ss_network_args", "training_info", "software"}
)  # fmt: skip

BASE_MODEL_VERSIONS = {
    # kohya
    "sd_v1": "SD15", "sd_v2": "SD2", "sd_v2_v": "SD2", "sd_v2_768_v": "SD2",
    "sdxl_base_v1-0": "SDXL", "sdxl_base_v0-9": "SDXL", "sd3": "SD3",
    "flux1": "Flux", "chroma": "Chroma",
    # ai-toolkit
    "sd_1.5": "SD15", "sd_2.1": "SD2", "sdxl_1.0": "SDXL", "flux.1": "Flux", "sd_3": "SD3",
}  # fmt: skip

ARCHITECTURE_PREFIXES = (
    ("stable-diffusion-xl", "SDXL"),
    ("stable-diffusion-v1", "SD15"),
    ("stable-diffusion-v2", "SD2"),
    ("stable-diffusion-v3", "SD3"),
    ("stable-diffusion-3", "SD3"),
    ("flux", "Flux"),
    ("chroma", "Chroma"),
)


def decode_value(key: str, value: str) -> Any:
    """A metadata string as the value it encodes (JSON, Python literal, or the string)."""
    text = value.strip()
    if text in ("None", "null", ""):
        return None
    if text == "True":
        return True
    if text == "False":
        return False
    if key in JSON_KEYS or text[:1] in "{[":
        try:
            return json.loads(text)
        except (json.JSONDecodeError, RecursionError):
            pass
    if text[:1] == "(":
        try:
            return ast.literal_eval(text)
        except (ValueError, SyntaxError, MemoryError, RecursionError):
            return value
    return value


def _number(value: Any) -> float | None:
    if value is None or isinstance(value, bool):
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _int(value: Any) -> int | None:
    number = _number(value)
    if number is None or number != number or abs(number) > 2**62:
        return None
    return int(number)


def _decimal(value: Any) -> Decimal | None:
    number = _number(value)
    if number is None or number != number or number in (float("inf"), float("-inf")):
        return None
    try:
        result = Decimal(str(number)).normalize()
    except InvalidOperation:
        return None
    if result != result.to_integral_value() or result.adjusted() >= 28:
        return result  # (1E+308 is integral, but longer than quantize's 28 digits)
    return result.quantize(Decimal(1))


def timestamp(value: Any) -> datetime | None:
    """A kohya time (seconds since 1970, as text) as a UTC datetime; None when it is not
    one of this era (before 1970, after 2099, not a number: not a time a file was made)."""
    number = _number(value)
    if number is None or not 0 < number < 4_102_444_800:  # before 2100
        return None
    return datetime.fromtimestamp(number, tz=timezone.utc)


def model_type_of(meta: dict[str, Any]) -> str | None:
    """SD15 / SD2 / SDXL / SD3 / Flux / Chroma from the base-model version or architecture."""
    version = meta.get("ss_base_model_version")
    if isinstance(version, str) and version in BASE_MODEL_VERSIONS:
        return BASE_MODEL_VERSIONS[version]
    architecture = meta.get("modelspec.architecture")
    if isinstance(architecture, str):
        for prefix, model_type in ARCHITECTURE_PREFIXES:
            if architecture.lower().startswith(prefix):
                return model_type
    if meta.get("ss_v2") is True:
        return "SD2"
    if isinstance(version, str) and version:
        return "other"
    return None


def resolution_of(meta: dict[str, Any]) -> str | None:
    """'512x512' from ss_resolution, the first dataset of ss_datasets, or modelspec."""
    candidates: list[Any] = [meta.get("ss_resolution")]
    datasets = meta.get("ss_datasets")
    if isinstance(datasets, list) and datasets and isinstance(datasets[0], dict):
        candidates.append(datasets[0].get("resolution"))
    candidates.append(meta.get("modelspec.resolution"))
    for value in candidates:
        text = _resolution_text(value)
        if text:
            return text
    return None


def _resolution_text(value: Any) -> str | None:
    if isinstance(value, (list, tuple)) and len(value) == 2:
        width, height = _int(value[0]), _int(value[1])
        if width and height and width > 0 and height > 0:
            return f"{width}x{height}"
        return None
    if isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0:
        return f"{int(value)}x{int(value)}"
    if isinstance(value, str):
        match = re.fullmatch(r"\s*\(?\s*([0-9]+)\s*[x,*]\s*([0-9]+)\s*\)?\s*", value)
        if match:
            return f"{int(match[1])}x{int(match[2])}"
        if value.strip().isascii() and value.strip().isdigit():
            return f"{int(value)}x{int(value)}"
    return None


def optimizer_of(meta: dict[str, Any]) -> str | None:
    """'AdamW8bit(weight_decay=0.1)' from 'bitsandbytes.optim.adamw.AdamW8bit(weight_decay=0.1)'."""
    value = meta.get("ss_optimizer")
    if not isinstance(value, str) or not value:
        return None
    name, paren, args = value.partition("(")
    short = name.rsplit(".", 1)[-1]
    return f"{short}({args}" if paren else short


def _tag_frequency(meta: dict[str, Any]) -> dict[str, int] | None:
    sources: list[Any] = []
    frequency = meta.get("ss_tag_frequency")
    if isinstance(frequency, dict):
        sources.extend(frequency.values())
    datasets = meta.get("ss_datasets")
    if isinstance(datasets, list):
        for dataset in datasets:
            if isinstance(dataset, dict) and isinstance(dataset.get("tag_frequency"), dict):
                sources.extend(dataset["tag_frequency"].values())
    if not sources:
        return None
    totals: dict[str, int] = {}
    for per_dir in sources:
        if isinstance(per_dir, dict):
            for tag, count in per_dir.items():
                number = _int(count)
                if number is not None:
                    key = str(tag).strip()
                    totals[key] = totals.get(key, 0) + number
    return totals or None


def _dataset_dirs(meta: dict[str, Any]) -> Any:
    dirs = meta.get("ss_dataset_dirs")
    if isinstance(dirs, dict):
        return dirs
    datasets = meta.get("ss_datasets")
    if isinstance(datasets, list):
        subsets = []
        for dataset in datasets:
            if isinstance(dataset, dict):
                for subset in dataset.get("subsets") or []:
                    if isinstance(subset, dict):
                        subsets.append(
                            {
                                k: subset.get(k)
                                for k in ("image_dir", "img_count", "num_repeats", "class_tokens")
                                if k in subset
                            }
                        )
        return subsets or None
    return None


def _image_count(meta: dict[str, Any]) -> int | None:
    """Distinct training images (without repeats), else ss_num_train_images."""
    total = 0
    found = False
    dirs = meta.get("ss_dataset_dirs")
    if isinstance(dirs, dict):
        for info in dirs.values():
            if isinstance(info, dict) and _int(info.get("img_count")) is not None:
                total += _int(info.get("img_count")) or 0
                found = True
    datasets = meta.get("ss_datasets")
    if not found and isinstance(datasets, list):
        for dataset in datasets:
            for subset in (dataset.get("subsets") or []) if isinstance(dataset, dict) else []:
                if isinstance(subset, dict) and _int(subset.get("img_count")) is not None:
                    total += _int(subset.get("img_count")) or 0
                    found = True
    if found:
        return total
    return _int(meta.get("ss_num_train_images"))


def _batch_size(meta: dict[str, Any]) -> int | None:
    for key in ("ss_total_batch_size", "ss_batch_size_per_device"):
        value = _int(meta.get(key))
        if value:
            return value
    datasets = meta.get("ss_datasets")
    if isinstance(datasets, list) and datasets and isinstance(datasets[0], dict):
        return _int(datasets[0].get("batch_size_per_device")) or None
    return None


def decode_metadata(raw: dict[str, str]) -> dict[str, Any]:
    """Every key decoded to the value it encodes."""
    return {key: decode_value(key, value) for key, value in raw.items()}


# What a trainer writes anew at every save (kohya-output-format.md: kohya's epoch, step,
# finish time and hashes; ai-toolkit's training_info): a run's settings come from the rest,
# so the settings of a run's checkpoints are worked out once (`run_settings_from_metadata`).
SAVE_KEYS = frozenset(
    {"ss_epoch", "ss_steps", "ss_training_finished_at", "sshs_model_hash", "sshs_legacy_hash",
     "training_info", "modelspec.date", "modelspec.hash_sha256"}
)  # fmt: skip


def run_fields_from_metadata(raw: dict[str, str]) -> dict[str, Any]:
    """Columns of training_runs found in the metadata (only those present)."""
    fields = run_settings_from_metadata({k: v for k, v in raw.items() if k not in SAVE_KEYS})
    fields.update(save_fields_from_metadata(raw))
    return fields


def save_fields_from_metadata(raw: dict[str, str]) -> dict[str, Any]:
    """The run columns read from `SAVE_KEYS` (only those present; called for every file,
    so only the keys it reads are decoded)."""
    meta = {key: decode_value(key, raw[key]) for key in _SAVE_FIELD_KEYS if key in raw}
    fields = {
        "training_finished_at": timestamp(meta.get("ss_training_finished_at")),
        "total_steps": _int(meta.get("ss_steps")) or _int(_training_info(meta).get("step")),
    }
    return {k: v for k, v in fields.items() if v is not None}


_SAVE_FIELD_KEYS = ("ss_training_finished_at", "ss_steps", "training_info")  # of SAVE_KEYS


def run_settings_from_metadata(raw: dict[str, str]) -> dict[str, Any]:
    """The run columns read from the metadata outside `SAVE_KEYS` (only those present;
    `SAVE_KEYS` in ``raw`` are not read)."""
    meta = decode_metadata(raw)
    fields: dict[str, Any] = {
        "model_type": model_type_of(meta),
        "base_model": meta.get("ss_sd_model_name") or None,
        "network_dim": _int(meta.get("ss_network_dim")),
        "network_alpha": _decimal(meta.get("ss_network_alpha")),
        "resolution": resolution_of(meta),
        "num_images": _image_count(meta),
        "learning_rate": _number(meta.get("ss_learning_rate")),
        "unet_lr": _number(meta.get("ss_unet_lr")),
        "text_encoder_lr": _number(_first(meta.get("ss_text_encoder_lr"))),
        "optimizer": optimizer_of(meta),
        "lr_scheduler": meta.get("ss_lr_scheduler") or None,
        "seed": _int(meta.get("ss_seed")),
        "num_epochs": _int(meta.get("ss_num_epochs")),
        "max_train_steps": _int(meta.get("ss_max_train_steps")),
        "batch_size": _batch_size(meta),
        "network_module": meta.get("ss_network_module") or None,
        "mixed_precision": meta.get("ss_mixed_precision") or None,
        "tag_frequency": _tag_frequency(meta),
        "dataset_dirs": _dataset_dirs(meta),
        "session_id": session_id_of(raw),
        "output_name": _text(meta.get("ss_output_name")) or _text(meta.get("name")),
        "training_started_at": timestamp(meta.get("ss_training_started_at")),
    }
    for key in ("learning_rate", "unet_lr", "text_encoder_lr"):
        if fields[key] is not None and not -float("inf") < fields[key] < float("inf"):
            fields[key] = None  # (NaN, infinite: no rate; a negative one the rules say)
    return {k: v for k, v in fields.items() if v is not None}


def session_id_of(raw: dict[str, str]) -> str | None:
    """kohya's training session (``ss_session_id``): how capture tells a run's files from
    another training's into the same folder."""
    value = raw.get("ss_session_id")
    return None if value is None else _text(decode_value("ss_session_id", value))


def _training_info(meta: dict[str, Any]) -> dict[str, Any]:
    """ai-toolkit's {"step": ..., "epoch": ...}."""
    info = meta.get("training_info")
    return info if isinstance(info, dict) else {}


def _first(value: Any) -> Any:
    # sd3/flux trainers may write a list of text-encoder learning rates
    if isinstance(value, list):
        return value[0] if value else None
    return value


def _text(value: Any) -> str | None:
    if value is None or value == "":
        return None
    return str(value)


_EPOCH_KEYS = ("ss_epoch", "ss_steps", "training_info")  # all epoch_fields_from_metadata reads


def epoch_fields_from_metadata(raw: dict[str, str]) -> dict[str, Any]:
    """Epoch number and global step as the checkpoint states them."""
    meta = {key: decode_value(key, raw[key]) for key in _EPOCH_KEYS if key in raw}
    info = _training_info(meta)
    epoch = _int(meta.get("ss_epoch"))
    if epoch is None:
        epoch = _int(info.get("epoch"))
    step = _int(meta.get("ss_steps"))
    if step is None:
        step = _int(info.get("step"))
    found = {"epoch": epoch, "global_step": step}
    return {k: v for k, v in found.items() if v is not None and v >= 0}


def trainer_of(raw: dict[str, str]) -> str | None:
    """kohya or ai-toolkit, or None when the metadata does not say."""
    if any(key.startswith("ss_") for key in raw) and "software" not in raw:
        return "kohya"
    software = raw.get("software", "")
    if "ai-toolkit" in software:
        return "ai-toolkit"
    return None  # diffusers and PEFT write only {"format": "pt"}: the file name tells
