"""Test images linked to the epoch they were made with: one ``prompt_test_results`` row per
image (sql/0009_test_images.sql). kohya's samples and A1111 / Forge / SD.Next / ComfyUI
outputs all land here, through :func:`link_image`.

- The test prompt is found by its exact text, and created when new (named from its first
  words, marked with where it came from), so the reference document's per-prompt queries
  see capture's results beside a person's.
- An image is keyed by the SHA-256 of its bytes (``result_key = 'image:<sha256>'``): reading
  the same image again, or a copy of it, updates one row; the same prompt at another seed
  or LoRA weight is another image, so another row.
- Linking never touches what a person recorded on the row (scores, verdict, notes).
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from psycopg.types.json import Jsonb

from .pg import Connection
from .vocab import ImageGenerator as Generator

PROMPT_NAME_WORDS = 8
PROMPT_NAME_CHARS = 48


@dataclass
class TestImage:
    """One rendered test image and how it was made, as read from its metadata or its file
    name. Only ``prompt`` is required; the rest is kept when known."""

    prompt: str
    negative_prompt: str | None = None
    seed: int | None = None
    steps: int | None = None
    cfg_scale: float | None = None
    sampler: str | None = None
    scheduler: str | None = None
    width: int | None = None
    height: int | None = None
    lora_weight: float | None = None
    generator: Generator = "other"
    metadata: dict[str, Any] = field(default_factory=dict)

    __test__ = False  # not a pytest test class


def image_key(sha256_hex: str) -> str:
    """The result_key of an image, from the SHA-256 of its bytes."""
    return f"image:{sha256_hex}"


def linked_paths(conn: Connection, sha256s: list[str]) -> dict[str, str]:
    """The path each of these images (by the SHA-256 of their bytes) is linked under."""
    if not sha256s:
        return {}
    rows = conn.execute(
        "SELECT DISTINCT ON (result_key) result_key, image_path FROM prompt_test_results"
        " WHERE result_key = ANY(%s) ORDER BY result_key, id",
        ([image_key(sha) for sha in sha256s],),
    ).fetchall()
    return {row["result_key"].removeprefix("image:"): row["image_path"] for row in rows}


def copy_of(path: str, linked_path: str | None) -> str | None:
    """The image ``path`` is a copy of: the same bytes, linked under another path that is
    still there. The copy is left alone, so the row keeps its path (a second pass over a
    folder holding both moved it back and forth); a file moved away is linked anew."""
    if linked_path is None or linked_path == path or not os.path.exists(linked_path):
        return None
    return linked_path


def file_sha256(path: str | Path, chunk: int = 1 << 20) -> str:
    """SHA-256 of a file's bytes, streamed."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def prompt_name_for(text: str) -> str:
    """A readable name for a prompt capture creates: its first words."""
    words = " ".join(text.split()).split(" ")[:PROMPT_NAME_WORDS]
    name = " ".join(words)[:PROMPT_NAME_CHARS].strip(" ,.;:")
    return name or "prompt"


def find_or_create_prompt(
    conn: Connection,
    image: TestImage,
    *,
    source: str,
    source_run_id: int | None = None,
) -> dict[str, Any]:
    """The test prompt whose text is exactly ``image.prompt`` (the oldest one if several,
    active ones first); created when there is none, with the image's settings and ``source``
    (e.g. ``kohya prompts file /path/prompts.txt`` or ``image /path/x.png``).

    Serialised on the prompt text (a transaction-scoped advisory lock), so two processes
    linking the same new prompt at once create it once. Run inside a transaction."""
    text = image.prompt
    conn.execute("SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))", (text,))
    row = conn.execute(
        "SELECT * FROM test_prompts WHERE md5(prompt_text) = md5(%s) AND prompt_text = %s"
        " ORDER BY active DESC, id LIMIT 1",
        (text, text),
    ).fetchone()
    if row:
        return row
    base = prompt_name_for(text)
    taken = {
        r["prompt_name"]
        for r in conn.execute(
            "SELECT prompt_name FROM test_prompts WHERE prompt_name = %s OR prompt_name LIKE %s",
            (base, base.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + " #%"),
        ).fetchall()
    }
    name, n = base, 1
    while name in taken:
        n += 1
        name = f"{base} #{n}"
    row = conn.execute(
        """
        INSERT INTO test_prompts (prompt_name, prompt_text, negative_prompt, seed, sampler,
                                  steps, cfg_scale, width, height, source, source_run_id)
        VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
        RETURNING *
        """,
        (name, text, image.negative_prompt, image.seed, image.sampler, image.steps,
         image.cfg_scale, image.width, image.height, source, source_run_id),
    ).fetchone()  # fmt: skip
    assert row is not None
    return row


