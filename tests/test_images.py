"""Test images rendered in A1111 / Forge / SD.Next / ComfyUI find their epoch by
themselves (issue 12, part 2): real image files written the way each tool writes them
(tests/image_makers.py), real kohya checkpoints (tests/kohya_sim.py) captured into a real
database, then `lora-tracker images`."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import psycopg
import pytest
from click.testing import CliRunner, Result
from hypothesis import given, settings
from hypothesis import strategies as st
from psycopg.rows import dict_row
from safetensors.numpy import save

from lora_tracker.capture.delivery import EventDelivery
from lora_tracker.capture.events import observe_checkpoint
from lora_tracker.cli import cli
from lora_tracker.images.comfyui import parse_comfyui
from lora_tracker.images.infotext import parse_infotext, strip_lora_tags
from lora_tracker.images.lora_hash import a1111_lora_hash
from lora_tracker.images.model import NotUsable
from lora_tracker.images.reader import read_image

from .conftest import rows
from .image_makers import (
    a1111_infotext,
    a1111_jpeg,
    a1111_png,
    comfyui_graph,
    comfyui_png,
    picture,
    workflow_of,
)
from .kohya_sim import KohyaRun, nometa_metadata, tensors

PROMPT = "a knight in silver armour, pixel art, full body"


def _train(tmp_path: Path, db_url: str, name: str, epochs: int = 3, session: int = 1) -> KohyaRun:
    """A kohya run whose every epoch file is kept and captured."""
    run = KohyaRun(
        tmp_path / f"out-{name}",
        output_name=name,
        epochs=epochs,
        save_last_n=None,
        samples_per_epoch=0,
        session=session,
    )
    for epoch in range(1, epochs + 1):
        run.save_epoch(epoch)
    recorder = EventDelivery(db_url)
    try:
        result = recorder.submit_many([observe_checkpoint(p) for p in run.written])
        assert result.count("recorded") == epochs
    finally:
        recorder.close()
    return run


def _images(db_url: str, *args: str) -> Result:
    return CliRunner().invoke(cli, ["--database-url", db_url, "images", *args])


def _results(db_url: str) -> list[dict[str, Any]]:
    return rows(
        db_url,
        """
        SELECT split_part(r.run_name, '_', 1) AS run_name, e.epoch_number, tp.prompt_text,
               tp.prompt_name, ptr.*
        FROM prompt_test_results ptr
        JOIN epoch_results e ON e.id = ptr.epoch_result_id
        JOIN training_runs r ON r.id = e.training_run_id
        JOIN test_prompts tp ON tp.id = ptr.test_prompt_id
        ORDER BY r.run_name, e.epoch_number, ptr.seed""",
    )


def _hash12(path: Path) -> str:
    return a1111_lora_hash(path)[:12]


# -- reading metadata -------------------------------------------------------------------


def test_infotext_as_a1111_writes_it() -> None:
    """Prompt (several lines, LoRA tags), negative prompt, quoted Lora hashes, size, the
    scheduler, and the tool told apart by its Version."""
    text = a1111_infotext(
        "a knight,\npixel art <lora:knight-000002:0.8>, <lora:style_v1:0.5:0.3>",
        negative="blurry, lowres",
        seed=42,
        steps=28,
        cfg=6.5,
        size=(512, 768),
        lora_hashes={"knight-000002": "1a2b3c4d5e6f", "style_v1": "abcdefabcdef"},
    )
    assert 'Lora hashes: "knight-000002: 1a2b3c4d5e6f, style_v1: abcdefabcdef"' in text
    meta = parse_infotext(text)
    assert meta.prompt == "a knight,\npixel art"
    assert meta.negative_prompt == "blurry, lowres"
    assert (meta.seed, meta.steps, meta.cfg_scale, meta.width, meta.height) == (
        42,
        28,
        6.5,
        512,
        768,
    )
    assert (meta.sampler, meta.scheduler, meta.generator) == ("DPM++ 2M", "Karras", "a1111")
    assert [(r.name, r.hash12, r.weight) for r in meta.loras] == [
        ("knight-000002", "1a2b3c4d5e6f", 0.8),
        ("style_v1", "abcdefabcdef", 0.5),
    ]
    forge = parse_infotext(a1111_infotext("x", version="f2.0.1v1.10.1-previous-313-g8b3e6e09"))
    assert forge.generator == "forge"
    sdnext = parse_infotext(a1111_infotext("x", version="8f6f1b0", extra={"App": "SD.Next"}))
    assert sdnext.generator == "sdnext"
    assert strip_lora_tags("<lora:a:1>, castle at dusk, <lora:b:1>") == "castle at dusk"
    # SD.Next versions that write bare hashes, in the prompt's order
    bare = parse_infotext(
        a1111_infotext("x <lora:a:0.5> <lora:b:1>", version="8f6f1b0",
                       extra={"App": "SD.Next", "LoRA hashes": "aaaaaaaaaaaa, bbbbbbbbbbbb"})
    )  # fmt: skip
    assert [(r.name, r.hash12, r.weight) for r in bare.loras] == [
        ("a", "aaaaaaaaaaaa", 0.5), ("b", "bbbbbbbbbbbb", 1.0)]  # fmt: skip


def test_xyz_grid_infotext_is_a_grid() -> None:
    text = a1111_infotext(
        "x <lora:k:1>", extra={"Script": "X/Y/Z plot", "X Type": "Seed", "X Values": "1, 2, 3"}
    )
    with pytest.raises(NotUsable) as info:
        parse_infotext(text)
    assert info.value.reason == "grid"


def test_comfyui_graph_and_workflow() -> None:
    """The sampler behind SaveImage, its positive / negative CLIPTextEncode, the
    EmptyLatentImage size, every LoraLoader on its model chain; the same from the editor's
    workflow when the prompt chunk is missing."""
    graph = comfyui_graph(
        "castle at dusk",
        "blurry",
        [("sub\\knight-000001.safetensors", 0.7), ("style.safetensors", 1.0)],
    )
    for prompt_chunk in (graph, None):
        meta = parse_comfyui(
            None if prompt_chunk is None else __import__("json").dumps(graph),
            __import__("json").dumps(workflow_of(graph)),
        )
        assert (meta.prompt, meta.negative_prompt) == ("castle at dusk", "blurry")
        assert (meta.seed, meta.steps, meta.cfg_scale) == (156680208700286, 20, 8.0)
        assert (meta.sampler, meta.scheduler, meta.width, meta.height) == (
            "euler",
            "normal",
            512,
            768,
        )
        assert [(r.name, r.weight) for r in meta.loras] == [
            ("sub\\knight-000001.safetensors", 0.7),
            ("style.safetensors", 1.0),
        ]
        assert meta.model == "v1-5-pruned-emaonly.safetensors"


def test_jpeg_exif_user_comment(tmp_path: Path) -> None:
    text = a1111_infotext("castle <lora:k:1>", lora_hashes={"k": "0123456789ab"}, seed=9)
    image = read_image(a1111_jpeg(tmp_path / "00001-9.jpg", text))
    assert image.metadata.prompt == "castle" and image.metadata.seed == 9
    assert image.metadata.raw == {"parameters": text}


# -- linking ----------------------------------------------------------------------------


def test_a1111_images_link_by_hash_to_the_exact_epoch(tmp_path: Path, db_url: str) -> None:
    """A renamed copy of epoch 2's file (as a webui's models/Lora holds it) matches epoch 2
    by its hash; settings, weight, generator and the raw infotext are kept."""
    run = _train(tmp_path, db_url, "knight")
    webui_copy = tmp_path / "webui" / "models" / "Lora" / "my knight e2.safetensors"
    webui_copy.parent.mkdir(parents=True)
    shutil.copy(run.epoch_path(2), webui_copy)
    out = tmp_path / "outputs" / "txt2img-images" / "2025-11-10"
    out.mkdir(parents=True)
    for seed in (100, 101):
        text = a1111_infotext(
            f"{PROMPT} <lora:my knight e2:0.8>",
            negative="blurry",
            seed=seed,
            lora_hashes={"my knight e2": _hash12(webui_copy)},
        )
        a1111_png(out / f"0000{seed - 100}-{seed}.png", text, seed=seed)
    result = _images(db_url, str(tmp_path / "outputs"))
    assert result.exit_code == 0, result.output
    assert result.output.strip() == "Linked 2 images to 1 epoch of 1 run"
    found = _results(db_url)
    assert [(r["run_name"], r["epoch_number"], r["seed"]) for r in found] == [
        ("knight", 2, 100),
        ("knight", 2, 101),
    ]
    first = found[0]
    assert first["prompt_text"] == PROMPT and first["generator"] == "a1111"
    assert (
        first["steps"],
        float(first["cfg_scale"]),
        first["sampler"],
        first["scheduler"],
        first["width"],
        first["height"],
        float(first["lora_weight"]),
    ) == (20, 7.0, "DPM++ 2M", "Karras", 512, 512, 0.8)
    assert first["image_metadata"]["parameters"].startswith(PROMPT)
    assert first["image_path"] == str(out / "00000-100.png")
    assert first["result_key"].startswith("image:") and first["captured_at"] is not None


def test_jpeg_and_forge(tmp_path: Path, db_url: str) -> None:
    run = _train(tmp_path, db_url, "knight", epochs=2)
    text = a1111_infotext(
        f"{PROMPT}, <lora:knight:1>",
        seed=7,
        lora_hashes={"knight": _hash12(run.epoch_path(2))},
        version="f2.0.1v1.10.1-previous-313-g8b3e6e09",
    )
    a1111_jpeg(tmp_path / "forge.jpg", text)
    assert _images(db_url, str(tmp_path / "forge.jpg")).exit_code == 0
    found = _results(db_url)
    assert [(r["epoch_number"], r["generator"], r["seed"]) for r in found] == [(2, "forge", 7)]


def test_comfyui_links_by_file_name(tmp_path: Path, db_url: str) -> None:
    _train(tmp_path, db_url, "knight")
    out = tmp_path / "ComfyUI" / "output"
    out.mkdir(parents=True)
    for counter, epoch in enumerate((1, 3), start=1):
        graph = comfyui_graph(
            PROMPT,
            "blurry",
            [(f"knight\\knight-{epoch:06d}.safetensors", 0.9)]
            if epoch == 1
            else [("knight.safetensors", 0.9)],
            seed=epoch,
        )
        graph["90"] = {"inputs": {"api_key": "sk-live-123", "prompt": "x"},
                       "class_type": "OpenAIChatNode"}  # fmt: skip
        comfyui_png(out / f"ComfyUI_{counter:05}_.png", graph, seed=epoch)
    result = _images(db_url, str(out))
    assert result.exit_code == 0, result.output
    assert result.output.strip() == "Linked 2 images to 2 epochs of 1 run"
    found = _results(db_url)
    assert [
        (
            r["epoch_number"],
            r["generator"],
            r["seed"],
            float(r["lora_weight"]),
            r["width"],
            r["height"],
            r["sampler"],
            r["scheduler"],
        )
        for r in found
    ] == [
        (1, "comfyui", 1, 0.9, 512, 768, "euler", "normal"),
        (3, "comfyui", 3, 0.9, 512, 768, "euler", "normal"),
    ]
    # the API graph is kept (the editor's workflow is not), a paid-API node's key masked
    assert set(found[0]["image_metadata"]) == {"prompt"}
    assert found[0]["image_metadata"]["prompt"]["90"]["inputs"]["api_key"] == "***"
    assert "sk-live-123" not in str(rows(db_url, "SELECT * FROM prompt_test_results"))


def test_a_folder_without_images_says_so(tmp_path: Path, db_url: str) -> None:
    """A folder with no image files (a wrong path, renders not saved yet) says so rather
    than a bare "Linked 0 images"."""
    (tmp_path / "notes.txt").write_text("not an image")
    result = _images(db_url, str(tmp_path))
    assert result.exit_code == 0
    assert result.output.strip() == "Linked 0 images: no PNG, JPEG or WebP file found"


def test_a_named_file_that_is_not_an_image_is_an_error(tmp_path: Path, db_url: str) -> None:
    """A file named on the command line that cannot be used (not an image, no metadata)
    exits 1 after the others are linked; the same file found in a folder is only skipped."""
    bad = tmp_path / "renders" / "notes.png"
    bad.parent.mkdir()
    bad.write_text("not an image")
    plain = tmp_path / "renders" / "plain.png"
    picture().save(plain)
    grid = a1111_png(tmp_path / "grid-0000.png", a1111_infotext(PROMPT))
    for named in (bad, plain):
        result = _images(db_url, str(named))
        assert result.exit_code == 1, result.output
        assert result.output.splitlines()[0].startswith(f"skipped {named}: ")
    assert _images(db_url, str(bad.parent)).exit_code == 0
    assert _images(db_url, str(grid)).exit_code == 0  # a grid is skipped on purpose


def test_comfyui_lora_dir_decides_by_hash(tmp_path: Path, db_url: str) -> None:
    """Two runs both named "knight" have a knight-000001 file each: the name alone is
    ambiguous (unmatched, never guessed); the ComfyUI LoRA folder's file decides by hash."""
    first = _train(tmp_path / "a", db_url, "knight", epochs=2, session=1)
    _train(tmp_path / "b", db_url, "knight", epochs=2, session=2)
    loras = tmp_path / "ComfyUI" / "models" / "loras"
    loras.mkdir(parents=True)
    shutil.copy(first.epoch_path(1), loras / "knight-000001.safetensors")
    graph = comfyui_graph(PROMPT, "", [("knight-000001.safetensors", 1.0)])
    image = comfyui_png(tmp_path / "ComfyUI_00001_.png", graph)
    result = _images(db_url, "--verbose", str(image))
    assert result.output.strip().splitlines()[-1] == "Linked 0 images; 1 unmatched"
    assert "2 tracked checkpoints have that name" in result.output
    result = _images(db_url, "--lora-dir", str(loras), str(image))
    assert result.output.strip() == "Linked 1 image to 1 epoch of 1 run"
    found = _results(db_url)
    assert len(found) == 1 and found[0]["epoch_number"] == 1
    runs = rows(
        db_url,
        "SELECT id, output_dir FROM training_runs WHERE id = %s",
        (
            rows(
                db_url,
                "SELECT training_run_id FROM epoch_results WHERE id = %s",
                (found[0]["epoch_result_id"],),
            )[0]["training_run_id"],
        ),
    )
    assert runs[0]["output_dir"] == str(first.output_dir)


