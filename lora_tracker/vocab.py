"""The fixed vocabularies of the schema (the CHECK constraints in sql/), as plain tuples:
the CLI builds its choices from these without importing pydantic."""

from __future__ import annotations

RUN_STATUSES = ("planned", "in_progress", "completed", "failed", "cancelled")
MODEL_TYPES = ("SD15", "SD2", "SDXL", "SD3", "Flux", "Chroma", "other")
OVERALL_VERDICTS = ("success", "failure", "partial", "pending")
EPOCH_VERDICTS = ("best", "good", "acceptable", "skip", "failure")
DETAIL_LEVELS = ("minimal", "moderate", "detailed", "very_detailed")
PROMPT_VERDICTS = ("pass", "partial", "fail")
