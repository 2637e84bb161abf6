"""What an image's generation metadata says, as plain data (no database, no pydantic)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

ImageGenerator = Literal["a1111", "forge", "sdnext", "comfyui"]
SkipReason = Literal["grid", "no metadata", "unreadable", "not an image"]


@dataclass(frozen=True)
class LoraRef:
    """One LoRA an image was made with: its name as the tool shows it (A1111's alias or
    file stem, ComfyUI's ``lora_name``), A1111's 12-hex-digit hash when written, and the
    weight (A1111's ``<lora:name:weight>``, ComfyUI's ``strength_model``)."""

    name: str
    hash12: str | None = None
    weight: float | None = None


@dataclass
class ImageMetadata:
    """The generation settings read from one image."""

    generator: ImageGenerator
    prompt: str
    negative_prompt: str | None = None
    seed: int | None = None
    steps: int | None = None
    cfg_scale: float | None = None
    sampler: str | None = None
    scheduler: str | None = None
    width: int | None = None
    height: int | None = None
    model: str | None = None
    model_hash: str | None = None
    loras: list[LoraRef] = field(default_factory=list)
    raw: dict[str, Any] = field(default_factory=dict)  # the metadata as read


class NotUsable(Exception):
    """An image that is skipped: an X/Y/Z grid, or one without generation metadata."""

    def __init__(self, reason: SkipReason, detail: str) -> None:
        super().__init__(detail)
        self.reason: SkipReason = reason
        self.detail = detail
