"""The fixed vocabularies of the schema, in one place.

Each is a ``Literal`` (for pydantic and the type checker) and a plain tuple derived from
it (for the CLI's choices, without importing pydantic). The CHECK constraints in ``sql/``
spell the same lists for anyone typing into psql; tests/test_schema.py reads them back from
the migrated database and fails when they and these drift apart.
"""

from __future__ import annotations

from typing import Literal, get_args

RunStatus = Literal["planned", "in_progress", "completed", "failed", "cancelled"]
EndStatus = Literal["completed", "failed", "cancelled"]  # the statuses a run ends with
ModelType = Literal["SD15", "SD2", "SDXL", "SD3", "Flux", "Chroma", "other"]
OverallVerdict = Literal["success", "failure", "partial", "pending"]
EpochVerdict = Literal["best", "good", "acceptable", "skip", "failure"]
DetailLevel = Literal["minimal", "moderate", "detailed", "very_detailed"]
PromptVerdict = Literal["pass", "partial", "fail"]
CheckpointKind = Literal["epoch", "step", "final", "unknown"]
CheckpointFormat = Literal["safetensors", "ckpt", "pt", "bin"]
ImageGenerator = Literal["kohya", "a1111", "forge", "sdnext", "comfyui", "other"]

RUN_STATUSES: tuple[str, ...] = get_args(RunStatus)
END_STATUSES: tuple[str, ...] = get_args(EndStatus)
MODEL_TYPES: tuple[str, ...] = get_args(ModelType)
OVERALL_VERDICTS: tuple[str, ...] = get_args(OverallVerdict)
EPOCH_VERDICTS: tuple[str, ...] = get_args(EpochVerdict)
DETAIL_LEVELS: tuple[str, ...] = get_args(DetailLevel)
PROMPT_VERDICTS: tuple[str, ...] = get_args(PromptVerdict)
CHECKPOINT_KINDS: tuple[str, ...] = get_args(CheckpointKind)
CHECKPOINT_FORMATS: tuple[str, ...] = get_args(CheckpointFormat)
IMAGE_GENERATORS: tuple[str, ...] = get_args(ImageGenerator)

# the problem flags of an epoch, by the name a person uses, and their columns
EPOCH_FLAGS: dict[str, str] = {
    "wrong-backgrounds": "has_wrong_backgrounds",
    "random-pixels": "has_random_pixels",
    "photorealistic": "is_photorealistic",
}

# table, column -> vocabulary: what the schema's CHECK constraints must allow, no more
SCHEMA_VOCABULARIES: dict[tuple[str, str], tuple[str, ...]] = {
    ("training_runs", "status"): RUN_STATUSES,
    ("training_runs", "model_type"): MODEL_TYPES,
    ("training_runs", "overall_verdict"): OVERALL_VERDICTS,
    ("epoch_results", "verdict"): EPOCH_VERDICTS,
    ("caption_versions", "detail_level"): DETAIL_LEVELS,
    ("prompt_test_results", "verdict"): PROMPT_VERDICTS,
    ("prompt_test_results", "generator"): IMAGE_GENERATORS,
    ("checkpoints", "kind"): CHECKPOINT_KINDS,
    ("checkpoints", "file_format"): CHECKPOINT_FORMATS,
}
