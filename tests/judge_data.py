"""A run to judge: N epochs x M test prompts with real PNG images (pixel-art sprites drawn
with Pillow), recorded through the library as capture and `prompt score --image` record
them. Shared by the judging view's tests and its benchmark."""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
from psycopg.rows import dict_row

PALETTES = [
    ((244, 236, 222), [(52, 63, 92), (226, 114, 91), (242, 193, 78), (94, 155, 130)]),
    ((226, 238, 246), [(40, 46, 66), (90, 120, 200), (235, 220, 190), (200, 80, 120)]),
    ((238, 244, 230), [(60, 60, 60), (120, 170, 90), (250, 220, 120), (170, 90, 60)]),
    ((246, 230, 238), [(70, 40, 80), (220, 120, 170), (250, 240, 240), (90, 160, 200)]),
]


def sprite_png(path: Path, size: int, seed: int, noise: float = 0.0, grain: bool = False) -> None:
    """A 16x16 symmetric pixel-art sprite scaled to ``size`` px, as a PNG; ``noise``
    (0-1) sprinkles stray pixels, like an overtrained epoch; ``grain`` adds the fine noise
    of a diffusion render, so the file is as large as a real one (1024 px: ~2 MB)."""
    from PIL import Image, ImageChops

    rng = random.Random(seed)
    background, colours = PALETTES[seed % len(PALETTES)]
    grid = Image.new("RGB", (16, 16), background)
    pixels = grid.load()
    assert pixels is not None
    for y in range(2, 15):
        for x in range(2, 8):
            if rng.random() < 0.55:
                colour = colours[rng.randrange(len(colours))]
                pixels[x, y] = colour
                pixels[15 - x, y] = colour
    for _ in range(int(noise * 40)):
        pixels[rng.randrange(16), rng.randrange(16)] = colours[rng.randrange(len(colours))]
    image = grid.resize((size, size), Image.Resampling.NEAREST)
    if grain:
        texture = Image.effect_noise((size, size), 24).convert("RGB")
        image = ImageChops.add(image, texture, scale=1.0, offset=-100)
    image.save(path, optimize=False)


@dataclass
class JudgingRun:
    """What was recorded: the run's name and id, its epoch numbers and prompt names."""

    name: str
    run_id: int
    epochs: list[int]
    prompts: list[str]
    images: list[Path] = field(default_factory=list)


def make_judging_run(
    url: str,
    folder: Path,
    *,
    name: str = "SD15_sprites_judge",
    epochs: int = 10,
    prompts: int = 4,
    size: int = 256,
    samples_only: tuple[int, ...] = (),
    grain: bool = False,
    linked: bool = False,
) -> JudgingRun:
    """Record a run with ``epochs`` epochs, ``prompts`` test prompts and one image per
    (epoch, prompt); the epochs in ``samples_only`` get kohya-style sample images instead
    of prompt results. ``linked``: the images are linked as capture links them (one row per
    image, keyed by its SHA-256, with its seed), else recorded as `prompt score --image`
    does (the person's own row)."""
    from lora_tracker import epochs as epoch_rows
    from lora_tracker import image_results, runs
    from lora_tracker import prompts as prompt_rows
    from lora_tracker.models import EpochFields, PromptResultFields, RunCreate, TestPromptCreate

    folder.mkdir(parents=True, exist_ok=True)
    subjects = ["knight with a sword", "cat wizard", "red dragon", "robot gardener",
                "ghost lantern", "frog bard", "owl archer", "slime king"]  # fmt: skip
    made = JudgingRun(name, 0, list(range(1, epochs + 1)), [])
    with psycopg.connect(url, row_factory=dict_row) as conn, conn.transaction():
        run = runs.create_run(
            conn,
            RunCreate(run_name=name, model_type="SD15", network_dim=32, network_alpha=16,
                      resolution="512x512", status="in_progress"),
        )  # fmt: skip
        made.run_id = run.id
        prompt_ids: list[int] = []
        prompt_texts: list[str] = []
        for p in range(prompts):
            prompt_name = f"{subjects[p % len(subjects)].replace(' ', '_')}{'' if p < 8 else p}"
            row = prompt_rows.add_prompt(
                conn,
                TestPromptCreate(
                    prompt_name=prompt_name,
                    prompt_text=f"pixel art, {subjects[p % len(subjects)]}, plain background",
                    seed=1000 + p,
                ),
            )  # fmt: skip
            prompt_ids.append(row["id"])
            prompt_texts.append(row["prompt_text"])
            made.prompts.append(row["prompt_name"])
        for number in made.epochs:
            loss = round(0.12 - number * 0.006, 4)
            samples: list[str] = []
            if number in samples_only:
                for s in range(3):
                    path = folder / f"{name}_e{number:06d}_{s:02d}.png"
                    sprite_png(path, size, seed=number * 31 + s, noise=number / epochs)
                    samples.append(str(path))
                    made.images.append(path)
            epoch = epoch_rows.upsert_epoch(
                conn, run.id, number,
                EpochFields(loss=loss, sample_images=samples,
                            checkpoint_path=str(folder / f"{name}-{number:06d}.safetensors")),
            )  # fmt: skip
            if number in samples_only:
                continue
            for p, prompt_id in enumerate(prompt_ids):
                path = folder / f"{name}_e{number:03d}_p{p}.png"
                sprite_png(path, size, seed=p * 7919 + number // 3, noise=number / epochs,
                           grain=grain)  # fmt: skip
                made.images.append(path)
                if linked:
                    image = image_results.TestImage(
                        prompt=prompt_texts[p], seed=1000 + p, width=size, height=size,
                        generator="kohya",
                    )  # fmt: skip
                    image_results.link_image(
                        conn, epoch.id, image, image_path=str(path),
                        image_sha256=image_results.file_sha256(path), source="bench",
                    )  # fmt: skip
                    continue
                prompt_rows.record_result(
                    conn, epoch.id, prompt_id, PromptResultFields(image_path=str(path))
                )
    return made


def db_rows(url: str, query: str, params: tuple[Any, ...] = ()) -> list[dict[str, Any]]:
    with psycopg.connect(url, row_factory=dict_row) as conn:
        return conn.execute(query, params).fetchall()