def test_hash_computed_once_for_a_checkpoint_without_sshs(tmp_path: Path, db_url: str) -> None:
    """A checkpoint saved without kohya's sshs_model_hash (another trainer) gets A1111's
    hash computed when an image needs it, stored, and never computed again."""
    out = tmp_path / "out"
    out.mkdir()
    files = []
    for epoch in (1, 2):
        path = out / f"plain-{epoch:06d}.safetensors"
        path.write_bytes(save(tensors(16, 4, seed=epoch), metadata=nometa_metadata("plain", 16)))
        files.append(path)
    recorder = EventDelivery(db_url)
    try:
        assert recorder.submit_many([observe_checkpoint(p) for p in files]).count("recorded") == 2
    finally:
        recorder.close()
    assert {r["lora_hash"] for r in rows(db_url, "SELECT lora_hash FROM checkpoints")} == {None}
    text = a1111_infotext(f"{PROMPT} <lora:renamed:1>", lora_hashes={"renamed": _hash12(files[0])})
    (tmp_path / "img").mkdir()
    a1111_png(tmp_path / "img" / "a.png", text)
    result = _images(db_url, str(tmp_path / "img"))
    assert result.output.strip() == (
        "Linked 1 image to 1 epoch of 1 run; hashed 2 checkpoints once, for matching"
    )
    hashes = rows(db_url, "SELECT lora_hash FROM checkpoints ORDER BY path")
    assert [h["lora_hash"] for h in hashes] == [a1111_lora_hash(f) for f in files]
    a1111_png(tmp_path / "img" / "b.png", text.replace("Seed: 1234", "Seed: 5"), seed=5)
    result = _images(db_url, str(tmp_path / "img"))
    assert result.output.strip() == "Linked 1 image to 1 epoch of 1 run (1 already linked)"


