"""What a diffusers output folder says beyond ``{"format": "pt"}``.

diffusers' ``examples/text_to_image/train_text_to_image_lora.py`` (read at 58eb52c, 2026-08)
writes ``checkpoint-{step}/`` (accelerate's ``save_state``: optimizer.bin, scheduler.bin,
random_states_0.pkl, and through its save hook ``pytorch_lora_weights.safetensors`` in PEFT
naming), the final ``pytorch_lora_weights.safetensors`` (diffusers naming: ``lora.down`` for
``lora_A``), and with ``--report_to tensorboard`` (the default) accelerate's
``logs/{project}/{time.time()}/hparams.yml``: ``vars(args)``, the learning rate, resolution,
base model, seed, epochs and batch size. The rank is the first dimension of the LoRA down
weights (``lora_A.weight [rank, in]``).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import struct
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from ..secrets import mask_secrets

log = logging.getLogger(__name__)

HPARAMS = "hparams.yml"
_DOWN = re.compile(r"(?:lora_A|lora\.down|lora_down)\.weight$")
_CHECKPOINT_DIR = re.compile(r"^checkpoint-(\d+)$")
MAX_HEADER = 100 * 1024 * 1024


def _header(path: Path) -> tuple[dict[str, Any], int]:
    with open(path, "rb") as handle:
        (length,) = struct.unpack("<Q", handle.read(8))
        if length > MAX_HEADER:
            raise ValueError("header too large")
        header: dict[str, Any] = json.loads(handle.read(length))
    return header, 8 + length


def lora_rank(path: Path) -> int | None:
    """The rank of a LoRA file: the first dimension of its down (``lora_A``) weights."""
    try:
        header, _ = _header(path)
    except (OSError, ValueError, struct.error):
        return None
    ranks: dict[int, int] = {}
    for name, entry in header.items():
        if _DOWN.search(name) and isinstance(entry, dict):
            shape = entry.get("shape")
            if isinstance(shape, list) and len(shape) >= 2 and isinstance(shape[0], int):
                ranks[shape[0]] = ranks.get(shape[0], 0) + 1
    return max(ranks, key=lambda rank: ranks[rank]) if ranks else None


def tensor_digest(path: Path) -> str | None:
    """The tensors' data whatever their names: the same LoRA saved in PEFT and in
    diffusers naming (a checkpoint and the final file) has the same digest."""
    try:
        header, start = _header(path)
        parts = []
        with open(path, "rb") as handle:
            for name, entry in header.items():
                if name == "__metadata__" or not isinstance(entry, dict):
                    continue
                begin, end = entry["data_offsets"]
                handle.seek(start + begin)
                data = hashlib.sha256(handle.read(end - begin)).hexdigest()
                parts.append(f"{entry['dtype']}:{entry['shape']}:{data}")
    except (OSError, ValueError, KeyError, TypeError, struct.error):
        return None
    return hashlib.sha256("\n".join(sorted(parts)).encode()).hexdigest()


def final_step(output_dir: Path, final: Path) -> int | None:
    """The step of the final file: the last checkpoint's when their tensors are identical."""
    steps = []
    try:
        for entry in os.scandir(output_dir):
            match = _CHECKPOINT_DIR.match(entry.name)
            if match and entry.is_dir():
                steps.append(int(match[1]))
    except OSError:
        return None
    for step in sorted(steps, reverse=True):
        candidate = output_dir / f"checkpoint-{step}" / final.name
        if candidate.exists():
            mine = tensor_digest(final)
            return step if mine is not None and mine == tensor_digest(candidate) else None
    return None


def hparams_for(output_dir: Path, written: float) -> tuple[dict[str, Any], Path] | None:
    """accelerate's hparams.yml of the training that wrote a file at ``written``: the
    newest under ``logs/*/<time>/`` begun before it (masked: it holds ``hub_token``)."""
    logs = output_dir / "logs"
    best: tuple[float, Path] | None = None
    try:
        projects = [p for p in logs.iterdir() if p.is_dir()]
    except OSError:
        return None
    for project in projects:
        try:
            for run in project.iterdir():
                started = _time_of(run.name)
                candidate = run / HPARAMS
                if started is None or started > written + 1 or not candidate.is_file():
                    continue
                if best is None or started > best[0]:
                    best = (started, candidate)
        except OSError:
            continue
    if best is None:
        return None
    values = read_hparams(best[1])
    return (values, best[1]) if values is not None else None


def _time_of(name: str) -> float | None:
    try:
        value = float(name)
    except ValueError:
        return None
    return value if value > 0 else None


def read_hparams(path: Path) -> dict[str, Any] | None:
    """An hparams.yml as a dict (Python-specific tags read as plain values), secrets masked."""
    import yaml

    class _Loader(yaml.SafeLoader):
        pass

    def plain(loader: yaml.SafeLoader, suffix: str, node: yaml.Node) -> Any:
        if isinstance(node, yaml.SequenceNode):
            return loader.construct_sequence(node)
        if isinstance(node, yaml.MappingNode):
            return loader.construct_mapping(node)
        return loader.construct_scalar(node)  # type: ignore[arg-type]

    _Loader.add_multi_constructor("tag:yaml.org,2002:python/", plain)
    try:
        with open(path, encoding="utf-8") as handle:
            values = yaml.load(handle, Loader=_Loader)
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        log.warning("ignoring %s: %s", path, exc)
        return None
    if not isinstance(values, dict):
        return None
    masked: dict[str, Any] = mask_secrets(_json_safe(values))
    return masked


def _json_safe(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, float) and (value != value or abs(value) == float("inf")):
        return str(value)
    if value is None or isinstance(value, (str, bool, int, float)):
        return value
    if isinstance(value, datetime):
        return value.astimezone(timezone.utc).isoformat()
    return str(value)


def diffusers_facts(path: Path, output_dir: Path, mtime: float, kind: str) -> dict[str, Any]:
    """What goes into a diffusers checkpoint event's config: hparams.yml, the rank."""
    found: dict[str, Any] = {}
    hparams = hparams_for(output_dir, mtime)
    if hparams is not None:
        found["hparams"], where = hparams
        found["hparams_path"] = str(where)
    rank = lora_rank(path)
    if rank is not None:
        found["lora_rank"] = rank
    return found
