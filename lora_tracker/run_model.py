"""The columns of ``training_runs`` a caller or capture may set (`RunFields`), the pydantic
model `lora_tracker.run_fields.valid_run_fields` falls back on.

Apart from the other models (:mod:`lora_tracker.models`, which holds these too) so that
capture, which validates run fields alone, does not build every model when it needs this
one. The same rules as everywhere: see :mod:`lora_tracker.models`.
"""

import logging
from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError

from .control_chars import short_repr
from .run_fields import copied
from .vocab import ModelType, OverallVerdict, RunStatus

log = logging.getLogger("lora_tracker.run_fields")  # (valid_run_fields says it)

Score = Annotated[int, Field(ge=0, le=10)]
# the columns' own types bound them too: PostgreSQL's integer, and bigint for the seed (a
# value beyond one is dropped with the other bad values, not sent to be refused)
INTEGER_MAX = 2**31 - 1
Count = Annotated[int, Field(ge=0, le=INTEGER_MAX)]
PositiveCount = Annotated[int, Field(gt=0, le=INTEGER_MAX)]
BigInt = Annotated[int, Field(ge=-(2**63), le=2**63 - 1)]
Resolution = Annotated[str, StringConstraints(pattern=r"^[0-9]+x[0-9]+$")]


class InputModel(BaseModel):
    """Base of write models: unknown fields are an error, not silently dropped."""

    # defer_build: a model's validator is built when first used, not at import (a CLI
    # command uses one or two models)
    model_config = ConfigDict(
        extra="forbid", protected_namespaces=(), defer_build=True
    )  # protected_namespaces: the model_type field (pydantic<2.10)

    def given(self) -> dict[str, Any]:
        """Only the fields the caller set, for partial updates."""
        return self.model_dump(exclude_unset=True)


class RunFields(InputModel):
    """Columns of training_runs a caller may set (all optional: for updates)."""

    run_date: datetime | None = None
    status: RunStatus | None = None
    base_model: str | None = None
    model_type: ModelType | None = None
    num_images: Count | None = None
    caption_version: str | None = None
    resolution: Resolution | None = None
    network_dim: PositiveCount | None = None
    network_alpha: Annotated[Decimal, Field(ge=0)] | None = None
    checkpoint_file_size_mb: Annotated[Decimal, Field(ge=0)] | None = None
    overall_verdict: OverallVerdict | None = None
    quality_score: Score | None = None
    production_ready: bool | None = None
    best_epoch: Count | None = None
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
    seed: BigInt | None = None
    num_epochs: Count | None = None
    max_train_steps: Count | None = None
    total_steps: Count | None = None
    batch_size: PositiveCount | None = None
    network_module: str | None = None
    mixed_precision: str | None = None
    tag_frequency: dict[str, int] | None = None
    dataset_dirs: dict[str, Any] | list[Any] | None = None
    config: dict[str, Any] | None = None
    checkpoint_metadata: dict[str, Any] | None = None
    failure_reason: str | None = None
    last_event_at: datetime | None = None


def render_validation_error(exc: Any) -> str:
    """One readable line per invalid field, as ``field: problem``."""
    lines = []
    for error in exc.errors():
        location = ".".join(str(part) for part in error.get("loc", ())) or "value"
        lines.append(f"{location}: {error.get('msg', 'invalid')}")
    return "; ".join(lines)


def validated_run_fields(known: dict[str, Any], mode: Literal["python", "json"]) -> dict[str, Any]:
    """`lora_tracker.run_fields.valid_run_fields` by the model: ``known`` holds only
    RunFields' fields; a field whose value the model refuses is logged and dropped."""
    try:
        return _dumped(RunFields.model_validate(known), known, mode)
    except ValidationError as exc:
        bad = {str(e["loc"][0]) for e in exc.errors() if e.get("loc")}
    said = (f"{name}={short_repr(known.get(name), 40)}" for name in sorted(bad))
    log.warning("lora-tracker: ignoring invalid run fields %s", ", ".join(said))
    kept = {k: v for k, v in known.items() if k not in bad}
    return _dumped(RunFields.model_validate(kept), kept, mode)


def _dumped(
    model: RunFields, given: dict[str, Any], mode: Literal["python", "json"]
) -> dict[str, Any]:
    """``model.model_dump(exclude_unset=True, mode=mode)``; in python mode, the given fields'
    validated values read directly (a dump walks all 44 fields)."""
    if mode == "json":
        return model.model_dump(exclude_unset=True, mode="json")
    return {name: copied(model.__dict__[name]) for name in given}
