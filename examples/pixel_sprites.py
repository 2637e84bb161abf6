"""Draw the sample images of the example output: a 32x32 pixel-art baby per test prompt,
shown at 256x256, as a LoRA learning pixel art would draw it epoch after epoch. The first
epoch is soft, noisy and on a photographic background (the "random pixels" and "wrong
backgrounds" of the scores); the last is clean pixel art on a plain background.

    python examples/pixel_sprites.py examples/kohya_output/sample

rewrites every kohya sample image in the folder (``NAME_e000003_01_STAMP.png``: epoch 3,
prompt 1); `make_kohya_output.py` calls it. Needs Pillow (pip install pillow). Deterministic:
the same epoch and prompt always give the same bytes.
"""

from __future__ import annotations

import random
import re
from pathlib import Path
from typing import Any

GRID = 32  # pixel-art cells
SCALE = 8  # each cell drawn as 8x8 pixels: 256x256 images

# the left half of the sprite (mirrored to 32 columns): outline K, hair H, skin S, eye
# highlight W, cheeks P, clothes B, clothes detail L, background "."
LEFT_HALF = [
    "................",
    "................",
    "...........KKKKK",
    ".........KKHHHHH",
    "........KHHHHHHH",
    ".......KHHHHSSSS",
    "......KHHHSSSSSS",
    "......KHSSSSSSSS",
    ".....KSSSSSSSSSS",
    ".....KSSSSSSSSSS",
    ".....KSSSKKSSSSS",
    ".....KSSSKWSSSSS",
    ".....KSSSKKSSSSS",
    ".....KSPPSSSSSSS",
    ".....KSPPSSSSSKK",
    "......KSSSSSSSSS",
    ".......KSSSSSSSS",
    "........KKSSSSSS",
    "..........KKKKKK",
    ".........KBBBBBB",
    ".......KSKBBBBBB",
    "......KSSKBBBBBB",
    "......KSSKBBBBLL",
    ".......KKKBBBBBB",
    ".........KBBBBBB",
    ".........KBBBBBK",
    ".........KBBBBK.",
    "........KSSSSK..",
    "........KKKKKK..",
    "................",
    "................",
    "................",
]

# the waving pose: (row, first column, cells) drawn over the mirrored sprite
WAVING = [
    (13, 27, "KKK"), (14, 27, "KSSK"), (15, 27, "KSSK"), (16, 26, "KSSK"), (17, 25, "KSSK"),
    (18, 24, "KSSK"), (19, 23, "SSK"), (20, 23, ".."), (21, 23, "..."), (22, 23, "..."),
    (23, 23, ".."),
]  # fmt: skip

Color = tuple[int, int, int]

# one look per test prompt: (hair, clothes, clothes detail, background)
LOOKS: list[tuple[Color, Color, Color, Color]] = [
    ((92, 58, 33), (74, 132, 214), (236, 240, 250), (250, 236, 214)),  # brown hair, blue
    ((238, 196, 92), (236, 110, 140), (255, 226, 120), (214, 238, 226)),  # blond, pink
    ((40, 34, 40), (112, 186, 96), (250, 250, 240), (226, 222, 248)),  # black hair, green
]
OUTLINE: Color = (38, 30, 44)
SKIN: Color = (255, 214, 178)
CHEEK: Color = (246, 150, 150)
HIGHLIGHT: Color = (255, 255, 255)

SAMPLE_NAME = re.compile(r"_e(\d{6})_(\d{2})_\d{14}\.png$")


def _sprite(look: int) -> list[list[Color | None]]:
    hair, clothes, detail, _ = LOOKS[look % len(LOOKS)]
    colors: dict[str, Color | None] = {
        ".": None, "K": OUTLINE, "H": hair, "S": SKIN, "W": HIGHLIGHT, "P": CHEEK,
        "B": clothes, "L": detail,
    }  # fmt: skip
    rows = [list(half + half[::-1]) for half in LEFT_HALF]
    if look % 2 == 1:  # this prompt waves: the right arm raised
        for y, x0, cells in WAVING:
            rows[y][x0 : x0 + len(cells)] = list(cells)
    return [[colors[cell] for cell in row] for row in rows]


