"""Pydantic models of what goes into and comes out of the database.

The rules are checked twice on purpose: here, so a bad value is refused with a clear message
before any SQL runs, and by the CHECK constraints in ``sql/``, so a bad value typed into psql
or the Supabase editor is refused too. The vocabularies come from ``vocab.py``; a test reads
the CHECKs back from a migrated database and compares them with it.
"""

import functools
from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

# the vocabularies live in vocab.py (one source: the SQL CHECKs are tested against it)
from .vocab import (
    DETAIL_LEVELS,
    EPOCH_VERDICTS,
    MODEL_TYPES,
    OVERALL_VERDICTS,
    PROMPT_VERDICTS,
    RUN_STATUSES,
    DetailLevel,
    EpochVerdict,
    ModelType,
    OverallVerdict,
    PromptVerdict,
    RunStatus,
)

Score = Annotated[int, Field(ge=0, le=10)]
NonEmpty = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1)]
Resolution = Annotated[str, StringConstraints(pattern=r"^[0-9]+x[0-9]+$")]

__all__ = [
    "DETAIL_LEVELS",
    "EPOCH_VERDICTS",
    "MODEL_TYPES",
    "OVERALL_VERDICTS",
    "PROMPT_VERDICTS",
    "RUN_STATUSES",
    "DetailLevel",
    "EpochVerdict",
    "ModelType",
    "OverallVerdict",
    "PromptVerdict",
    "RunStatus",
]


class _Input(BaseModel):
    """Base of write models: unknown fields are an error, not silently dropped."""

    # defer_build: a model's validator is built when first used, not at import (capture
    # imports this module for RunFields alone; a CLI command uses one or two models)
    model_config = ConfigDict(
        extra="forbid", protected_namespaces=(), defer_build=True
    )  # protected_namespaces: the model_type field (pydantic<2.10)

    def given(self) -> dict[str, Any]:
        """Only the fields the caller set, for partial updates."""
        return self.model_dump(exclude_unset=True)


class RunFields(_Input):
    """Columns of training_runs a caller may set (all optional: for updates)."""

    run_date: datetime | None = None
    status: RunStatus | None = None
    base_model: str | None = None
    model_type: ModelType | None = None
    num_images: Annotated[int, Field(ge=0)] | None = None
    caption_version: str | None = None
    resolution: Resolution | None = None
    network_dim: Annotated[int, Field(gt=0)] | None = None
    network_alpha: Annotated[Decimal, Field(ge=0)] | None = None
    checkpoint_file_size_mb: Annotated[Decimal, Field(ge=0)] | None = None
    overall_verdict: OverallVerdict | None = None
    quality_score: Score | None = None
    production_ready: bool | None = None
    best_epoch: Annotated[int, Field(ge=0)] | None = None
    key_findings: str | None = None
    issues_found: list[str] | None = None
    strengths: list[str] | None = None
    recommended_for: str | None = None
    notes: str | None = None
    trainer: str | None = None
    output_name: str | None = None
    output_dir: str | None = None
    session_id: str | None = None
    host: str | None = None
    training_started_at: datetime | None = None
    training_finished_at: datetime | None = None
    learning_rate: Annotated[float, Field(ge=0)] | None = None
    unet_lr: Annotated[float, Field(ge=0)] | None = None
    text_encoder_lr: Annotated[float, Field(ge=0)] | None = None
    optimizer: str | None = None
    lr_scheduler: str | None = None
    seed: int | None = None
    num_epochs: Annotated[int, Field(ge=0)] | None = None
    max_train_steps: Annotated[int, Field(ge=0)] | None = None
    total_steps: Annotated[int, Field(ge=0)] | None = None
    batch_size: Annotated[int, Field(gt=0)] | None = None
    network_module: str | None = None
    mixed_precision: str | None = None
    tag_frequency: dict[str, int] | None = None
    dataset_dirs: dict[str, Any] | list[Any] | None = None
    config: dict[str, Any] | None = None
    checkpoint_metadata: dict[str, Any] | None = None
    failure_reason: str | None = None
    last_event_at: datetime | None = None


class RunCreate(RunFields):
    """A new training run."""

    run_name: NonEmpty


class EpochFields(_Input):
    """Columns of epoch_results a caller may set."""

    checkpoint_path: str | None = None
    checkpoint_file_size_mb: Annotated[Decimal, Field(ge=0)] | None = None
    test_output_dir: str | None = None
    visual_quality_score: Score | None = None
    style_match_score: Score | None = None
    prompt_adherence_score: Score | None = None
    has_wrong_backgrounds: bool | None = None
    has_random_pixels: bool | None = None
    is_photorealistic: bool | None = None
    verdict: EpochVerdict | None = None
    production_ready: bool | None = None
    observations: str | None = None
    global_step: Annotated[int, Field(ge=0)] | None = None
    checkpoint_size_bytes: Annotated[int, Field(ge=0)] | None = None
    checkpoint_hash: str | None = None
    checkpoint_mtime: datetime | None = None
    checkpoint_on_disk: bool | None = None
    loss: float | None = None
    sample_images: list[str] | None = None
    checkpoint_metadata: dict[str, Any] | None = None
    metrics: dict[str, float] | None = None


class CaptionVersionCreate(_Input):
    """A new caption version."""

    version_name: NonEmpty
    description: str | None = None
    includes_hex_codes: bool = False
    includes_accessories: bool = False
    includes_jewelry: bool = False
    detail_level: DetailLevel | None = None
    sample_caption: str | None = None
    used_in_training_runs: list[str] = Field(default_factory=list)
    source_dir: str | None = None
    num_captions: Annotated[int, Field(ge=0)] | None = None
    caption_set_hash: str | None = None
    notes: str | None = None


