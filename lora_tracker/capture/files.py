"""What a file in a trainer's output folder is, from its path alone.

kohya sd-scripts: ``{name}-{epoch:06d}``, ``{name}-step{step:08d}``, final ``{name}`` (and
``epoch-000001`` / ``at-step00000100`` / ``last`` without --output_name), sample images
``sample/{name}_e{epoch:06d}_{idx:02d}_{YYYYmmddHHMMSS}[_{seed}].png``, state folders
``*-state/`` (not checkpoints). diffusers: ``checkpoint-{step}/pytorch_lora_weights.*``.
transformers+PEFT: ``checkpoint-{step}/adapter_model.*``. ai-toolkit:
``{name}_{step:09d}.safetensors``. OneTrainer: ``...-save-{step}-{epoch}-{epoch_step}``.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from datetime import datetime
from pathlib import PurePath
from typing import TypeVar

from ..vocab import CheckpointKind as CheckpointKind  # re-exported: events.py uses it

CHECKPOINT_SUFFIXES = {".safetensors": "safetensors", ".ckpt": "ckpt", ".pt": "pt"}
ADAPTER_FILES = {"pytorch_lora_weights", "adapter_model"}
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp"}
SAMPLE_DIRS = {"sample", "samples"}
TEMP_SUFFIXES = (".tmp", ".part", ".partial", ".crdownload", ".swp", ".filepart", ".download")

_KOHYA_EPOCH = re.compile(r"^(?P<name>.+)-(?P<epoch>\d{6})$")
_KOHYA_STEP = re.compile(r"^(?P<name>.+)-step(?P<step>\d{8})$")
_KOHYA_NO_NAME_STEP = re.compile(r"^at-step(?P<step>\d{8})$")
_AI_TOOLKIT_STEP = re.compile(r"^(?P<name>.+)_(?P<step>\d{9})$")
_ONETRAINER = re.compile(r"^(?P<name>.*?)-?save-(?P<step>\d+)-(?P<epoch>\d+)-(?P<epoch_step>\d+)$")
_CHECKPOINT_DIR = re.compile(r"^checkpoint-(?P<step>\d+)$")
# kohya's f"{name}_{e{epoch:06d} | {step:06d}}_{index:02d}_{stamp}[_{seed}]" (wider numbers
# past 999999 steps or 99 prompts; a seed from a .toml/.json prompts file may be negative)
_SAMPLE = re.compile(
    r"^(?P<name>.*?)_(?:e(?P<epoch>\d{6,})|(?P<step>\d{6,}))_(?P<idx>\d{2,})"
    r"_(?P<stamp>\d{14})(?:_(?P<seed>-?\d+))?$"
)


@dataclass(frozen=True)
class CheckpointName:
    """What the path says about a checkpoint."""

    output_name: str
    kind: CheckpointKind
    file_format: str
    epoch: int | None = None
    step: int | None = None
    trainer: str | None = None


@dataclass(frozen=True)
class SampleName:
    """A sample image: the run's output name, the epoch (or step) it shows, the line of the
    prompts file it renders (``index``), and when kohya wrote it (``_YYYYmmddHHMMSS`` in the
    trainer's local time, read as this machine's)."""

    output_name: str
    epoch: int | None
    step: int | None
    index: int
    written_at: datetime | None = None
    seed: int | None = None  # the ``_{seed}`` suffix: the prompt set a seed


def is_temporary(path: PurePath) -> bool:
    """Editor, download and partial files; hidden files."""
    name = path.name
    return name.startswith((".", "~")) or name.endswith(TEMP_SUFFIXES) or name.endswith("~")


def in_state_folder(path: PurePath) -> bool:
    """kohya's --save_state folders and accelerate state hold optimizer state, not LoRAs."""
    return any(part.endswith("-state") or part == "state" for part in path.parts[:-1])


def skipped_folder_name(name: str) -> bool:
    """A folder inside a watched one whose files are never recorded: hidden (``.trash``,
    ``.git``, a sync tool's cache) or trainer state (``*-state``)."""
    return name.startswith(".") or name.endswith("-state")


def in_skipped_folder(path: PurePath, root: PurePath) -> bool:
    """Whether ``path`` (a folder, or a file's folder) lies in a skipped folder below
    ``root``, the watched folder; a path outside ``root`` counts as skipped. The one filter
    both the backfill scan and live watching apply."""
    if not path.is_relative_to(root):
        return True
    return any(skipped_folder_name(part) for part in path.relative_to(root).parts)