def test_sshs_model_hash_is_a1111s_hash(tmp_path: Path, db_url: str) -> None:
    """kohya's sshs_model_hash (kept as the checkpoint's content hash) is the hash A1111
    computes, so a captured checkpoint needs no hashing to match."""
    run = _train(tmp_path, db_url, "knight", epochs=1)
    # filled at capture, before any image needs it
    (captured,) = rows(db_url, "SELECT lora_hash FROM checkpoints")
    assert captured["lora_hash"] == a1111_lora_hash(run.epoch_path(1))
    text = a1111_infotext(f"{PROMPT} <lora:x:1>", lora_hashes={"x": _hash12(run.epoch_path(1))})
    (tmp_path / "i").mkdir()
    a1111_png(tmp_path / "i" / "a.png", text)
    assert _images(db_url, str(tmp_path / "i")).output.strip() == (
        "Linked 1 image to 1 epoch of 1 run"
    )
    (row,) = rows(db_url, "SELECT content_hash, lora_hash FROM checkpoints")
    assert row["lora_hash"] == row["content_hash"] == a1111_lora_hash(run.epoch_path(1))


@pytest.mark.both_servers  # the matching and linking SQL, on each server
def test_several_loras_unmatched_grids_and_bad_files(tmp_path: Path, db_url: str) -> None:
    """An image with two tracked LoRAs links to both epochs; untracked ones are counted
    (and listed with --verbose); grids and bad files are skipped with one line each; a
    second run changes nothing at all."""
    knight = _train(tmp_path, db_url, "knight", epochs=2, session=1)
    style = _train(tmp_path, db_url, "style", epochs=2, session=2)
    out = tmp_path / "outputs"
    grids = out / "txt2img-grids"
    grids.mkdir(parents=True)
    both = a1111_infotext(
        f"{PROMPT} <lora:knight:0.8> <lora:style:0.4>",
        lora_hashes={
            "knight": _hash12(knight.epoch_path(1)),
            "style": _hash12(style.epoch_path(2)),
        },
    )
    a1111_png(out / "00001-1234.png", both)
    untracked = a1111_infotext(f"{PROMPT} <lora:other:1>", lora_hashes={"other": "feedfacecafe"})
    a1111_png(out / "00002-1234.png", untracked, seed=2)
    a1111_png(out / "00003-1234.png", a1111_infotext(PROMPT), seed=3)  # no LoRA at all
    a1111_png(grids / "grid-0001.png", both, seed=4)
    xyz = a1111_infotext(
        f"{PROMPT} <lora:knight:1>",
        extra={"Script": "X/Y/Z plot", "X Type": "Seed", "X Values": "1,2"},
        lora_hashes={"knight": _hash12(knight.epoch_path(1))},
    )
    a1111_png(out / "xyz_grid-0002-1.png", xyz, seed=5)
    a1111_png(out / "cell.png", xyz, seed=6)  # an xyz infotext in any file name
    full = a1111_png(out / "00004-1234.png", both, seed=7).read_bytes()
    (out / "00005-truncated.png").write_bytes(full[: len(full) // 2])
    (out / "00006-empty.png").write_bytes(b"")
    (out / "00007-text.jpg").write_bytes(b"not a jpeg")
    a1111_png(out / "00008-nometa.png", "", seed=8)
    result = _images(db_url, "--verbose", str(out))
    assert result.exit_code == 0, result.output
    lines = result.output.strip().splitlines()
    assert lines[-1] == (
        "Linked 2 images to 2 epochs of 2 runs; 2 unmatched, "
        "3 skipped (grid), 1 skipped (no metadata), "
        "1 skipped (not an image), 2 unreadable"
    )
    skipped = [line for line in lines if line.startswith("skipped ")]
    assert len(skipped) == 7 and all(str(out) in line for line in skipped)
    assert any("00005-truncated.png: damaged or truncated" in line for line in skipped)
    assert sum(line.startswith("unmatched ") for line in lines) == 2
    assert any("other (hash feedfacecafe): no tracked checkpoint" in line for line in lines)
    linked = _results(db_url)
    assert sorted(
        (
            r["run_name"],
            r["epoch_number"],
            float(r["lora_weight"]),
            r["image_path"].rsplit("/", 1)[1],
        )
        for r in linked
    ) == [
        ("knight", 1, 0.8, "00001-1234.png"),
        ("knight", 1, 0.8, "00004-1234.png"),
        ("style", 2, 0.4, "00001-1234.png"),
        ("style", 2, 0.4, "00004-1234.png"),
    ]

    snapshot = rows(db_url, "SELECT * FROM prompt_test_results ORDER BY id")
    prompts = rows(db_url, "SELECT * FROM test_prompts ORDER BY id")
    again = _images(db_url, str(out))
    assert again.stdout.strip() == (
        "Linked 0 images (2 already linked); 2 unmatched, "
        "3 skipped (grid), 1 skipped (no metadata), "
        "1 skipped (not an image), 2 unreadable"
    )
    assert "(--verbose lists the unmatched images and why)" in again.stderr
    assert rows(db_url, "SELECT * FROM prompt_test_results ORDER BY id") == snapshot
    assert rows(db_url, "SELECT * FROM test_prompts ORDER BY id") == prompts


def test_per_prompt_queries_see_linked_images(tmp_path: Path, db_url: str) -> None:
    """The reference workflow's per-prompt judgement: scores on linked images group by test
    prompt and epoch like a person's own results."""
    run = _train(tmp_path, db_url, "knight", epochs=2)
    (tmp_path / "i").mkdir()
    for epoch in (1, 2):
        for n, prompt in enumerate((PROMPT, "castle at dusk, watercolor")):
            for seed in (1, 2):
                text = a1111_infotext(
                    f"{prompt} <lora:k:1>",
                    seed=seed,
                    lora_hashes={"k": _hash12(run.epoch_path(epoch))},
                )
                a1111_png(
                    tmp_path / "i" / f"{epoch}-{n}-{seed}.png",
                    text,
                    seed=epoch * 100 + n * 10 + seed,
                )
    assert _images(db_url, str(tmp_path / "i")).exit_code == 0
    with psycopg.connect(db_url, row_factory=dict_row, autocommit=True) as conn:
        conn.execute("UPDATE prompt_test_results SET score = seed + 5")
        per_prompt = conn.execute("""
            SELECT tp.prompt_name, er.epoch_number, count(*) AS images, avg(ptr.score) AS avg
            FROM prompt_test_results ptr
            JOIN test_prompts tp ON tp.id = ptr.test_prompt_id
            JOIN epoch_results er ON er.id = ptr.epoch_result_id
            GROUP BY tp.prompt_name, er.epoch_number ORDER BY 1, 2""").fetchall()
    assert [
        (r["prompt_name"], r["epoch_number"], r["images"], float(r["avg"])) for r in per_prompt
    ] == [
        ("a knight in silver armour, pixel art, full", 1, 2, 6.5),
        ("a knight in silver armour, pixel art, full", 2, 2, 6.5),
        ("castle at dusk, watercolor", 1, 2, 6.5),
        ("castle at dusk, watercolor", 2, 2, 6.5),
    ]
    shown = CliRunner().invoke(cli, ["--database-url", db_url, "show", "knight"])
    assert shown.exit_code == 0, shown.output


def test_a_refused_image_leaves_its_batch_whole(tmp_path: Path, db_url: str) -> None:
    """An image whose metadata the database refuses is skipped with one line; the other
    images of its batch are linked. (A NUL inside its EXIF text, on a connection that
    sends it as it is: the `images` command's strips it, see the test below.)"""
    from lora_tracker.images.linking import link_images

    run = _train(tmp_path, db_url, "knight", epochs=1)
    short = _hash12(run.epoch_path(1))
    out = tmp_path / "out"
    out.mkdir()
    for seed in (1, 2, 3):
        negative = "blurry\x00lowres" if seed == 2 else "blurry"
        text = a1111_infotext(f"{PROMPT} <lora:k:1>", negative=negative, seed=seed,
                              lora_hashes={"k": short})  # fmt: skip
        a1111_jpeg(out / f"{seed}.jpg", text, seed=seed)
    with psycopg.connect(db_url, row_factory=dict_row, autocommit=True) as conn:
        report = link_images(conn, [out])
    assert report.summary() == "Linked 2 images to 1 epoch of 1 run; 1 unreadable"
    assert [str(o.path) for o in report.skipped] == [str(out / "2.jpg")]
    assert report.skipped[0].detail.startswith("the database refused its metadata")
    assert sorted(r["seed"] for r in _results(db_url)) == [1, 3]
    assert _images(db_url, str(out)).stdout.startswith("Linked 1 image ")  # (stripped)


def test_a_second_run_reads_only_new_or_rewritten_files(tmp_path: Path, db_url: str) -> None:
    """A linked image not written since is skipped without being read; one rewritten in
    place (another seed) is read again and linked as the new image it is."""
    run = _train(tmp_path, db_url, "knight", epochs=1)
    short = _hash12(run.epoch_path(1))
    out = tmp_path / "out"
    out.mkdir()
    image = a1111_png(out / "a.png", a1111_infotext(f"{PROMPT} <lora:k:1>", seed=1,
                                                     lora_hashes={"k": short}))  # fmt: skip
    assert _images(db_url, str(out)).stdout.strip() == "Linked 1 image to 1 epoch of 1 run"
    image.write_bytes(b"no longer an image")  # not read: not written since it was linked
    os.utime(image, (1, 1))
    assert _images(db_url, str(out)).stdout.strip() == "Linked 0 images (1 already linked)"
    a1111_png(image, a1111_infotext(f"{PROMPT} <lora:k:1>", seed=2, lora_hashes={"k": short}))
    assert _images(db_url, str(out)).stdout.strip() == "Linked 1 image to 1 epoch of 1 run"
    assert sorted(r["seed"] for r in _results(db_url)) == [1, 2]


# -- the readers never crash on what they are given ----------------------------------------


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=400))
def test_any_infotext_is_read_or_refused(text: str) -> None:
    """Any text in a parameters chunk gives settings or NotUsable, never a crash."""
    try:
        meta = parse_infotext(text)
    except NotUsable as exc:
        assert exc.reason in ("grid", "no metadata")
        return
    assert meta.prompt and meta.generator in ("a1111", "forge", "sdnext")


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4)
    ),
    max_leaves=30,
)


