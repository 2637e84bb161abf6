"""kohya's sample images as prompt results: each sample
``{output_name}_e{epoch:06d}_{index:02d}_{stamp}[_{seed}].png`` becomes the
``prompt_test_results`` row of (that epoch, the test prompt on line ``index`` of the run's
prompts file), the test prompt found by the line's exact text or created (marked with the
prompts file it came from). Called where capture adds sample images to their epoch, in the
same transaction, so it lands exactly once with the event.

- A step sample (``{output_name}_{step:06d}_...``) is linked to the epoch of the checkpoint
  saved at that step, where there is one; otherwise it stays a run sample only.
- A sample whose index or seed suffix the prompts file no longer matches, a file gone, or
  a PNG still being written (no IEND trailer yet) is left unlinked: the next event that
  carries it tries again, and a linked path is never linked twice.
"""

from __future__ import annotations

import functools
import json
import logging
import os
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from psycopg.types.json import Jsonb

from ..image_results import (
    RESULT_UPSERT,
    TestImage,
    file_sha256,
    find_or_create_prompt,
    image_key,
)
from ..pg import Connection
from .files import SampleName, classify_sample
from .sample_prompts import SamplePromptsFile, configured_prompts_path, read_sample_prompts

log = logging.getLogger(__name__)

PNG_END = b"\x00\x00\x00\x00IEND\xaeB`\x82"
MAX_STEPS = 2**31 - 1
MAX_CFG = 999.99  # numeric(5, 2)


if TYPE_CHECKING:
    from ..kohya_prompts import SamplePrompt


@functools.lru_cache(maxsize=64)
def _parsed(content: str, fmt: str) -> tuple[SamplePrompt, ...] | None:
    try:
        from ..kohya_prompts import parse_prompts  # only when samples are linked

        return tuple(parse_prompts(content, fmt))  # type: ignore[arg-type]
    except Exception as exc:  # read before, so hardly ever: never stops an event
        log.warning("sample prompts not linked: %s", exc)
        return None


def prompts_of_run(run: dict[str, Any]) -> SamplePromptsFile | None:
    """The prompts file the run's stored configuration names, read now (an event that
    carried none: a run recorded by an older hook, or by a watcher without the file)."""
    path = configured_prompts_path(run.get("config"))
    if not path or not os.path.isabs(path):
        return None
    return read_sample_prompts(path, "run")


def link_samples(
    conn: Connection,
    run: dict[str, Any],
    paths: Iterable[str],
    prompts: SamplePromptsFile | None,
) -> int:
    """Link the run's sample images ``paths`` to their (epoch, test prompt); returns how
    many were linked now. Run inside the event's transaction."""
    wanted = sorted(set(paths))
    if not wanted:
        return 0
    if prompts is None:
        prompts = prompts_of_run(run)
    parsed = _parsed(prompts.content, prompts.format) if prompts is not None else None
    if prompts is None or not parsed:
        return 0
    run_id = int(run["id"])
    todo = _unlinked(conn, run_id, wanted, list(parsed), prompts)
    if not todo:
        return 0
    epochs = _target_epochs(conn, run_id, [s for _, s, _ in todo])
    ids = _epoch_ids(conn, run_id, sorted({e for e, _ in epochs.values()}))
    prompt_ids: dict[str, int] = {}  # a prompt's text -> its test prompt, found once
    params = []
    for path, sample, prompt in todo:
        target = epochs.get((sample.epoch, sample.step))
        if target is None:
            continue  # a step sample with no checkpoint at its step: a run sample only
        digest = _complete_image_sha256(path)
        if digest is None:
            continue
        epoch, checkpoint = target
        image = _test_image(prompt, prompts, sample, checkpoint)
        if image.prompt not in prompt_ids:
            found = find_or_create_prompt(conn, image, source=prompts.source,
                                          source_run_id=run_id)  # fmt: skip
            prompt_ids[image.prompt] = int(found["id"])
        params.append(_result_params(ids[epoch], prompt_ids[image.prompt], image, path, digest))
    if params:
        with conn.cursor() as cur:  # pipelined: one round trip for the batch
            cur.executemany(RESULT_UPSERT, params)
    return len(params)