def link_image(
    conn: Connection,
    epoch_result_id: int,
    image: TestImage,
    *,
    image_path: str,
    image_sha256: str,
    source: str,
    source_run_id: int | None = None,
) -> dict[str, Any]:
    """Record one image as a result of the epoch ``epoch_result_id`` on the test prompt of
    its text (created when new). Idempotent: the same image bytes update the same row (its
    path and settings), and a person's scores, verdict and notes on it are kept. Returns the
    row. Run inside a transaction."""
    row, _change = link_image_once(
        conn, epoch_result_id, image, image_path=image_path, image_sha256=image_sha256,
        source=source, source_run_id=source_run_id,
    )  # fmt: skip
    return row


Change = Literal["inserted", "updated", "unchanged"]

# One image as a result: the same image bytes update their row (path, settings) only when
# something differs, and a person's judgement on it is kept. Parameters: epoch_result_id,
# test_prompt_id, result_key, image_path, generator, seed, steps, cfg_scale, sampler,
# scheduler, width, height, lora_weight, image_metadata (also capture/sample_links.py's).
RESULT_UPSERT = """
INSERT INTO prompt_test_results (
    epoch_result_id, test_prompt_id, result_key, image_path, generator, seed, steps,
    cfg_scale, sampler, scheduler, width, height, lora_weight, image_metadata, captured_at)
VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, now())
ON CONFLICT (epoch_result_id, test_prompt_id, result_key) DO UPDATE SET
    image_path = EXCLUDED.image_path, generator = EXCLUDED.generator,
    seed = EXCLUDED.seed, steps = EXCLUDED.steps, cfg_scale = EXCLUDED.cfg_scale,
    sampler = EXCLUDED.sampler, scheduler = EXCLUDED.scheduler,
    width = EXCLUDED.width, height = EXCLUDED.height,
    lora_weight = EXCLUDED.lora_weight, image_metadata = EXCLUDED.image_metadata,
    captured_at = EXCLUDED.captured_at
WHERE (prompt_test_results.image_path, prompt_test_results.generator,
       prompt_test_results.seed, prompt_test_results.steps, prompt_test_results.cfg_scale,
       prompt_test_results.sampler, prompt_test_results.scheduler, prompt_test_results.width,
       prompt_test_results.height, prompt_test_results.lora_weight,
       prompt_test_results.image_metadata)
      IS DISTINCT FROM
      (EXCLUDED.image_path, EXCLUDED.generator, EXCLUDED.seed, EXCLUDED.steps,
       EXCLUDED.cfg_scale, EXCLUDED.sampler, EXCLUDED.scheduler, EXCLUDED.width,
       EXCLUDED.height, EXCLUDED.lora_weight, EXCLUDED.image_metadata)"""


def link_image_once(
    conn: Connection,
    epoch_result_id: int,
    image: TestImage,
    *,
    image_path: str,
    image_sha256: str,
    source: str,
    source_run_id: int | None = None,
    prompts: dict[str, dict[str, Any]] | None = None,
) -> tuple[dict[str, Any], Change]:
    """:func:`link_image`, saying what it did: ``inserted`` a new row, ``updated`` one
    whose path or settings differed, or left it ``unchanged`` (a second read of the same
    image writes nothing, not even ``updated_at`` / ``captured_at``).

    ``prompts``: test prompts already found in this transaction, by text (filled as they
    are found), so a batch of images of a few prompts looks each up once. Drop it when the
    transaction (or a savepoint that may have created one) rolls back."""
    prompt = prompts.get(image.prompt) if prompts is not None else None
    if prompt is None:
        prompt = find_or_create_prompt(conn, image, source=source, source_run_id=source_run_id)
        if prompts is not None:
            prompts[image.prompt] = prompt
    key = image_key(image_sha256)
    metadata = Jsonb(image.metadata) if image.metadata else None
    row = conn.execute(
        RESULT_UPSERT + " RETURNING *, (xmax = 0) AS _inserted",
        (epoch_result_id, prompt["id"], key, image_path, image.generator,
         image.seed, image.steps, image.cfg_scale, image.sampler, image.scheduler, image.width,
         image.height, image.lora_weight, metadata),
    ).fetchone()  # fmt: skip
    if row is not None:
        inserted = row.pop("_inserted")
        return row, "inserted" if inserted else "updated"
    row = conn.execute(
        "SELECT * FROM prompt_test_results"
        " WHERE epoch_result_id = %s AND test_prompt_id = %s AND result_key = %s",
        (epoch_result_id, prompt["id"], key),
    ).fetchone()
    assert row is not None
    return row, "unchanged"
