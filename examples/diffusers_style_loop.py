"""A diffusers-style LoRA training loop, recorded with lora-tracker's Python API.

    python examples/diffusers_style_loop.py /tmp/lora-out      # then: lora-tracker runs

The "training" here is a few numbers standing in for a UNet's LoRA layers (plain Python,
written as a real .safetensors file, so the example needs nothing beyond lora-tracker
itself); the lora-tracker calls are exactly those a real diffusers script makes:
start_run() with the script's arguments, log_epoch() after each epoch with the loss, the
checkpoint just saved and the validation images, finish() at the end (done by `with`).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import struct

import lora_tracker


def save_file(
    tensors: dict[str, tuple[tuple[int, int], list[float]]], path: str, metadata: dict[str, str]
) -> None:
    """Write float16 tensors in the safetensors format (what safetensors.torch.save_file
    writes: an 8-byte header length, a JSON header, the raw little-endian data)."""
    header: dict[str, object] = {"__metadata__": metadata}
    data = b""
    for name, (shape, values) in tensors.items():
        raw = struct.pack(f"<{len(values)}e", *values)
        header[name] = {
            "dtype": "F16",
            "shape": list(shape),
            "data_offsets": [len(data), len(data) + len(raw)],
        }
        data += raw
    encoded = json.dumps(header).encode()
    encoded += b" " * (-len(encoded) % 8)
    with open(path, "wb") as handle:
        handle.write(struct.pack("<Q", len(encoded)) + encoded + data)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    parser.add_argument("output_dir")
    parser.add_argument("--pretrained_model_name_or_path", default="runwayml/stable-diffusion-v1-5")
    parser.add_argument("--rank", type=int, default=16)
    parser.add_argument("--learning_rate", type=float, default=1e-4)
    parser.add_argument("--resolution", type=int, default=512)
    parser.add_argument("--num_train_epochs", type=int, default=3)
    parser.add_argument("--train_batch_size", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--run_name", default=None)
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    rng = random.Random(args.seed)
    lora = {
        "unet.down.lora_A.weight": (
            (args.rank, 320),
            [rng.gauss(0, 1) for _ in range(args.rank * 320)],
        ),
        "unet.down.lora_B.weight": ((320, args.rank), [0.0] * (320 * args.rank)),
    }
    # output_dir: a `lora-tracker watch` on the same folder records into this run too
    with lora_tracker.start_run(
        args.run_name, args, output_dir=args.output_dir, model_type="SD15", trainer="diffusers"
    ) as run:
        for epoch in range(1, args.num_train_epochs + 1):
            losses = []
            for step in range(20):
                shape, values = lora["unet.down.lora_B.weight"]
                lora["unet.down.lora_B.weight"] = (shape, [v + args.learning_rate for v in values])
                losses.append(0.3 / math.sqrt(epoch * 20 + step))
            folder = os.path.join(args.output_dir, f"checkpoint-{epoch * 20}")
            os.makedirs(folder, exist_ok=True)
            weights = os.path.join(folder, "pytorch_lora_weights.safetensors")
            save_file(lora, weights, metadata={"format": "pt"})
            image = os.path.join(folder, "validation_0.png")
            with open(image, "wb") as handle:
                handle.write(b"\x89PNG\r\n\x1a\n")  # a real script saves pipeline output
            run.log_epoch(
                epoch,
                loss=sum(losses) / len(losses),
                checkpoint_path=weights,
                sample_images=[image],
                metrics={"learning_rate": args.learning_rate},
            )
            print(f"epoch {epoch}: loss {sum(losses) / len(losses):.4f}, saved {weights}")


if __name__ == "__main__":
    main()
