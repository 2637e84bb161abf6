"""test_prompts and prompt_test_results: the fixed prompts every checkpoint is judged on,
and each epoch's result on each, as a person sets them (test images are linked to their
epoch in ``image_results.py``; the rules of judging are in ``judging.py``; a run's results
are also read by ``runs.py`` and the dashboard; ``judging.py`` sets scores through
these)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from psycopg import sql

from . import _sqlbuild
from .errors import NotFound
from .lookup import find_by_ref
from .pg import Connection

if TYPE_CHECKING:
    from .models import PromptResultFields, TestPromptCreate


def add_prompt(conn: Connection, prompt: TestPromptCreate) -> dict[str, Any]:
    """Insert a test prompt; a taken name raises AlreadyExists."""
    query, params = _sqlbuild.insert("test_prompts", prompt.model_dump(exclude_none=True))
    row = conn.execute(query, params).fetchone()
    assert row is not None
    return row


def list_prompts(conn: Connection, *, include_inactive: bool = False) -> list[dict[str, Any]]:
    """Test prompts with how many results each has."""
    return conn.execute(
        """
        SELECT tp.*, count(ptr.id) AS results
        FROM test_prompts tp LEFT JOIN prompt_test_results ptr ON ptr.test_prompt_id = tp.id
        WHERE tp.active OR %s
        GROUP BY tp.id ORDER BY tp.category NULLS LAST, tp.prompt_name
        """,
        (include_inactive,),
    ).fetchall()


def get_prompt(conn: Connection, ref: str | int) -> dict[str, Any]:
    """A prompt by id, exact name, or unique name prefix (found as runs are)."""
    return find_by_ref(
        conn, "test_prompts", "prompt_name", ref, noun="test prompt", nouns="prompts",
        not_found_hint=lambda _: " (see `lora-tracker prompt list`)",
    )  # fmt: skip


def set_active(conn: Connection, ref: str, active: bool) -> dict[str, Any]:
    prompt = get_prompt(conn, ref)
    row = conn.execute(
        "UPDATE test_prompts SET active = %s WHERE id = %s RETURNING *", (active, prompt["id"])
    ).fetchone()
    assert row is not None
    return row


def record_result(
    conn: Connection, epoch_result_id: int, prompt_id: int, fields: PromptResultFields
) -> dict[str, Any]:
    """Create or update the person's own result of one epoch on one prompt (only the given
    fields): the row with ``result_key = ''`` (images linked by capture have their own)."""
    query, params = _sqlbuild.upsert(
        "prompt_test_results",
        {"epoch_result_id": epoch_result_id, "test_prompt_id": prompt_id, "result_key": ""},
        fields.given(),
    )
    row = conn.execute(query, params).fetchone()
    assert row is not None
    return row


def update_result(conn: Connection, result_id: int, fields: PromptResultFields) -> dict[str, Any]:
    """Set only the given fields of one prompt result (by id); NotFound when it is gone."""
    values = fields.given()
    if values:
        assignments, params = _sqlbuild.assignments(values)
        query = sql.SQL("UPDATE prompt_test_results SET {} WHERE id = %s RETURNING *").format(
            assignments
        )
        row = conn.execute(query, [*params, result_id]).fetchone()
    else:
        row = conn.execute(
            "SELECT * FROM prompt_test_results WHERE id = %s", (result_id,)
        ).fetchone()
    if row is None:
        raise NotFound(f"no prompt result with id {result_id}")
    return row


# A prompt's line in the run's kohya prompts file (0-based: the ``_{index:02d}_`` of its
# samples), as capture recorded it with each sample image it linked
# (capture/sample_links.py: image_metadata "prompts_file" and "index"); NULL for a prompt
# that has no sample image of this run (entered by hand, or linked from another tool's
# images). The lowest, should one prompt stand on several lines. Needs ``ptr`` (a
# prompt_test_results row), ``er`` (its epoch) and ``tp`` (its test prompt).
PROMPT_INDEX = """
    min(CASE WHEN ptr.image_metadata ? 'prompts_file'
              AND jsonb_typeof(ptr.image_metadata -> 'index') = 'number'
              AND (ptr.image_metadata ->> 'index') ~ '^[0-9]{1,6}$'
             THEN (ptr.image_metadata ->> 'index')::int END)
        OVER (PARTITION BY er.training_run_id, tp.id)"""


def results_of_runs(conn: Connection, run_ids: list[int]) -> dict[int, list[dict[str, Any]]]:
    """Every prompt result of some runs (epoch, prompt, scores, verdict, image, notes, and
    for a linked test image its key, generator, seed and LoRA weight), by run id; in each
    epoch the prompts in the order of the run's kohya prompts file (``prompt_index``, see
    PROMPT_INDEX), the others after them by name. A person's own result (``result_key``
    '') comes before the images of its cell."""
    rows = conn.execute(
        f"""
        SELECT er.training_run_id, ptr.id, er.epoch_number, tp.prompt_name,
               {PROMPT_INDEX} AS prompt_index,
               ptr.score, ptr.style_match_score, ptr.prompt_adherence_score, ptr.verdict,
               ptr.image_path, ptr.notes, ptr.result_key, ptr.generator, ptr.seed,
               ptr.lora_weight
        FROM prompt_test_results ptr
        JOIN epoch_results er ON er.id = ptr.epoch_result_id
        JOIN test_prompts tp ON tp.id = ptr.test_prompt_id
        WHERE er.training_run_id = ANY(%s)
        ORDER BY er.epoch_number, prompt_index NULLS LAST, tp.prompt_name,
                 ptr.result_key <> '', ptr.seed, ptr.image_path
        """,  # noqa: S608 (PROMPT_INDEX is fixed SQL written here, no values)
        (run_ids,),
    ).fetchall()
    found: dict[int, list[dict[str, Any]]] = {run_id: [] for run_id in run_ids}
    for row in rows:
        found[row.pop("training_run_id")].append(row)
    return found


def grid(results: list[dict[str, Any]]) -> tuple[list[str], list[list[Any]]]:
    """Epoch x prompt grid of 'score verdict' cells, from one run's results_of_runs(). A
    cell shows the person's own result (else the first scored image), and how many test
    images are linked to it ('8 pass · 3 img')."""
    # the prompts file's order (prompt_index), then the prompts entered by hand, by name
    indexes = {r["prompt_name"]: r.get("prompt_index") for r in results}
    prompts = sorted(indexes, key=lambda name: (indexes[name] is None, indexes[name] or 0, name))
    epochs = sorted({r["epoch_number"] for r in results})
    cells: dict[tuple[int, str], list[dict[str, Any]]] = {}
    for r in results:
        cells.setdefault((r["epoch_number"], r["prompt_name"]), []).append(r)
    rows = []
    for epoch in epochs:
        row: list[Any] = [epoch]
        for name in prompts:
            found = cells.get((epoch, name))
            if not found:
                row.append("")
                continue
            own = next((r for r in found if not r.get("result_key")), None)
            shown = own or next((r for r in found if r["score"] is not None), found[0])
            parts = [str(shown["score"]) if shown["score"] is not None else "",
                     shown["verdict"] or ""]  # fmt: skip
            text = " ".join(p for p in parts if p)
            images = sum(1 for r in found if (r.get("result_key") or "").startswith("image:"))
            if images:
                text = f"{text} · {images} img" if text else f"{images} img"
            row.append(text or "·")
        rows.append(row)
    return ["epoch", *prompts], rows


def active_prompts(conn: Connection) -> list[dict[str, Any]]:
    """The active test prompts in a stable order (oldest first, so a prompt added later
    comes last and the others keep their line in an exported kohya prompts file)."""
    return conn.execute("SELECT * FROM test_prompts WHERE active ORDER BY id").fetchall()