class TestPromptCreate(_Input):
    """A new test prompt."""

    __test__ = False  # not a pytest test class

    prompt_name: NonEmpty
    prompt_text: NonEmpty
    negative_prompt: str | None = None
    seed: int | None = None
    sampler: str | None = None
    steps: Annotated[int, Field(gt=0)] | None = None
    cfg_scale: Annotated[Decimal, Field(ge=0, le=100)] | None = None
    width: Annotated[int, Field(gt=0)] | None = None
    height: Annotated[int, Field(gt=0)] | None = None
    category: str | None = None
    notes: str | None = None


class PromptResultFields(_Input):
    """What a person records for one epoch on one test prompt."""

    image_path: str | None = None
    score: Score | None = None
    style_match_score: Score | None = None
    prompt_adherence_score: Score | None = None
    verdict: PromptVerdict | None = None
    notes: str | None = None


class _Row(BaseModel):
    """Base of read models: built from database rows, extra columns ignored."""

    model_config = ConfigDict(
        extra="ignore", from_attributes=True, protected_namespaces=(), defer_build=True
    )


class TrainingRun(_Row):
    id: int
    run_name: str
    run_date: datetime
    status: str
    base_model: str | None = None
    model_type: str | None = None
    num_images: int | None = None
    caption_version: str | None = None
    resolution: str | None = None
    network_dim: int | None = None
    network_alpha: Decimal | None = None
    checkpoint_file_size_mb: Decimal | None = None
    overall_verdict: str
    quality_score: int | None = None
    production_ready: bool
    best_epoch: int | None = None
    key_findings: str | None = None
    issues_found: list[str] = Field(default_factory=list)
    strengths: list[str] = Field(default_factory=list)
    recommended_for: str | None = None
    notes: str | None = None
    trainer: str | None = None
    output_name: str | None = None
    output_dir: str | None = None
    session_id: str | None = None
    host: str | None = None
    training_started_at: datetime | None = None
    training_finished_at: datetime | None = None
    learning_rate: float | None = None
    unet_lr: float | None = None
    text_encoder_lr: float | None = None
    optimizer: str | None = None
    lr_scheduler: str | None = None
    seed: int | None = None
    num_epochs: int | None = None
    max_train_steps: int | None = None
    total_steps: int | None = None
    batch_size: int | None = None
    network_module: str | None = None
    mixed_precision: str | None = None
    tag_frequency: dict[str, Any] | None = None
    dataset_dirs: Any = None
    config: dict[str, Any] | None = None
    checkpoint_metadata: dict[str, Any] | None = None
    failure_reason: str | None = None
    last_event_at: datetime | None = None
    created_at: datetime
    updated_at: datetime


class EpochResult(_Row):
    id: int
    training_run_id: int
    epoch_number: int
    checkpoint_path: str | None = None
    checkpoint_file_size_mb: Decimal | None = None
    test_output_dir: str | None = None
    visual_quality_score: int | None = None
    style_match_score: int | None = None
    prompt_adherence_score: int | None = None
    has_wrong_backgrounds: bool
    has_random_pixels: bool
    is_photorealistic: bool
    verdict: str | None = None
    production_ready: bool
    observations: str | None = None
    global_step: int | None = None
    checkpoint_size_bytes: int | None = None
    checkpoint_hash: str | None = None
    checkpoint_mtime: datetime | None = None
    checkpoint_on_disk: bool | None = None
    loss: float | None = None
    sample_images: list[str] = Field(default_factory=list)
    checkpoint_metadata: dict[str, Any] | None = None
    metrics: dict[str, Any] | None = None
    created_at: datetime
    updated_at: datetime


class CaptionVersion(_Row):
    id: int
    version_name: str
    description: str | None = None
    includes_hex_codes: bool
    includes_accessories: bool
    includes_jewelry: bool
    detail_level: str | None = None
    sample_caption: str | None = None
    used_in_training_runs: list[str] = Field(default_factory=list)
    source_dir: str | None = None
    num_captions: int | None = None
    caption_set_hash: str | None = None
    notes: str | None = None
    created_at: datetime
    updated_at: datetime


def render_validation_error(exc: Any) -> str:
    """One readable line per invalid field, as ``field: problem``."""
    lines = []
    for error in exc.errors():
        location = ".".join(str(part) for part in error.get("loc", ())) or "value"
        lines.append(f"{location}: {error.get('msg', 'invalid')}")
    return "; ".join(lines)


@functools.cache
def _run_field_names() -> frozenset[str]:
    return frozenset(RunFields.model_fields)  # (a property: asked once, not per key)


def valid_run_fields(
    fields: dict[str, Any], *, mode: Literal["python", "json"] = "python"
) -> dict[str, Any]:
    """The fields training_runs accepts, validated; unknown keys and values the schema would
    refuse (a negative alpha in odd metadata, ...) are logged and dropped: one bad key must
    not cost a whole run or checkpoint. ``mode="json"``: JSON-ready values (for events)."""
    import logging

    from pydantic import ValidationError

    log = logging.getLogger(__name__)
    names = _run_field_names()
    known = {k: v for k, v in fields.items() if k in names}
    unknown = sorted(set(fields) - set(known))
    if unknown:
        log.warning("lora-tracker: ignoring unknown run fields %s", ", ".join(unknown))
    try:
        return RunFields.model_validate(known).model_dump(exclude_unset=True, mode=mode)
    except ValidationError as exc:
        bad = {str(e["loc"][0]) for e in exc.errors() if e.get("loc")}
    log.warning("lora-tracker: ignoring invalid run fields %s", ", ".join(sorted(bad)))
    kept = {k: v for k, v in known.items() if k not in bad}
    return RunFields.model_validate(kept).model_dump(exclude_unset=True, mode=mode)