def is_candidate(path: PurePath) -> bool:
    """A file name that may hold a checkpoint or a sample (its folder aside)."""
    return classify_checkpoint(path) is not None or classify_sample(path) is not None


def classify_checkpoint(path: PurePath) -> CheckpointName | None:
    """The checkpoint a path names, or None when it is not a LoRA checkpoint."""
    return _classify_checkpoint(path)


@functools.lru_cache(maxsize=16384)  # a function of the path alone; a backfill asks 7 times
def _classify_checkpoint(path: PurePath) -> CheckpointName | None:
    suffix = path.suffix.lower()  # (first: most files in a trainer's folder are images)
    stem = path.stem
    if suffix == ".bin" and stem in ADAPTER_FILES:
        file_format = "bin"
    elif suffix in CHECKPOINT_SUFFIXES:
        file_format = CHECKPOINT_SUFFIXES[suffix]
    else:
        return None
    if is_temporary(path) or in_state_folder(path):
        return None

    folder = _CHECKPOINT_DIR.match(path.parent.name)
    if stem in ADAPTER_FILES:
        trainer = "diffusers" if stem == "pytorch_lora_weights" else "peft"
        if folder:  # output_dir/checkpoint-N/<file>
            name = path.parent.parent.name or "run"
            return CheckpointName(
                name, "step", file_format, step=int(folder["step"]), trainer=trainer
            )
        return CheckpointName(path.parent.name or "run", "final", file_format, trainer=trainer)
    if folder:  # optimizer.bin, model.safetensors, ... of an accelerate checkpoint folder
        return None

    if match := _KOHYA_EPOCH.match(stem):
        return CheckpointName(
            match["name"], "epoch", file_format, epoch=int(match["epoch"]), trainer="kohya"
        )
    if match := _KOHYA_STEP.match(stem):
        return CheckpointName(
            match["name"], "step", file_format, step=int(match["step"]), trainer="kohya"
        )
    if match := _KOHYA_NO_NAME_STEP.match(stem):
        return CheckpointName("at", "step", file_format, step=int(match["step"]), trainer="kohya")
    if match := _ONETRAINER.match(stem):
        return CheckpointName(
            match["name"] or path.parent.name,
            "step",
            file_format,
            epoch=int(match["epoch"]),
            step=int(match["step"]),
            trainer="onetrainer",
        )
    if match := _AI_TOOLKIT_STEP.match(stem):
        return CheckpointName(
            match["name"], "step", file_format, step=int(match["step"]), trainer="ai-toolkit"
        )
    return CheckpointName(stem, "final", file_format)


def classify_sample(path: PurePath) -> SampleName | None:
    """A kohya sample image in a ``sample/`` folder, or None."""
    return _classify_sample(path)


@functools.lru_cache(maxsize=16384)  # a function of the path alone: a backfill asks twice
def _classify_sample(path: PurePath) -> SampleName | None:
    if path.suffix.lower() not in IMAGE_SUFFIXES or path.parent.name not in SAMPLE_DIRS:
        return None
    if is_temporary(path):
        return None
    match = _SAMPLE.match(path.stem)
    if not match:
        return None
    return SampleName(
        output_name=match["name"],
        epoch=int(match["epoch"]) if match["epoch"] else None,
        step=int(match["step"]) if match["step"] else None,
        index=int(match["idx"]),
        written_at=_local_stamp(match["stamp"]),
        seed=int(match["seed"]) if match["seed"] is not None else None,
    )


def _local_stamp(stamp: str) -> datetime | None:
    """kohya's ``time.strftime("%Y%m%d%H%M%S", time.localtime())`` as an aware datetime."""
    try:  # as strptime("%Y%m%d%H%M%S") reads the 14 digits, at a tenth of its cost
        return datetime(
            int(stamp[:4]), int(stamp[4:6]), int(stamp[6:8]), int(stamp[8:10]),
            int(stamp[10:12]), int(stamp[12:14]),
        ).astimezone()  # fmt: skip
    except ValueError:
        return None


_P = TypeVar("_P", bound=PurePath)


def output_dir_of(path: _P) -> _P:
    """The trainer's output folder a checkpoint or sample lives in (a path of its kind)."""
    if path.parent.name in SAMPLE_DIRS or _CHECKPOINT_DIR.match(path.parent.name):
        return path.parent.parent
    return path.parent