@settings(max_examples=300, deadline=None)
@given(_JSON, _JSON)
def test_any_comfyui_chunks_are_read_or_refused(prompt: Any, workflow: Any) -> None:
    import json

    try:
        parse_comfyui(json.dumps(prompt), json.dumps(workflow))
    except NotUsable as exc:
        assert exc.reason == "no metadata"


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=2000))
def test_any_bytes_are_read_or_refused(data: bytes) -> None:
    from lora_tracker.images.reader import decode_user_comment, read_metadata

    try:
        read_metadata(b"\x89PNG\r\n\x1a\n" + data)
    except NotUsable as exc:
        assert exc.reason in ("unreadable", "not an image", "no metadata", "grid")
    assert isinstance(decode_user_comment(data), str)


def test_webp_exif_user_comment(tmp_path: Path) -> None:
    """A WebP saved with the EXIF A1111 writes (piexif.insert) is read like a JPEG."""
    from PIL import Image

    from .image_makers import EXIF_IFD, USER_COMMENT, picture

    text = a1111_infotext("castle <lora:k:0.6>", lora_hashes={"k": "0123456789ab"}, seed=3)
    exif = Image.Exif()
    exif.get_ifd(EXIF_IFD)[USER_COMMENT] = b"UNICODE\x00" + text.encode("utf-16-be")
    picture().save(tmp_path / "a.webp", format="WEBP", quality=80, exif=exif)
    meta = read_image(tmp_path / "a.webp").metadata
    assert (meta.prompt, meta.seed, meta.loras[0].weight) == ("castle", 3, 0.6)