def _clamp(value: float) -> int:
    return max(0, min(255, round(value)))


def draw_sample(epoch: int, epochs: int, look: int = 0) -> Any:
    """The sample image of ``epoch`` (1-based) of ``epochs`` for test prompt ``look``: a
    256x256 RGB Pillow image; later epochs are cleaner."""
    from PIL import Image, ImageFilter

    learnt = 1.0 if epochs <= 1 else (epoch - 1) / (epochs - 1)  # 0: first epoch, 1: last
    rng = random.Random(epoch * 1000 + look)
    background = LOOKS[look % len(LOOKS)][3]
    grid = Image.new("RGB", (GRID, GRID))
    pixels = grid.load()
    assert pixels is not None
    sprite = _sprite(look)
    for y in range(GRID):
        # early epochs keep the base model's photographic background: a sky-to-floor fade
        photo = (
            _clamp(120 + 90 * (1 - y / GRID)),
            _clamp(150 + 60 * (1 - y / GRID)),
            _clamp(170 - 40 * (y / GRID)),
        )
        plain: Color = (
            _clamp(background[0] * learnt + photo[0] * (1 - learnt)),
            _clamp(background[1] * learnt + photo[1] * (1 - learnt)),
            _clamp(background[2] * learnt + photo[2] * (1 - learnt)),
        )
        for x in range(GRID):
            r, g, b = sprite[y][x] or plain
            jitter = 36 * (1 - learnt)  # palette drift
            pixels[x, y] = (
                _clamp(r + rng.uniform(-jitter, jitter)),
                _clamp(g + rng.uniform(-jitter, jitter)),
                _clamp(b + rng.uniform(-jitter, jitter)),
            )
    if learnt < 1:  # soft, anti-aliased edges instead of crisp pixels
        soft = grid.resize((GRID * 2, GRID * 2), Image.Resampling.BILINEAR)
        soft = soft.filter(ImageFilter.GaussianBlur(1.2)).resize((GRID, GRID))
        grid = Image.blend(grid, soft, 0.7 * (1 - learnt))
        pixels = grid.load()
        assert pixels is not None
        for _ in range(round(GRID * GRID * 0.16 * (1 - learnt) ** 2)):  # random pixels
            x, y = rng.randrange(GRID), rng.randrange(GRID)
            pixels[x, y] = (rng.randrange(256), rng.randrange(256), rng.randrange(256))
    return grid.resize((GRID * SCALE, GRID * SCALE), Image.Resampling.NEAREST)


def save_sample(image: Any, path: Path) -> None:
    """As a small PNG: a palette when the image has few colours (the clean epochs)."""
    colors = image.getcolors(256)
    if colors is not None:
        image = image.quantize(colors=len(colors), dither=0)
    image.save(path, format="PNG", optimize=True)


def redraw_samples(folder: Path, epochs: int | None = None) -> list[Path]:
    """Redraw every kohya sample image in ``folder``; ``epochs``: of how many (default:
    the highest epoch found)."""
    found = sorted((p, SAMPLE_NAME.search(p.name)) for p in folder.glob("*.png"))
    samples = [(path, int(m.group(1)), int(m.group(2))) for path, m in found if m]
    total = epochs or max((epoch for _, epoch, _ in samples), default=1)
    for path, epoch, look in samples:
        save_sample(draw_sample(epoch, total, look), path)
    return [path for path, _, _ in samples]


def main() -> None:
    import argparse

    parser = argparse.ArgumentParser(description="Redraw kohya sample images as pixel art.")
    parser.add_argument("folder", type=Path, help="a kohya output's sample folder")
    parser.add_argument("--epochs", type=int, help="of how many epochs (default: the last found)")
    args = parser.parse_args()
    drawn = redraw_samples(args.folder, args.epochs)
    print(f"drew {len(drawn)} sample images in {args.folder}")


if __name__ == "__main__":
    main()
