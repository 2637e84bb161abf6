"""epoch_results: one row per (run, epoch). All SQL about epochs lives here."""

from __future__ import annotations

from . import _sqlbuild
from .db import Connection
from .errors import InvalidInput, NotFound
from .models import EpochFields, EpochResult


def upsert_epoch(
    conn: Connection, training_run_id: int, epoch_number: int, fields: EpochFields
) -> EpochResult:
    """Create the epoch row or set the given fields on it; other columns keep their values."""
    if epoch_number < 0:
        raise InvalidInput("epoch_results.epoch_number must be 0 or more")
    query, params = _sqlbuild.upsert(
        "epoch_results",
        {"training_run_id": training_run_id, "epoch_number": epoch_number},
        fields.given(),
    )
    row = conn.execute(query, params).fetchone()
    assert row is not None
    return EpochResult.model_validate(row)


def get_epoch(conn: Connection, training_run_id: int, epoch_number: int) -> EpochResult:
    """One epoch of a run; NotFound when it has not been recorded."""
    row = conn.execute(
        "SELECT * FROM epoch_results WHERE training_run_id = %s AND epoch_number = %s",
        (training_run_id, epoch_number),
    ).fetchone()
    if row is None:
        raise NotFound(f"epoch {epoch_number} of run {training_run_id} is not recorded")
    return EpochResult.model_validate(row)


def list_epochs(conn: Connection, training_run_id: int) -> list[EpochResult]:
    """A run's epochs in order."""
    rows = conn.execute(
        "SELECT * FROM epoch_results WHERE training_run_id = %s ORDER BY epoch_number",
        (training_run_id,),
    ).fetchall()
    return [EpochResult.model_validate(r) for r in rows]
