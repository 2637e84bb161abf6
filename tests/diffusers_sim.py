"""A diffusers output folder, laid out as examples/text_to_image/train_text_to_image_lora.py
writes it (huggingface/diffusers 58eb52c0803e, 2026-08-23):

- ``accelerator.init_trackers("text2image-fine-tune", config=vars(args))`` with
  ``--report_to tensorboard`` (the default): accelerate 1.x's TensorBoardTracker writes
  ``logs/text2image-fine-tune/events.out.tfevents.*`` and
  ``logs/text2image-fine-tune/{time.time()}/hparams.yml`` (``yaml.dump(values)``);
- every ``--checkpointing_steps``: with ``--checkpoints_total_limit``, the oldest
  ``checkpoint-*`` folders are removed first (``shutil.rmtree``), then
  ``accelerator.save_state("checkpoint-{global_step}")`` writes optimizer.bin,
  scheduler.bin, random_states_0.pkl, and its save hook ``pytorch_lora_weights.safetensors``
  (PEFT names, ``unet.`` prefix: ``...to_k.lora_A.weight``);
- at the end ``pytorch_lora_weights.safetensors`` in the folder itself, the same tensors in
  diffusers names (``...to_k.lora.down.weight``).
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from safetensors.numpy import save

MODULES = [
    f"unet.down_blocks.0.attentions.0.transformer_blocks.0.attn1.{p}" for p in ("to_k", "to_q")
]


def lora_bytes(rank: int, seed: int, final: bool) -> bytes:
    generator = np.random.default_rng(seed)
    tensors = {}
    for module in MODULES:
        down, up = ("lora.down", "lora.up") if final else ("lora_A", "lora_B")
        tensors[f"{module}.{down}.weight"] = generator.standard_normal((rank, 32)).astype(
            np.float32
        )
        tensors[f"{module}.{up}.weight"] = generator.standard_normal((32, rank)).astype(np.float32)
    return save(tensors, metadata={"format": "pt"})


class DiffusersRun:
    def __init__(self, out: Path, *, rank: int = 4, epochs: int = 3, steps_per_epoch: int = 4,
                 checkpointing_steps: int = 4, total_limit: int | None = None,
                 hub_token: str | None = None, seed: int = 0) -> None:  # fmt: skip
        self.out = out
        self.rank = rank
        self.epochs = epochs
        self.steps_per_epoch = steps_per_epoch
        self.checkpointing_steps = checkpointing_steps
        self.total_limit = total_limit
        self.hub_token = hub_token
        self.seed = seed
        self.removed: list[Path] = []
        self.saved: list[Path] = []

    def args(self) -> dict[str, Any]:
        """vars(args) after parse_args (and num_train_epochs recomputed), as logged."""
        return {
            "pretrained_model_name_or_path": "hf-internal-testing/tiny-stable-diffusion-pipe",
            "revision": None, "variant": None, "dataset_name": "lambdalabs/naruto-blip-captions",
            "output_dir": str(self.out), "seed": self.seed, "resolution": 64,
            "train_batch_size": 1, "num_train_epochs": self.epochs,
            "max_train_steps": self.epochs * self.steps_per_epoch, "learning_rate": 1e-4,
            "lr_scheduler": "constant", "mixed_precision": None, "report_to": "tensorboard",
            "logging_dir": "logs", "checkpointing_steps": self.checkpointing_steps,
            "checkpoints_total_limit": self.total_limit, "resume_from_checkpoint": None,
            "rank": self.rank, "hub_token": self.hub_token, "push_to_hub": False,
        }  # fmt: skip

    def init_trackers(self) -> Path:
        self.out.mkdir(parents=True, exist_ok=True)
        project = self.out / "logs" / "text2image-fine-tune"
        project.mkdir(parents=True, exist_ok=True)
        (project / f"events.out.tfevents.{int(time.time())}.host.1.0").write_bytes(b"\0" * 40)
        run = project / str(time.time())
        run.mkdir()
        with open(run / "hparams.yml", "w") as handle:
            yaml.dump(self.args(), handle)
        return run / "hparams.yml"

    def checkpoint(self, step: int) -> Path:
        if self.total_limit is not None:
            existing = sorted(
                (d for d in self.out.iterdir() if d.name.startswith("checkpoint")),
                key=lambda d: int(d.name.split("-")[1]),
            )
            if len(existing) >= self.total_limit:
                for folder in existing[: len(existing) - self.total_limit + 1]:
                    self.removed.append(folder / "pytorch_lora_weights.safetensors")
                    shutil.rmtree(folder)
        folder = self.out / f"checkpoint-{step}"
        folder.mkdir(exist_ok=True)  # accelerate's save_state: os.makedirs(exist_ok=True)
        path = folder / "pytorch_lora_weights.safetensors"
        path.write_bytes(lora_bytes(self.rank, self.seed * 1000 + step, final=False))
        for name in ("optimizer.bin", "scheduler.bin", "random_states_0.pkl"):
            (folder / name).write_bytes(b"state" * 10)
        self.saved.append(path)
        return path

    def final(self) -> Path:
        last = self.epochs * self.steps_per_epoch
        path = self.out / "pytorch_lora_weights.safetensors"
        path.write_bytes(lora_bytes(self.rank, self.seed * 1000 + last, final=True))
        return path

    def run(self) -> Path:
        self.init_trackers()
        for step in range(1, self.epochs * self.steps_per_epoch + 1):
            if step % self.checkpointing_steps == 0:
                self.checkpoint(step)
        return self.final()