def _result_params(
    epoch_result_id: int, prompt_id: int, image: TestImage, path: str, digest: str
) -> tuple[Any, ...]:
    return (epoch_result_id, prompt_id, image_key(digest), path, image.generator, image.seed,
            image.steps, image.cfg_scale, image.sampler, image.scheduler, image.width,
            image.height, image.lora_weight, Jsonb(image.metadata))  # fmt: skip


def _unlinked(
    conn: Connection,
    run_id: int,
    wanted: list[str],
    parsed: list[SamplePrompt],
    prompts: SamplePromptsFile,
) -> list[tuple[str, SampleName, SamplePrompt]]:
    """The samples not linked yet, each with the prompt of its line (a sample the file no
    longer matches is left out, said at INFO)."""
    done = {
        row["image_path"]
        for row in conn.execute(
            """
            SELECT ptr.image_path FROM prompt_test_results ptr
            JOIN epoch_results er ON er.id = ptr.epoch_result_id
            WHERE er.training_run_id = %s AND ptr.generator = 'kohya'
              AND ptr.image_path = ANY(%s)
            """,
            (run_id, wanted),
        ).fetchall()
    }
    from ..kohya_prompts import prompt_for_sample  # only when samples are linked

    todo: list[tuple[str, SampleName, SamplePrompt]] = []
    for path in wanted:
        sample = classify_sample(Path(path))
        if path in done or sample is None:
            continue
        prompt = prompt_for_sample(parsed, sample.index, sample.seed)
        if prompt is None:
            which = f"prompt {sample.index + 1} (_{sample.index:02d}_)"
            missing = sample.index >= len(parsed)
            wrong = f"has no {which}" if missing else f"sets another seed for {which}"
            log.info("%s: %s %s (changed since?), not linked",
                     Path(path).name, prompts.path, wrong)  # fmt: skip
            continue
        todo.append((path, sample, prompt))
    return todo


def _target_epochs(
    conn: Connection, run_id: int, samples: list[SampleName]
) -> dict[tuple[int | None, int | None], tuple[int, str | None]]:
    """(epoch, step) of each sample name -> (epoch number, the step's checkpoint path)."""
    found: dict[tuple[int | None, int | None], tuple[int, str | None]] = {}
    steps = sorted({s.step for s in samples if s.epoch is None and s.step is not None})
    for sample in samples:
        if sample.epoch is not None:
            found[(sample.epoch, None)] = (sample.epoch, None)
    if steps:
        rows = conn.execute(
            """
            SELECT DISTINCT ON (global_step) global_step, epoch_number, path
            FROM checkpoints
            WHERE training_run_id = %s AND global_step = ANY(%s) AND epoch_number IS NOT NULL
            ORDER BY global_step, (kind = 'step'), id
            """,
            (run_id, steps),
        ).fetchall()
        for row in rows:
            found[(None, row["global_step"])] = (row["epoch_number"], row["path"])
    return found


def _epoch_ids(conn: Connection, run_id: int, epochs: list[int]) -> dict[int, int]:
    """The epoch_results ids of a run's epochs, rows made where missing (as sample images
    make them: samples outlive checkpoints)."""
    if not epochs:
        return {}
    conn.execute(
        "INSERT INTO epoch_results (training_run_id, epoch_number) "
        "SELECT %s, unnest(%s::int[]) ON CONFLICT (training_run_id, epoch_number) DO NOTHING",
        (run_id, epochs),
    )
    rows = conn.execute(
        "SELECT id, epoch_number FROM epoch_results "
        "WHERE training_run_id = %s AND epoch_number = ANY(%s)",
        (run_id, epochs),
    ).fetchall()
    return {row["epoch_number"]: row["id"] for row in rows}


def _complete_image_sha256(path: str) -> str | None:
    """SHA-256 of a sample image that is whole (a PNG ends with its IEND chunk: kohya
    writes in place, and a live watcher may see it half written); None otherwise."""
    try:
        if path.lower().endswith(".png"):
            with open(path, "rb") as handle:
                handle.seek(0, os.SEEK_END)
                if handle.tell() < len(PNG_END):
                    return None
                handle.seek(-len(PNG_END), os.SEEK_END)
                if handle.read() != PNG_END:
                    return None
        return file_sha256(path)
    except OSError:
        return None


