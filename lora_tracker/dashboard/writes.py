"""The dashboard's write routes: URL path -> function, apart from the HTTP plumbing.

The server (``server.py``) serves a POST to a path found here only after `gate.Gate` let it
through (Host, Origin, token, a JSON object body of bounded size; never on a
``--read-only`` server). It then opens one transaction and calls the route with the
connection and the parsed body::

    def route(conn: Connection, body: dict[str, Any]) -> dict[str, Any]: ...

The route validates the body and changes the record only through the library (the same
functions as the CLI, e.g. `lora_tracker.judging`): no SQL and no rules here or in the
server. Its result is sent back as JSON (status 200). A refusal is raised, never returned:
`lora_tracker.errors.InvalidInput` (and the other `LoraTrackerError` s) or a pydantic
``ValidationError`` become a 400 (`NotFound`: 404, `AlreadyExists`: 409) with a one-line
``{"error": "..."}``, and the transaction is rolled back, so nothing changes.

Paths start with ``/api/``; the page posts to them with ``ltWrite.post(path, body)``
(``static/write.js``), which adds the token.

The judging view's routes (``/api/judge/...``) are the CLI's `score`, `prompt score` and
`verdict`, for the fields a person judges; which fields the page may set is the only rule
kept here.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ..errors import InvalidInput
from ..pg import Connection
from . import data

if TYPE_CHECKING:
    from ..judging import Change, PromptScored

WriteRoute = Callable[[Connection, dict[str, Any]], dict[str, Any]]

# what a person judges; the rest of an epoch (checkpoint, loss, samples) is capture's
EPOCH_FIELDS = (
    "visual_quality_score", "style_match_score", "prompt_adherence_score", "verdict",
    "has_wrong_backgrounds", "has_random_pixels", "is_photorealistic", "production_ready",
    "observations",
)  # fmt: skip
PROMPT_FIELDS = ("score", "style_match_score", "prompt_adherence_score", "verdict", "notes")
RUN_FIELDS = (
    "overall_verdict", "quality_score", "best_epoch", "key_findings", "issues_found",
    "strengths", "recommended_for", "status", "production_ready", "notes",
)  # fmt: skip
RESULT_COLUMNS = (
    "id", "score", "style_match_score", "prompt_adherence_score", "verdict", "notes",
    "image_path", "result_key",
)  # fmt: skip


def _run_ref(body: dict[str, Any]) -> str | int:
    ref = body.get("run")
    if isinstance(ref, bool) or not isinstance(ref, (str, int)) or str(ref).strip() == "":
        raise InvalidInput("run: a run name or id is required")
    return ref


def _number(body: dict[str, Any], key: str) -> int:
    value = body.get(key)
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidInput(f"{key}: a whole number is required")
    return value


def _fields(body: dict[str, Any], allowed: tuple[str, ...]) -> dict[str, Any]:
    fields = body.get("fields")
    if not isinstance(fields, dict) or not fields:
        raise InvalidInput("fields: nothing to set")
    unknown = sorted(set(fields) - set(allowed))
    if unknown:
        raise InvalidInput(f"{', '.join(unknown)}: not something the judging view sets")
    return fields


# the page's words for the fields it sets (a refusal names what the person sees)
LABELS = {"visual_quality_score": "visual", "style_match_score": "style",
          "prompt_adherence_score": "adherence", "quality_score": "quality",
          "score": "score"}  # fmt: skip


def _validated(model: Any, fields: dict[str, Any]) -> Any:
    """The pydantic model of ``fields``; a bad value is one line, as the CLI says it."""
    from pydantic import ValidationError

    try:
        return model(**fields)
    except ValidationError as exc:
        parts = []
        for error in exc.errors():
            name = ".".join(str(p) for p in error.get("loc", ())) or "value"
            message = str(error.get("msg", "invalid"))
            message = message[:1].lower() + message[1:]
            parts.append(f"{LABELS.get(name, name)} {error.get('input')!r} refused: {message}")
        raise InvalidInput("; ".join(parts)) from None


def _changes(changes: list[Change]) -> list[dict[str, Any]]:
    return [{"field": c.field, "before": c.before, "after": c.after} for c in changes]


def score_epoch(conn: Connection, body: dict[str, Any]) -> dict[str, Any]:
    """``{"run", "epoch", "fields"}``: as `lora-tracker score RUN EPOCH ...` (a recorded
    epoch only: the page never adds one)."""
    from .. import judging
    from ..models import EpochFields

    fields = _validated(EpochFields, _fields(body, EPOCH_FIELDS))
    done = judging.score_epoch(conn, _run_ref(body), _number(body, "epoch"), fields)
    epoch = done.epoch.model_dump()
    return {
        "run": done.run.run_name,
        "epoch": {name: epoch.get(name) for name in data.EPOCH_COLUMNS},
        "changes": _changes(done.changes),
        "version": data.judging_version(conn, done.run.id),
    }


def score_prompt(conn: Connection, body: dict[str, Any]) -> dict[str, Any]:
    """``{"run", "result", "fields"}``: one prompt result by its id, an image capture linked
    or the person's own row (judging.score_prompt_result); or ``{"run", "epoch", "prompt",
    "fields"}``: the person's own result, as `lora-tracker prompt score RUN EPOCH PROMPT
    ...` (the prompt by id or name; a recorded epoch only)."""
    from .. import judging, runs
    from ..models import PromptResultFields

    fields = _validated(PromptResultFields, _fields(body, PROMPT_FIELDS))
    if body.get("result") is not None:
        run = runs.get_run(conn, _run_ref(body))
        done = judging.score_prompt_result(conn, _number(body, "result"), fields)
        if done.run.id != run.id:  # a stale page or a wrong id: refused, rolled back
            raise InvalidInput(f"prompt result {body['result']} is not one of {run.run_name}'s")
        return _prompt_scored(conn, done)
    prompt = body.get("prompt")
    if isinstance(prompt, bool) or not isinstance(prompt, (str, int)) or str(prompt) == "":
        raise InvalidInput("prompt: a test prompt name or id is required")
    done = judging.score_prompt(conn, _run_ref(body), _number(body, "epoch"), str(prompt), fields)
    return _prompt_scored(conn, done)


def _prompt_scored(conn: Connection, done: PromptScored) -> dict[str, Any]:
    return {
        "run": done.run.run_name,
        "result": {name: done.result.get(name) for name in RESULT_COLUMNS},
        "changes": _changes(done.changes),
        "version": data.judging_version(conn, done.run.id),
    }


def record_verdict(conn: Connection, body: dict[str, Any]) -> dict[str, Any]:
    """``{"run", "fields"}``: as `lora-tracker verdict RUN ...`; issues and strengths are
    given as whole lists (the form edits the list)."""
    from .. import judging
    from ..models import RunFields

    fields = _validated(RunFields, _fields(body, RUN_FIELDS))
    done = judging.record_verdict(conn, _run_ref(body), fields)
    run = done.run.model_dump()
    return {
        "run": {name: run.get(name) for name in data.JUDGE_RUN_COLUMNS},
        "changes": _changes(done.changes),
        "version": data.judging_version(conn, done.run.id),
    }


WRITE_ROUTES: dict[str, WriteRoute] = {
    "/api/judge/epoch": score_epoch,
    "/api/judge/prompt": score_prompt,
    "/api/judge/verdict": record_verdict,
}
