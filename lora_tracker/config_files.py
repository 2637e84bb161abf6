"""Planned settings from the config files people have, for `tried --config`.

Three kinds are read:
- sd-scripts' own ``--config_file`` TOML (and the ``config_lora-*.toml`` the kohya_ss GUI
  writes beside the outputs): sd-scripts argument names, ``optimizer_type``, ``resolution``;
- the kohya_ss GUI's saved configuration, JSON (``SaveConfigFile`` in kohya_gui/common_gui.py
  of bmaltais/kohya_ss, read at 45088f0, 2026-07): the GUI's own names, ``max_resolution =
  "512,512"``, ``optimizer``, ``LoRA_type``, ``epoch``, ``train_batch_size``, ``sdxl``,
  ``flux1_checkbox``, ...;
- the GUI's TOML (its ``config.toml``, in sections such as ``[basic]``), same names.

Each value is checked: a key with a value of the wrong type (``network_dim = "abc"``) is
reported as unusable, never silently skipped while matching on the rest.
"""

from __future__ import annotations

import json
import math
import re
import sys
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

from .capture.trainer_config import flatten_sections
from .errors import InvalidInput, InvalidValue

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

# keys that decide the model type (kohya_ss GUI names and sd-scripts flags)
MODEL_FLAGS = {
    "flux1_checkbox": "Flux", "flux1": "Flux", "sd3_checkbox": "SD3", "sd3": "SD3",
    "sdxl": "SDXL", "sdxl_checkbox": "SDXL", "v2": "SD2",
}  # fmt: skip
# each setting `tried` compares, with the keys it may come from (first found wins)
SETTING_KEYS: dict[str, tuple[str, ...]] = {
    "network_dim": ("network_dim",),
    "network_alpha": ("network_alpha",),
    "resolution": ("resolution", "max_resolution"),
    "learning_rate": ("learning_rate",),
    "optimizer": ("optimizer_type", "optimizer"),
    "base_model": ("pretrained_model_name_or_path",),
}
_RESOLUTION = re.compile(r"^\s*(\d+)\s*(?:[x,*]\s*(\d+)\s*)?$")
_MIN_SIDE = 64


def resolution_text(text: str) -> str:
    """A typed resolution as the record writes it: ``512`` -> ``512x512``, ``512,768`` or
    ``512 * 768`` -> ``512x768``. InvalidValue (field ``resolution``) for anything else."""
    match = _RESOLUTION.match(text)
    if not match:
        raise InvalidValue("resolution", f"{text!r} is not like 512x512")
    width = match.group(1)
    return f"{width}x{match.group(2) or width}"


@dataclass
class PlannedConfig:
    """What a config file says about a planned run."""

    path: Path
    kind: str
    settings: dict[str, Any] = field(default_factory=dict)
    used: dict[str, str] = field(default_factory=dict)  # key -> the setting it gave
    unusable: dict[str, str] = field(default_factory=dict)  # key -> why
    unused: list[str] = field(default_factory=list)  # keys tried does not compare

    def unusable_for(self, given: set[str]) -> dict[str, str]:
        """The unusable keys whose setting was not given another way (e.g. an option)."""
        return {k: why for k, why in self.unusable.items() if setting_of(k) not in given}


def setting_of(key: str) -> str:
    """The setting a config key gives ('max_resolution' -> 'resolution')."""
    if key in MODEL_FLAGS:
        return "model_type"
    return next((s for s, keys in SETTING_KEYS.items() if key in keys), key)


def load_config_file(path: Path) -> tuple[str, dict[str, Any]]:
    """The kind of config and its keys (TOML sections flattened, as kohya does).

    InvalidInput for a file that cannot be read or is neither TOML nor JSON.
    """
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise InvalidInput(f"cannot read {path}: {exc.strerror}") from None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise InvalidInput(f"{path} is not a text file (expected a kohya TOML or JSON)") from None
    if "\x00" in text:
        raise InvalidInput(f"{path} is not a text file (expected a kohya TOML or JSON)")
    if path.suffix.lower() == ".json" or text.lstrip().startswith("{"):
        try:
            document = json.loads(text)
        except json.JSONDecodeError as exc:
            raise InvalidInput(f"{path} is not valid JSON: {exc}") from None
        if not isinstance(document, dict):
            raise InvalidInput(f"{path} holds no settings (expected a JSON object)")
        return "kohya_ss GUI JSON", flatten_sections(document)
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise InvalidInput(f"{path} is not valid TOML: {exc}") from None
    flat = flatten_sections(document)
    gui = any(isinstance(v, dict) for v in document.values()) or "max_resolution" in flat
    return ("kohya_ss GUI TOML" if gui else "sd-scripts TOML"), flat


