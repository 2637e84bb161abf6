"""The rules of judging: scoring epochs and prompts, removing a mistaken epoch, the run's
verdict. The CLI (and any other front end: the dashboard's judging page) calls these with
plain values or the pydantic field models and shows what they report; the functions run
inside the caller's transaction and change nothing when they refuse.

- An epoch that was never recorded is not created by a score (a typo must not add epoch
  99): the caller must ask for it (``add=True``, the CLI's ``--add``).
- Every change is reported as (field, before, after), so a confirmation can say exactly
  what changed, and ``undo_fields()`` gives the values that put it back.
- A flag both set and cleared in one score is refused (FlagConflict); a checkpoint named
  by path is stored absolute, with its size when the file exists.
- The best epoch of a verdict must be a recorded epoch; issues and strengths are appended
  (after emptying the list, when asked).
- A verdict of success, failure or partial on a run still ``in_progress`` completes it,
  unless the caller sets the status.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import epochs, prompts, runs
from .errors import FlagConflict, InvalidValue, NotFound
from .pg import Connection
from .vocab import EPOCH_FLAGS

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


def undo_values(changes: Iterable[Change]) -> dict[str, Any]:
    """The values before the changes that changed something: given back to the same
    function (as its fields), they undo it. An epoch or result that a call added is not
    removed by this: see ``added`` / ``added_epoch``."""
    return {c.field: c.before for c in changes if c.changed}


@dataclass
class EpochScored:
    """The outcome of scoring an epoch."""

    run: TrainingRun
    epoch: EpochResult
    changes: list[Change] = field(default_factory=list)
    added: bool = False

    def undo_fields(self) -> dict[str, Any]:
        """The fields that undo this score (see undo_values)."""
        return undo_values(self.changes)


@dataclass
class PromptScored:
    """The outcome of scoring an epoch on a test prompt."""

    run: TrainingRun
    epoch_number: int
    prompt_name: str
    result: dict[str, Any]
    changes: list[Change] = field(default_factory=list)
    added_epoch: bool = False
    linked_image: bool = False  # the result scored is an image linked by capture
    linked_images: int = 0  # the images linked to this epoch and prompt (their own results)

    @property
    def result_id(self) -> int:
        """The prompt_test_results row scored (for score_prompt_result)."""
        return int(self.result["id"])

    def undo_fields(self) -> dict[str, Any]:
        """The fields that undo this score (see undo_values)."""
        return undo_values(self.changes)


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

    def undo_fields(self) -> dict[str, Any]:
        """The fields that undo this verdict (issues and strengths as whole lists: give
        them as fields, not as additions)."""
        return undo_values(self.changes)


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


def flag_fields(flags: Iterable[str] = (), clear_flags: Iterable[str] = ()) -> dict[str, bool]:
    """Epoch columns for flags set and cleared by name (EPOCH_FLAGS): FlagConflict when a
    flag is both, InvalidValue (field ``flag``) for a name that is not a flag."""
    set_, cleared = list(flags), list(clear_flags)
    unknown = [f for f in (*set_, *cleared) if f not in EPOCH_FLAGS]
    if unknown:
        raise InvalidValue(
            "flag", f"{unknown[0]!r} is not a flag (one of {', '.join(sorted(EPOCH_FLAGS))})"
        )
    both = sorted(set(set_) & set(cleared))
    if both:
        raise FlagConflict(both)
    return {EPOCH_FLAGS[f]: True for f in set_} | {EPOCH_FLAGS[f]: False for f in cleared}


def checkpoint_fields(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Epoch columns for a checkpoint named by path: the absolute path, and when the file
    exists its size in bytes and in MB (rounded to 2 decimals, as the column keeps it)."""
    checkpoint = Path(path)
    values: dict[str, Any] = {"checkpoint_path": str(checkpoint.absolute())}
    if checkpoint.is_file():
        size = checkpoint.stat().st_size
        values["checkpoint_size_bytes"] = size
        values["checkpoint_file_size_mb"] = round(size / 1024 / 1024, 2)
    return values


def _epoch_fields(
    fields: EpochFields | Mapping[str, Any] | None, extra: dict[str, Any]
) -> EpochFields:
    from .models import EpochFields

    given = fields.given() if isinstance(fields, EpochFields) else dict(fields or {})
    return EpochFields(**{**given, **extra})


