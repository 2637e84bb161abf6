"""epoch_results: one row per (run, epoch), as a person sets it through the CLI or the
library. Capture writes its epochs in ``capture/apply.py``; the rules of judging them are
in ``judging.py``."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from psycopg import sql

from . import _sqlbuild
from .errors import InvalidInput, NotFound
from .pg import Connection

if TYPE_CHECKING:  # pydantic is not imported by the commands that only read epochs
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
    from .models import EpochResult

    return EpochResult.model_validate(row)


def get_epoch(conn: Connection, training_run_id: int, epoch_number: int) -> EpochResult:
    """One epoch of a run; NotFound when it has not been recorded."""
    row = conn.execute(
        "SELECT * FROM epoch_results WHERE training_run_id = %s AND epoch_number = %s",
        (training_run_id, epoch_number),
    ).fetchone()
    if row is None:
        raise NotFound(f"epoch {epoch_number} of run {training_run_id} is not recorded")
    from .models import EpochResult

    return EpochResult.model_validate(row)


def epochs_of_runs(
    conn: Connection, run_ids: list[int], columns: Sequence[str] | None = None
) -> dict[int, list[dict[str, Any]]]:
    """The epoch rows of some runs (all columns, or ``columns``), in order, by run id."""
    selected = sql.SQL(", ").join(map(sql.Identifier, columns)) if columns else sql.SQL("*")
    rows = conn.execute(
        sql.SQL(
            "SELECT training_run_id AS run_id_, {} FROM epoch_results "
            "WHERE training_run_id = ANY(%s) ORDER BY training_run_id, epoch_number"
        ).format(selected),
        (run_ids,),
    ).fetchall()
    found: dict[int, list[dict[str, Any]]] = {run_id: [] for run_id in run_ids}
    for row in rows:
        found[row.pop("run_id_")].append(row)
    return found
