"""The rules of judging: scoring epochs and prompts, removing a mistaken epoch, the run's
verdict. The CLI (and any other front end) calls these and prints what they report.

- An epoch that was never recorded is not created by a score (a typo must not add epoch
  99): the caller must ask for it (``add=True``, the CLI's ``--add``).
- Every change is reported as (field, before, after), so a confirmation can say exactly
  what changed.
- A verdict of success, failure or partial on a run still ``in_progress`` completes it,
  unless the caller sets the status.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from . import epochs, prompts, runs
from .errors import NotFound
from .pg import Connection

if TYPE_CHECKING:
    from .models import EpochFields, EpochResult, PromptResultFields, RunFields, TrainingRun

FINAL_VERDICTS = ("success", "failure", "partial")


@dataclass(frozen=True)
class Change:
    """One field a command set: its value before and after."""

    field: str
    before: Any
    after: Any

    @property
    def changed(self) -> bool:
        return bool(self.before != self.after)


@dataclass
class EpochScored:
    """The outcome of scoring an epoch."""

    run: TrainingRun
    epoch: EpochResult
    changes: list[Change] = field(default_factory=list)
    added: bool = False


@dataclass
class PromptScored:
    """The outcome of scoring an epoch on a test prompt."""

    run: TrainingRun
    epoch_number: int
    prompt_name: str
    result: dict[str, Any]
    changes: list[Change] = field(default_factory=list)
    added_epoch: bool = False


@dataclass
class EpochRemoved:
    """A removed epoch, how many prompt results went with it, and whether it was the
    run's best epoch (then cleared)."""

    run: TrainingRun
    epoch: EpochResult
    prompt_results: int
    best_epoch_cleared: bool


@dataclass
class VerdictRecorded:
    """The outcome of a verdict: the updated run and what changed."""

    run: TrainingRun
    changes: list[Change] = field(default_factory=list)


def recorded_epochs(conn: Connection, run_id: int) -> list[int]:
    """The epoch numbers recorded for a run, in order."""
    rows = conn.execute(
        "SELECT epoch_number FROM epoch_results WHERE training_run_id = %s ORDER BY 1",
        (run_id,),
    ).fetchall()
    return [r["epoch_number"] for r in rows]


def number_ranges(numbers: list[int]) -> str:
    """[1, 2, 3, 4, 7, 9, 10] as '1-4, 7, 9-10'."""
    parts: list[str] = []
    start = previous = None
    for n in sorted(set(numbers)):
        if start is None:
            start = previous = n
        elif previous is not None and n == previous + 1:
            previous = n
        else:
            parts.append(str(start) if start == previous else f"{start}-{previous}")
            start = previous = n
    if start is not None:
        parts.append(str(start) if start == previous else f"{start}-{previous}")
    return ", ".join(parts)


def _existing_epoch(conn: Connection, run: TrainingRun, number: int) -> EpochResult | None:
    try:
        return epochs.get_epoch(conn, run.id, number)
    except NotFound:
        return None


def _epochs_word(recorded: list[int]) -> str:
    return "epoch" if len(recorded) == 1 else "epochs"


def _refuse_unrecorded(conn: Connection, run: TrainingRun, number: int) -> None:
    recorded = recorded_epochs(conn, run.id)
    have = (
        f"has {_epochs_word(recorded)} {number_ranges(recorded)} recorded"
        if recorded
        else "has no epochs recorded"
    )
    raise NotFound(f"{run.run_name} {have}; --add records epoch {number} by hand")


def score_epoch(
    conn: Connection,
    run_ref: str | int,
    epoch_number: int,
    fields: EpochFields,
    *,
    add: bool = False,
) -> EpochScored:
    """Set the given fields on a recorded epoch (or, with ``add``, record it by hand)."""
    run = runs.get_run(conn, run_ref)
    before = _existing_epoch(conn, run, epoch_number)
    if before is None and not add:
        _refuse_unrecorded(conn, run, epoch_number)
    after = epochs.upsert_epoch(conn, run.id, epoch_number, fields)
    changes = [
        Change(name, getattr(before, name) if before is not None else None, getattr(after, name))
        for name in fields.given()
    ]
    return EpochScored(run, after, changes, added=before is None)


