"""`valid_run_fields`: of the ``training_runs`` columns capture read, the values the schema
accepts, checked without importing pydantic when they are plainly right.

Capture (`lora-tracker watch`, `record`, the hooks' background thread) checks every file's
run fields. The rules are `lora_tracker.run_model.RunFields` (pydantic); importing pydantic
and building that model cost about 60 ms, a sixth of a whole `watch --once` of 500 files
(issue 14). So each field has a plain check here (`_CHECKS`) that accepts a value only
when pydantic would return it unchanged: the exact type, within the field's bounds. A value
any check does not accept (an int where a float is due, a str date, a value out of range,
an unknown type) sends the whole mapping to the pydantic model, which decides as before.
tests/test_run_fields.py holds the two to the same answers, field by field.
"""

from __future__ import annotations

import copy
import logging
import re
from collections.abc import Callable
from datetime import datetime
from decimal import Decimal
from typing import Any, Literal

from .vocab import MODEL_TYPES, OVERALL_VERDICTS, RUN_STATUSES

log = logging.getLogger(__name__)

# the columns' types: PostgreSQL's integer (counts), bigint (the seed)
_INTEGER = range(-(2**31), 2**31)
_BIGINT = range(-(2**63), 2**63)


def _str(value: Any) -> bool:
    return type(value) is str


def _int(minimum: int) -> Callable[[Any], bool]:
    return lambda value: type(value) is int and value >= minimum and value in _INTEGER


def _bigint(value: Any) -> bool:
    return type(value) is int and value in _BIGINT


def _float_not_negative(value: Any) -> bool:
    return type(value) is float and value >= 0  # (NaN is not: pydantic says so)


def _decimal_not_negative(value: Any) -> bool:
    return type(value) is Decimal and value.is_finite() and value >= 0


def _datetime(value: Any) -> bool:
    return type(value) is datetime


def _bool(value: Any) -> bool:
    return type(value) is bool


def _one_of(choices: tuple[str, ...]) -> Callable[[Any], bool]:
    allowed = frozenset(choices)
    return lambda value: type(value) is str and value in allowed


def _resolution(value: Any) -> bool:
    return type(value) is str and re.fullmatch(r"[0-9]+x[0-9]+", value) is not None


def _score(value: Any) -> bool:
    return type(value) is int and 0 <= value <= 10


def _str_list(value: Any) -> bool:
    return type(value) is list and all(type(item) is str for item in value)


def _str_keys(value: Any) -> bool:
    return type(value) is dict and all(type(key) is str for key in value)


def _counts(value: Any) -> bool:
    return _str_keys(value) and all(type(count) is int for count in value.values())


def _dict_or_list(value: Any) -> bool:
    return type(value) is list or _str_keys(value)


# field -> a value pydantic returns unchanged (None is every field's "not known")
_CHECKS: dict[str, Callable[[Any], bool]] = {
    "run_date": _datetime,
    "status": _one_of(RUN_STATUSES),
    "base_model": _str,
    "model_type": _one_of(MODEL_TYPES),
    "num_images": _int(0),
    "caption_version": _str,
    "resolution": _resolution,
    "network_dim": _int(1),
    "network_alpha": _decimal_not_negative,
    "checkpoint_file_size_mb": _decimal_not_negative,
    "overall_verdict": _one_of(OVERALL_VERDICTS),
    "quality_score": _score,
    "production_ready": _bool,
    "best_epoch": _int(0),
    "key_findings": _str,
    "issues_found": _str_list,
    "strengths": _str_list,
    "recommended_for": _str,
    "notes": _str,
    "trainer": _str,
    "output_name": _str,
    "output_dir": _str,
    "session_id": _str,
    "host": _str,
    "training_started_at": _datetime,
    "training_finished_at": _datetime,
    "learning_rate": _float_not_negative,
    "unet_lr": _float_not_negative,
    "text_encoder_lr": _float_not_negative,
    "optimizer": _str,
    "lr_scheduler": _str,
    "seed": _bigint,
    "num_epochs": _int(0),
    "max_train_steps": _int(0),
    "total_steps": _int(0),
    "batch_size": _int(1),
    "network_module": _str,
    "mixed_precision": _str,
    "tag_frequency": _counts,
    "dataset_dirs": _dict_or_list,
    "config": _str_keys,
    "checkpoint_metadata": _str_keys,
    "failure_reason": _str,
    "last_event_at": _datetime,
}
RUN_FIELD_NAMES = frozenset(_CHECKS)


def copied(value: Any) -> Any:
    """A field's value as a dump gives it: a container copied, deep."""
    return copy.deepcopy(value) if isinstance(value, (dict, list)) else value


def valid_run_fields(
    fields: dict[str, Any], *, mode: Literal["python", "json"] = "python"
) -> dict[str, Any]:
    """The fields training_runs accepts, validated; unknown keys and values the schema would
    refuse (a negative alpha in odd metadata, ...) are logged and dropped: one bad key must
    not cost a whole run or checkpoint. ``mode="json"``: JSON-ready values (for events).
    Containers are copies, as pydantic's dump makes."""
    known = {k: v for k, v in fields.items() if k in RUN_FIELD_NAMES}
    if len(known) < len(fields):
        unknown = sorted(set(fields) - set(known))
        log.warning("lora-tracker: ignoring unknown run fields %s", ", ".join(unknown))
    if mode == "python":
        checked = {}
        for name, value in known.items():
            if value is not None and not _CHECKS[name](value):
                break  # pydantic decides
            checked[name] = copied(value)
        else:
            return checked
    from .run_model import validated_run_fields

    return validated_run_fields(known, mode)