_GOOD: dict[str, bytes] = {}


def _good_files() -> list[bytes]:
    """A real A1111 PNG, JPEG and ComfyUI PNG, made once."""
    if not _GOOD:
        import tempfile

        folder = Path(tempfile.mkdtemp(prefix="lt-fuzz-"))
        text = a1111_infotext("castle <lora:k:1>", lora_hashes={"k": "0123456789ab"})
        _GOOD["png"] = a1111_png(folder / "a.png", text).read_bytes()
        _GOOD["jpg"] = a1111_jpeg(folder / "a.jpg", text).read_bytes()
        graph = comfyui_graph("castle", "", [("k.safetensors", 1.0)])
        _GOOD["comfy"] = comfyui_png(folder / "c.png", graph).read_bytes()
        shutil.rmtree(folder)
    return list(_GOOD.values())


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 2), st.lists(st.tuples(st.floats(0, 1), st.integers(0, 255)), max_size=8),
       st.floats(0.05, 1.0))  # fmt: skip
def test_damaged_real_images_are_read_or_refused(
    which: int, flips: list[tuple[float, int]], keep: float
) -> None:
    """Real images with bytes changed and cut short: read, or refused as NotUsable."""
    from lora_tracker.images.reader import read_metadata

    data = bytearray(_good_files()[which])
    for where, value in flips:
        data[int(where * (len(data) - 1))] = value
    try:
        read_metadata(bytes(data[: max(1, int(len(data) * keep))]))
    except NotUsable as exc:
        assert exc.reason in ("unreadable", "not an image", "no metadata", "grid")


