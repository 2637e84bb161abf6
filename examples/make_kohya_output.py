"""Write a small, realistic kohya sd-scripts output folder (3 epochs of a tiny LoRA with
the metadata kohya writes, plus two pixel-art sample images per epoch, drawn by
pixel_sprites.py, cleaner epoch after epoch) to try `lora-tracker watch` on.

    python examples/make_kohya_output.py examples/kohya_output

Needs numpy and Pillow (pip install numpy pillow). The repository already ships the result
in examples/kohya_output.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from examples.pixel_sprites import redraw_samples
from tests.kohya_sim import KohyaRun


def main() -> None:
    import argparse

    parser = argparse.ArgumentParser(
        description="Write a small kohya-style output folder (3 epochs, samples) to try "
        "`lora-tracker watch` on."
    )
    parser.add_argument("folder", nargs="?", default="examples/kohya_output",
                        help="where to write it (default: examples/kohya_output)")  # fmt: skip
    target = Path(parser.parse_args().folder)
    KohyaRun(
        target,
        output_name="pixelbaby_demo",
        epochs=3,
        save_last_n=None,
        dim=4,
        session=4242,
        samples_per_epoch=2,
    ).run()
    redraw_samples(target / "sample", epochs=3)
    print(f"wrote {target}")


if __name__ == "__main__":
    main()
