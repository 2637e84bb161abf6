"""Linking test images to epochs (lora_tracker/image_results.py, migration 0009): the same
prompt at several seeds is several results, the same image twice is one, a person's scores
on a linked image survive a second read, and the per-prompt queries see the results."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest

from lora_tracker import epochs, image_results, prompts, runs
from lora_tracker.image_results import TestImage
from lora_tracker.models import EpochFields, PromptResultFields, RunCreate


def _epoch(conn: psycopg.Connection[dict[str, Any]], number: int = 3) -> int:
    run = runs.create_run(conn, RunCreate(run_name="img_run"))
    return epochs.upsert_epoch(conn, run.id, number, EpochFields()).id


@pytest.mark.both_servers  # migration 0009's keys, on each server
def test_seeds_are_results_and_a_second_read_is_not(
    conn: psycopg.Connection[dict[str, Any]],
) -> None:
    epoch_id = _epoch(conn)
    text = "a knight, pixel art, full body"
    for seed, sha in ((1, "a" * 64), (2, "b" * 64), (1, "a" * 64)):
        image = TestImage(prompt=text, seed=seed, steps=20, cfg_scale=7.0, sampler="Euler a",
                          width=512, height=512, lora_weight=0.8, generator="a1111",
                          metadata={"parameters": f"{text}\nSeed: {seed}"})  # fmt: skip
        image_results.link_image(conn, epoch_id, image, image_path=f"/img/{seed}.png",
                                 image_sha256=sha, source="image /img")  # fmt: skip
    found = conn.execute(
        "SELECT tp.prompt_name, tp.prompt_text, tp.source, ptr.seed, ptr.result_key,"
        " ptr.lora_weight FROM prompt_test_results ptr"
        " JOIN test_prompts tp ON tp.id = ptr.test_prompt_id ORDER BY ptr.seed"
    ).fetchall()
    assert [(r["seed"], r["result_key"]) for r in found] == [(1, "image:" + "a" * 64),
                                                            (2, "image:" + "b" * 64)]  # fmt: skip
    assert {r["prompt_text"] for r in found} == {text}
    assert found[0]["prompt_name"] == "a knight, pixel art, full body"
    assert found[0]["source"] == "image /img"
    assert float(found[0]["lora_weight"]) == 0.8
    assert conn.execute("SELECT count(*) AS n FROM test_prompts").fetchone() == {"n": 1}


def test_a_persons_judgement_survives_relinking(conn: psycopg.Connection[dict[str, Any]]) -> None:
    epoch_id = _epoch(conn)
    image = TestImage(prompt="castle at dusk", seed=5, generator="comfyui")
    row = image_results.link_image(conn, epoch_id, image, image_path="/a.png",
                                   image_sha256="c" * 64, source="image /a.png")  # fmt: skip
    conn.execute("UPDATE prompt_test_results SET score = 8, verdict = 'pass' WHERE id = %s",
                 (row["id"],))  # fmt: skip
    again = image_results.link_image(conn, epoch_id, image, image_path="/moved/a.png",
                                     image_sha256="c" * 64, source="image /moved")  # fmt: skip
    assert again["id"] == row["id"]
    assert (again["score"], again["verdict"], again["image_path"]) == (8, "pass", "/moved/a.png")
    # the person's own result for the prompt is a row of its own, beside the image's
    prompt = prompts.get_prompt(conn, "castle at dusk")
    own = prompts.record_result(conn, epoch_id, prompt["id"], PromptResultFields(score=6))
    assert own["result_key"] == "" and own["id"] != row["id"]
    per_prompt = conn.execute(
        "SELECT tp.prompt_name, count(*) AS n, avg(ptr.score) AS avg_score"
        " FROM prompt_test_results ptr JOIN test_prompts tp ON tp.id = ptr.test_prompt_id"
        " GROUP BY tp.prompt_name"
    ).fetchall()
    assert [(r["prompt_name"], r["n"], float(r["avg_score"])) for r in per_prompt] == [
        ("castle at dusk", 2, 7.0)
    ]


def test_a_taken_name_gets_a_number(conn: psycopg.Connection[dict[str, Any]]) -> None:
    epoch_id = _epoch(conn)
    conn.execute("INSERT INTO test_prompts (prompt_name, prompt_text) VALUES ('dog', 'a cat')")
    image_results.link_image(conn, epoch_id, TestImage(prompt="dog"), image_path="/d.png",
                             image_sha256="d" * 64, source="kohya prompts file p.txt")  # fmt: skip
    names = [r["prompt_name"] for r in conn.execute(
        "SELECT prompt_name FROM test_prompts ORDER BY id").fetchall()]  # fmt: skip
    assert names == ["dog", "dog #2"]


def test_prompt_score_with_a_linked_images_path_scores_that_image(
    conn: psycopg.Connection[dict[str, Any]],
) -> None:
    """`prompt score RUN EPOCH PROMPT --image PATH` of an image capture linked scores that
    image's result (it made a second row, unscored, pointing at the same file); without
    --image it is the epoch's own result, and says how many images are linked beside it."""
    from lora_tracker import judging

    epoch_id = _epoch(conn)
    text = "a knight, pixel art, full body"
    for seed, sha in ((1, "a" * 64), (2, "b" * 64)):
        image = TestImage(prompt=text, seed=seed, steps=20, cfg_scale=7.0, sampler="Euler a",
                          width=512, height=512, lora_weight=0.8, generator="a1111",
                          metadata={"parameters": f"{text}\nSeed: {seed}"})  # fmt: skip
        image_results.link_image(conn, epoch_id, image, image_path=f"/img/{seed}.png",
                                 image_sha256=sha, source="image /img")  # fmt: skip
    done = judging.score_prompt(conn, "img_run", 3, text, {"score": 8, "image_path": "/img/2.png"})
    assert done.linked_image and done.linked_images == 2
    scored = conn.execute(
        "SELECT image_path, score, result_key FROM prompt_test_results ORDER BY image_path"
    ).fetchall()
    assert [(r["image_path"], r["score"]) for r in scored] == [("/img/1.png", None),
                                                              ("/img/2.png", 8)]  # fmt: skip
    own = judging.score_prompt(conn, "img_run", 3, text, {"score": 5})
    assert not own.linked_image and own.linked_images == 2 and own.result["result_key"] == ""
    assert conn.execute("SELECT count(*) AS n FROM prompt_test_results").fetchone() == {"n": 3}