def score_epoch(
    conn: Connection,
    run_ref: str | int,
    epoch_number: int,
    fields: EpochFields | Mapping[str, Any] | None = None,
    *,
    flags: Iterable[str] = (),
    clear_flags: Iterable[str] = (),
    checkpoint: str | os.PathLike[str] | None = None,
    add: bool = False,
) -> EpochScored:
    """Set the given fields on a recorded epoch (or, with ``add``, record it by hand).

    ``fields``: EpochFields or a mapping of its fields (validated: pydantic's
    ValidationError for a bad value); ``flags`` / ``clear_flags``: EPOCH_FLAGS names to set
    or clear (see flag_fields); ``checkpoint``: a checkpoint file (see checkpoint_fields).
    NotFound for an unknown run, or an unrecorded epoch without ``add``.
    """
    extra = flag_fields(flags, clear_flags)
    if checkpoint is not None:
        extra.update(checkpoint_fields(checkpoint))
    values = _epoch_fields(fields, extra)
    run = runs.get_run(conn, run_ref)
    before = _existing_epoch(conn, run, epoch_number)
    if before is None and not add:
        _refuse_unrecorded(conn, run, epoch_number)
    after = epochs.upsert_epoch(conn, run.id, epoch_number, values)
    changes = [
        Change(name, getattr(before, name) if before is not None else None, getattr(after, name))
        for name in values.given()
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


def _prompt_fields(fields: PromptResultFields | Mapping[str, Any]) -> PromptResultFields:
    from .models import PromptResultFields

    return fields if isinstance(fields, PromptResultFields) else PromptResultFields(**fields)


def _result_changes(
    before: Mapping[str, Any] | None, after: Mapping[str, Any], fields: PromptResultFields
) -> list[Change]:
    return [
        Change(name, before.get(name) if before else None, after.get(name))
        for name in fields.given()
    ]


def score_prompt(
    conn: Connection,
    run_ref: str | int,
    epoch_number: int,
    prompt_ref: str | int,
    fields: PromptResultFields | Mapping[str, Any],
    *,
    add: bool = False,
) -> PromptScored:
    """Record how a recorded epoch (or, with ``add``, a new one) did on a test prompt: the
    person's own result (``result_key = ''``), or, when ``image_path`` is an image capture
    linked to this epoch and prompt, that image's result (each linked image is a result of
    its own: score_prompt_result scores one by id)."""
    from .models import EpochFields

    values = _prompt_fields(fields)
    run = runs.get_run(conn, run_ref)
    test_prompt = prompts.get_prompt(conn, prompt_ref)
    epoch = _existing_epoch(conn, run, epoch_number)
    if epoch is None and not add:
        _refuse_unrecorded(conn, run, epoch_number)
    added = epoch is None
    if epoch is None:
        epoch = epochs.upsert_epoch(conn, run.id, epoch_number, EpochFields())
    linked = conn.execute(
        "SELECT id, image_path FROM prompt_test_results"
        " WHERE epoch_result_id = %s AND test_prompt_id = %s AND result_key <> ''",
        (epoch.id, test_prompt["id"]),
    ).fetchall()
    image = values.given().get("image_path")
    for result in linked:
        if image is not None and result["image_path"] == image:
            # the image capture linked: scored as its own result (not given a second row)
            scored = score_prompt_result(conn, result["id"], values)
            scored.linked_image, scored.linked_images = True, len(linked)
            return scored
    before = conn.execute(
        "SELECT * FROM prompt_test_results"
        " WHERE epoch_result_id = %s AND test_prompt_id = %s AND result_key = ''",
        (epoch.id, test_prompt["id"]),
    ).fetchone()
    row = prompts.record_result(conn, epoch.id, test_prompt["id"], values)
    changes = _result_changes(before, row, values)
    return PromptScored(run, epoch_number, test_prompt["prompt_name"], row, changes, added,
                        linked_images=len(linked))  # fmt: skip


def score_prompt_result(
    conn: Connection, result_id: int, fields: PromptResultFields | Mapping[str, Any]
) -> PromptScored:
    """Score one prompt result by its row id (prompt_test_results.id): any of the results of
    an epoch on a prompt (the person's own, or an image linked by capture). Sets only the
    given fields; NotFound when there is no such result."""
    values = _prompt_fields(fields)
    before = conn.execute(
        """
        SELECT ptr.*, er.training_run_id, er.epoch_number, tp.prompt_name
        FROM prompt_test_results ptr
        JOIN epoch_results er ON er.id = ptr.epoch_result_id
        JOIN test_prompts tp ON tp.id = ptr.test_prompt_id
        WHERE ptr.id = %s
        FOR UPDATE OF ptr
        """,
        (result_id,),
    ).fetchone()
    if before is None:
        raise NotFound(f"no prompt result with id {result_id}")
    row = prompts.update_result(conn, result_id, values)
    run = runs.get_run(conn, before["training_run_id"])
    changes = _result_changes(before, row, values)
    return PromptScored(run, before["epoch_number"], before["prompt_name"], row, changes)


def record_verdict(
    conn: Connection,
    run_ref: str | int,
    fields: RunFields | Mapping[str, Any] | None = None,
    *,
    add_issues: Iterable[str] = (),
    add_strengths: Iterable[str] = (),
    clear_issues: bool = False,
    clear_strengths: bool = False,
) -> VerdictRecorded:
    """Set the run's verdict fields; append issues and strengths (after emptying the list
    when ``clear_issues`` / ``clear_strengths``).

    NotFound when ``best_epoch`` is not a recorded epoch of the run. A final verdict
    (success, failure, partial) on a run still in progress marks it completed, unless
    ``fields`` sets the status.
    """
    from .models import RunFields as Fields

    given = fields.given() if isinstance(fields, Fields) else dict(fields or {})
    if clear_issues:
        given["issues_found"] = []
    if clear_strengths:
        given["strengths"] = []
    values = Fields(**given).given()
    issues, strengths = list(dict.fromkeys(add_issues)), list(dict.fromkeys(add_strengths))
    run = runs.get_run(conn, run_ref)
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
    if issues or strengths:
        runs.add_to_lists(conn, run.id, issues, strengths)
        updated = runs.get_run(conn, run.id)
    names = list(values)
    if issues:
        names.append("issues_found")
    if strengths:
        names.append("strengths")
    changes = [
        Change(name, getattr(run, name), getattr(updated, name)) for name in dict.fromkeys(names)
    ]
    return VerdictRecorded(updated, changes)
