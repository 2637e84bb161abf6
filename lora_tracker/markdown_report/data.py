"""What the two Markdown documents are written from, read with the queries `runs`, `stats`
and `compare` use (runs.list_summaries, decisions.stats, epochs.epochs_of_runs)."""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field
from datetime import datetime, time, timezone
from typing import Any

from .. import decisions, epochs, runs
from ..markdown import code, text
from ..pg import Connection

RUN_EXTRA_COLUMNS = (
    "num_epochs", "issues_found", "strengths", "network_module", "unet_lr", "text_encoder_lr",
    "lr_scheduler", "batch_size", "mixed_precision", "seed", "max_train_steps",
    "failure_reason",
)  # fmt: skip
EPOCH_COLUMNS = (
    "epoch_number", "visual_quality_score", "style_match_score", "prompt_adherence_score",
    "verdict", "production_ready", "has_wrong_backgrounds", "has_random_pixels",
    "is_photorealistic", "checkpoint_path", "checkpoint_on_disk",
)  # fmt: skip


@dataclass(frozen=True)
class ReportScope:
    """Which runs a report covers, narrowed the way `lora-tracker runs` narrows."""

    model_type: str | None = None
    caption_version: str | None = None
    since: datetime | None = None

    def filters(self) -> dict[str, Any]:
        return {"model_type": self.model_type, "caption_version": self.caption_version}

    def options(self) -> str:
        """The command-line options that select this scope."""
        parts = []
        if self.model_type:
            parts.append(f"--model-type {self.model_type}")
        if self.caption_version:
            parts.append(f"--caption-version {shlex.quote(self.caption_version)}")
        if self.since:
            parts.append(f"--since {moment(self.since)}")
        return " ".join(parts)

    def describe(self) -> str:
        """The narrowing in words ('' for every run)."""
        parts = []
        if self.model_type:
            parts.append(f"model type {text(self.model_type)}")
        if self.caption_version:
            parts.append(f"caption version {code(self.caption_version)}")
        if self.since:
            parts.append(f"started on or after {moment(self.since)}")
        return ", ".join(parts)


@dataclass
class ReportData:
    """What both documents are written from, read in one transaction."""

    scope: ReportScope
    runs: list[dict[str, Any]]  # oldest first
    epochs: dict[int, list[dict[str, Any]]] = field(default_factory=dict)
    stats: dict[str, list[dict[str, Any]]] = field(default_factory=dict)


def collect(conn: Connection, scope: ReportScope | None = None) -> ReportData:
    """Read the runs (oldest first), their epochs and the `stats` tables for ``scope``."""
    scope = scope or ReportScope()
    found = runs.list_summaries(
        conn, scope.filters(), since=scope.since, sort="date", limit=None,
        extra_columns=RUN_EXTRA_COLUMNS,
    )  # fmt: skip
    found.reverse()  # newest first (date, then id) -> oldest first
    ids = [r["id"] for r in found]
    return ReportData(
        scope=scope,
        runs=found,
        epochs=epochs.epochs_of_runs(conn, ids, EPOCH_COLUMNS),
        stats=decisions.stats(conn, scope.filters(), since=scope.since),
    )


def moment(value: datetime) -> str:
    """A UTC date when the moment is midnight UTC, else the UTC moment to the second."""
    utc = value.astimezone(timezone.utc)
    if utc.time() == time(0):
        return utc.date().isoformat()
    return utc.isoformat(timespec="seconds").replace("+00:00", "Z")