def test_a_rewritten_checkpoint_loses_its_old_hash(tmp_path: Path, db_url: str) -> None:
    """A hash computed for an image belongs to the file as it was: a new training written
    over the same path is matched by its own hash, never by the old one."""
    path = tmp_path / "plain-000001.safetensors"
    path.write_bytes(save(tensors(16, 4, seed=1), metadata=nometa_metadata("plain", 16)))
    delivery = EventDelivery(db_url)
    try:
        delivery.submit_many([observe_checkpoint(path)])
        old = _hash12(path)
        text = a1111_infotext(f"{PROMPT} <lora:p:1>", lora_hashes={"p": old})
        (tmp_path / "i").mkdir()
        a1111_png(tmp_path / "i" / "a.png", text)
        assert _images(db_url, str(tmp_path / "i")).stdout.startswith("Linked 1 image")
        meta = nometa_metadata("plain", 16) | {"ss_training_started_at": "2"}
        path.write_bytes(save(tensors(16, 4, seed=2), metadata=meta))
        delivery.submit_many([observe_checkpoint(path)])
    finally:
        delivery.close()
    assert rows(db_url, "SELECT lora_hash FROM checkpoints") == [{"lora_hash": None}]
    a1111_png(tmp_path / "i" / "b.png", text.replace("Seed: 1234", "Seed: 7"), seed=7)
    result = _images(db_url, str(tmp_path / "i"))
    assert result.stdout.strip().endswith("1 unmatched; hashed 1 checkpoint once, for matching")