def epoch_removal_preview(
    conn: Connection, run_ref: str | int, epoch_number: int
) -> tuple[TrainingRun, EpochResult, int]:
    """What remove_epoch would delete (the run, the epoch, how many prompt results), for a
    confirmation question; NotFound when the epoch is not recorded."""
    run = runs.get_run(conn, run_ref)
    epoch = _existing_epoch(conn, run, epoch_number)
    if epoch is None:
        recorded = recorded_epochs(conn, run.id)
        have = (
            f"{_epochs_word(recorded)} {number_ranges(recorded)} "
            f"{'is' if len(recorded) == 1 else 'are'} recorded"
            if recorded
            else "none recorded"
        )
        raise NotFound(f"{run.run_name} has no epoch {epoch_number} ({have})")
    row = conn.execute(
        "SELECT count(*) AS n FROM prompt_test_results WHERE epoch_result_id = %s", (epoch.id,)
    ).fetchone()
    return run, epoch, int(row["n"]) if row else 0


def remove_epoch(conn: Connection, run_ref: str | int, epoch_number: int) -> EpochRemoved:
    """Delete one epoch of a run with its prompt results (a mistaken epoch). When it was the
    run's best epoch, best_epoch is cleared."""
    run, epoch, results = epoch_removal_preview(conn, run_ref, epoch_number)
    conn.execute("DELETE FROM epoch_results WHERE id = %s", (epoch.id,))
    cleared = run.best_epoch == epoch_number
    if cleared:
        conn.execute("UPDATE training_runs SET best_epoch = NULL WHERE id = %s", (run.id,))
    return EpochRemoved(run, epoch, results, cleared)


def score_prompt(
    conn: Connection,
    run_ref: str | int,
    epoch_number: int,
    prompt_ref: str,
    fields: PromptResultFields,
    *,
    add: bool = False,
) -> PromptScored:
    """Record how a recorded epoch (or, with ``add``, a new one) did on a test prompt."""
    from .models import EpochFields

    run = runs.get_run(conn, run_ref)
    test_prompt = prompts.get_prompt(conn, prompt_ref)
    epoch = _existing_epoch(conn, run, epoch_number)
    if epoch is None and not add:
        _refuse_unrecorded(conn, run, epoch_number)
    added = epoch is None
    if epoch is None:
        epoch = epochs.upsert_epoch(conn, run.id, epoch_number, EpochFields())
    before = conn.execute(
        "SELECT * FROM prompt_test_results"
        " WHERE epoch_result_id = %s AND test_prompt_id = %s AND result_key = ''",
        (epoch.id, test_prompt["id"]),
    ).fetchone()
    row = prompts.record_result(conn, epoch.id, test_prompt["id"], fields)
    changes = [
        Change(name, before.get(name) if before else None, row.get(name)) for name in fields.given()
    ]
    return PromptScored(run, epoch_number, test_prompt["prompt_name"], row, changes, added)


def record_verdict(
    conn: Connection,
    run_ref: str | int,
    fields: RunFields,
    *,
    add_issues: list[str] | None = None,
    add_strengths: list[str] | None = None,
) -> VerdictRecorded:
    """Set the run's verdict fields; append issues and strengths.

    A final verdict (success, failure, partial) on a run still in progress marks it
    completed, unless ``fields`` sets the status.
    """
    from .models import RunFields as Fields

    run = runs.get_run(conn, run_ref)
    values = fields.given()
    best = values.get("best_epoch")
    if best is not None and _existing_epoch(conn, run, best) is None:
        raise NotFound(f"{run.run_name} has no epoch {best} recorded")
    if (
        values.get("overall_verdict") in FINAL_VERDICTS
        and "status" not in values
        and run.status == "in_progress"
    ):
        values["status"] = "completed"
    updated = runs.update_run(conn, run.id, Fields(**values))
    if add_issues or add_strengths:
        runs.add_to_lists(conn, run.id, list(add_issues or []), list(add_strengths or []))
        updated = runs.get_run(conn, run.id)
    names = list(values)
    if add_issues:
        names.append("issues_found")
    if add_strengths:
        names.append("strengths")
    changes = [
        Change(name, getattr(run, name), getattr(updated, name)) for name in dict.fromkeys(names)
    ]
    return VerdictRecorded(updated, changes)
