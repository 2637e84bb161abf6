"""Pydantic models of what goes into and comes out of the database.

The rules are checked twice on purpose: here, so a bad value is refused with a clear message
before any SQL runs, and by the CHECK constraints in ``sql/``, so a bad value typed into psql
or the Supabase editor is refused too. The vocabularies come from ``vocab.py``; a test reads
the CHECKs back from a migrated database and compares them with it.
"""

from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

# the run fields capture validates live apart (capture builds that model alone, and only
# when a value is not plainly right: see run_fields.py)
from .run_fields import valid_run_fields
from .run_model import InputModel, RunFields, Score, render_validation_error

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

NonEmpty = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1)]

__all__ = [
    "DETAIL_LEVELS",
    "EPOCH_VERDICTS",
    "MODEL_TYPES",
    "OVERALL_VERDICTS",
    "PROMPT_VERDICTS",
    "RUN_STATUSES",
    "DetailLevel",
    "EpochVerdict",
    "InputModel",
    "ModelType",
    "OverallVerdict",
    "PromptVerdict",
    "RunFields",
    "RunStatus",
    "Score",
    "render_validation_error",
    "valid_run_fields",
]


class RunCreate(RunFields):
    """A new training run."""

    run_name: NonEmpty


class EpochFields(InputModel):
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


class CaptionVersionCreate(InputModel):
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


class TestPromptCreate(InputModel):
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


class PromptResultFields(InputModel):
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