def planned_from_config(path: Path) -> PlannedConfig:
    """The settings `tried` compares, read from a kohya config file."""
    kind, config = load_config_file(path)
    planned = PlannedConfig(path, kind)
    for setting, keys in SETTING_KEYS.items():
        for key in keys:
            if key not in config or _blank(config[key]):
                continue
            try:
                planned.settings[setting] = _CONVERT[setting](config[key])
            except ValueError as exc:
                planned.unusable[key] = f"{_shown(config[key])} {exc}"
                continue
            planned.used[key] = setting
            break
    model_type, flag_keys = _model_type(config, planned.unusable)
    if model_type is not None:
        planned.settings["model_type"] = model_type
        planned.used.update({k: "model_type" for k in flag_keys})
    planned.unused = [k for k in config if k not in planned.used and k not in planned.unusable]
    return planned


def _blank(value: Any) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


def _shown(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=False) if not isinstance(value, str) else repr(value)
    return text if len(text) <= 40 else text[:39] + "…"


def _whole(value: Any) -> int:
    if isinstance(value, bool):
        raise ValueError("is not a whole number")
    if isinstance(value, int):
        number = value
    elif (isinstance(value, float) and value.is_integer()) or (
        isinstance(value, str) and value.strip().isascii() and value.strip().isdigit()
    ):
        number = int(value)
    else:
        raise ValueError("is not a whole number")
    if number <= 0:
        raise ValueError("is not more than 0")
    return number


def _real(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise ValueError("is not a number")
    try:
        number = float(value)
    except ValueError:
        raise ValueError("is not a number") from None
    if not math.isfinite(number) or number < 0:
        raise ValueError("is not a finite number of 0 or more")
    return number


def _alpha(value: Any) -> Decimal:
    number = _real(value)
    try:
        return Decimal(str(value)) if isinstance(value, str) else Decimal(repr(number))
    except InvalidOperation:
        raise ValueError("is not a number") from None


def _resolution(value: Any) -> str:
    if isinstance(value, list) and len(value) in (1, 2):
        sides = [_whole(v) for v in value]
    elif isinstance(value, int) and not isinstance(value, bool):
        sides = [value]
    elif isinstance(value, str) and (match := _RESOLUTION.match(value)):
        sides = [int(g) for g in match.groups() if g is not None]
    else:
        raise ValueError("is not a resolution like 512,512")
    if any(side < _MIN_SIDE for side in sides):
        raise ValueError(f"is not a resolution like 512,512 (sides of {_MIN_SIDE} px or more)")
    width, height = sides[0], sides[-1]
    return f"{width}x{height}"


def _text(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError("is not text")
    return value.strip()


_CONVERT = {
    "network_dim": _whole,
    "network_alpha": _alpha,
    "resolution": _resolution,
    "learning_rate": _real,
    "optimizer": _text,
    "base_model": _text,
}


def _model_type(config: dict[str, Any], unusable: dict[str, str]) -> tuple[str | None, list[str]]:
    for key, model_type in MODEL_FLAGS.items():
        value = config.get(key)
        if value is True:
            return model_type, [key]
        if value is not None and not isinstance(value, bool):
            unusable[key] = f"{_shown(value)} is not true or false"
    module = config.get("network_module")
    if isinstance(module, str) and "flux" in module.lower():
        return "Flux", ["network_module"]
    model_list = config.get("model_list")
    if isinstance(model_list, str) and "xl" in model_list.lower():
        return "SDXL", ["model_list"]
    base = config.get("pretrained_model_name_or_path")
    if isinstance(base, str) and base.strip():
        lowered = base.lower()
        if re.search(r"sd_?xl|[-_ ]xl([-_ .]|$)", lowered):
            return "SDXL", ["pretrained_model_name_or_path"]
        if "flux" in lowered:
            return "Flux", ["pretrained_model_name_or_path"]
        # sd-scripts trains SD 1.x when no flag says otherwise
        flags = [k for k in MODEL_FLAGS if k in config]
        return "SD15", ["pretrained_model_name_or_path", *flags]
    return None, []