def _test_image(
    prompt: SamplePrompt, prompts: SamplePromptsFile, sample: SampleName, checkpoint: str | None
) -> TestImage:
    """What the sample was rendered with, as the prompts file's line says (values the
    database cannot hold are left out; kohya's whole prompt dict is kept as metadata)."""

    def positive(value: int | None, top: int = MAX_STEPS) -> int | None:
        return value if value is not None and 0 < value <= top else None

    cfg = prompt.cfg_scale
    metadata: dict[str, Any] = {
        "prompts_file": prompts.path,
        "found_by": prompts.found_by,
        "index": prompt.index,
        "options": json.loads(json.dumps(prompt.options, default=str)),
    }
    if sample.epoch is not None:
        metadata["epoch"] = sample.epoch
    if sample.step is not None:
        metadata["step"] = sample.step
    if checkpoint is not None:
        metadata["checkpoint"] = checkpoint
    seed = prompt.seed if prompt.seed is not None and abs(prompt.seed) < 2**63 else None
    return TestImage(
        prompt=prompt.prompt,
        negative_prompt=prompt.negative_prompt,
        seed=seed,
        steps=positive(prompt.steps),
        cfg_scale=cfg if cfg is not None and 0 <= cfg <= MAX_CFG else None,
        sampler=prompt.sampler,
        width=positive(prompt.width),
        height=positive(prompt.height),
        generator="kohya",
        metadata=metadata,
    )


class SampleLinks:
    """Sample images to link, gathered over a batch of events and linked run by run once
    the batch's rows are written (a backfill's checkpoint events each carry their run's
    samples: each path is looked at once per batch)."""

    def __init__(self) -> None:
        self._runs: dict[int, dict[str, Any]] = {}
        self._paths: dict[int, set[str]] = {}
        self._prompts: dict[int, SamplePromptsFile | None] = {}
        self._steps: dict[int, set[int]] = {}

    def add(
        self,
        run: dict[str, Any],
        paths: Iterable[str],
        prompts: SamplePromptsFile | None,
        step_checkpoint: int | None = None,
    ) -> None:
        """Queue ``paths``; ``step_checkpoint``: the step of a step checkpoint in this batch,
        whose step samples, recorded before it (kohya samples, then saves), are linked now."""
        run_id = int(run["id"])
        self._runs[run_id] = run
        self._paths.setdefault(run_id, set()).update(paths)
        if prompts is not None or run_id not in self._prompts:
            self._prompts[run_id] = prompts
        if step_checkpoint is not None:
            self._steps.setdefault(run_id, set()).add(step_checkpoint)

    def flush(self, conn: Connection) -> None:
        runs, self._runs = self._runs, {}
        paths, self._paths = self._paths, {}
        prompts, self._prompts = self._prompts, {}
        steps, self._steps = self._steps, {}
        for run_id in sorted(runs):
            wanted = paths.get(run_id, set())
            if not wanted and not steps.get(run_id):
                continue
            chosen = prompts.get(run_id) or prompts_of_run(runs[run_id])
            if chosen is None:
                continue  # no prompts file known: the samples stay run samples
            if steps.get(run_id):
                wanted |= _step_samples(conn, run_id, steps[run_id])
            if wanted:
                link_samples(conn, runs[run_id], wanted, chosen)


def _step_samples(conn: Connection, run_id: int, steps: set[int]) -> set[str]:
    """The run's recorded step samples of these steps."""
    rows = conn.execute(
        "SELECT DISTINCT p FROM epoch_results er, unnest(er.sample_images) AS p "
        "WHERE er.training_run_id = %s AND p LIKE ANY(%s)",
        (run_id, [f"%\\_{step:06d}\\_%" for step in sorted(steps)]),
    ).fetchall()
    found = set()
    for row in rows:
        sample = classify_sample(Path(row["p"]))
        if sample is not None and sample.epoch is None and sample.step in steps:
            found.add(row["p"])
    return found


def link_event_samples(
    conn: Connection,
    run: dict[str, Any],
    paths: Iterable[str],
    prompts: SamplePromptsFile | None,
    step_checkpoint: int | None = None,
) -> None:
    """Link one event's samples at once (an event applied on its own)."""
    links = SampleLinks()
    links.add(run, paths, prompts, step_checkpoint)
    links.flush(conn)