def test_a_copy_of_a_linked_image_leaves_its_row_alone(tmp_path: Path, db_url: str) -> None:
    """The same image bytes at two paths (a copy in a subfolder) are one result, linked
    under the first path; a second pass changes nothing (the row's path went back and
    forth on every pass); once the first file is moved away, the copy takes the row."""
    run = _train(tmp_path, db_url, "knight")
    out = tmp_path / "outputs"
    out.mkdir()
    text = a1111_infotext(f"{PROMPT} <lora:knight:0.8>", seed=7,
                          lora_hashes={"knight": _hash12(run.epoch_path(2))})  # fmt: skip
    original = out / "a.png"
    a1111_png(original, text, seed=7)
    (out / "sub").mkdir()
    shutil.copy(original, out / "sub" / "copy.png")
    first = _images(db_url, str(out))
    assert first.exit_code == 0 and first.output.startswith("Linked 1 image "), first.output
    paths = [r["image_path"] for r in _results(db_url)]
    assert paths == [str(original)]
    for _ in range(2):
        again = _images(db_url, str(out))
        assert again.exit_code == 0 and again.output.startswith("Linked 0 images "), again.output
        assert [r["image_path"] for r in _results(db_url)] == paths
    # as `watch --images` meets the copy: left alone too, and said so
    from lora_tracker.capture.image_capture import observe_image

    delivery = EventDelivery(db_url)
    try:
        outcome, applied = delivery.submit(observe_image(out / "sub" / "copy.png"))
    finally:
        delivery.close()
    assert outcome == "unmatched" and applied is not None
    assert applied.detail == f"the same image as {original}, linked already"
    assert [r["image_path"] for r in _results(db_url)] == paths
    original.rename(tmp_path / "moved-away.png")
    moved = _images(db_url, str(out))
    assert moved.output.startswith("Linked 1 image "), moved.output
    assert [r["image_path"] for r in _results(db_url)] == [str(out / "sub" / "copy.png")]


def test_a_nul_in_an_images_prompt_costs_it_nothing(tmp_path: Path, db_url: str) -> None:
    """PostgreSQL stores no NUL character: an image whose prompt holds one is linked (it
    was skipped: "the database refused its metadata"), as a checkpoint's metadata is."""
    run = _train(tmp_path, db_url, "knight")
    out = tmp_path / "outputs"
    out.mkdir()
    text = a1111_infotext(f"{PROMPT}\x00 <lora:knight:0.8>", seed=7,
                          lora_hashes={"knight": _hash12(run.epoch_path(2))})  # fmt: skip
    a1111_png(out / "nul.png", text, seed=7)
    result = _images(db_url, str(out))
    assert result.exit_code == 0 and result.output.startswith("Linked 1 image "), result.output
    found = _results(db_url)
    assert [(r["epoch_number"], r["prompt_text"]) for r in found] == [(2, PROMPT)]
