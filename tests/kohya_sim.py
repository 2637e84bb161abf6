"""A stand-in for a kohya sd-scripts training run, written for these tests.

It writes what kohya writes, the way it writes it: real safetensors files (made with the
safetensors library) with realistic ``ss_*`` / ``modelspec.*`` metadata, epoch files
written in place in chunks, old ones removed as --save_last_n_epochs does, the final
unnumbered file, and sample images.
"""

from __future__ import annotations

import hashlib
import json
import random
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
from safetensors.numpy import save

Flavour = Literal["sd15", "sdxl", "nometa"]

# 1x1 transparent PNG
PNG = bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
    "1f15c4890000000d49444154789c6360000002000154a24f5d0000000049454e44ae426082"
)


def sample_prompts_file(folder: Path) -> str:
    """A user's --sample_prompts file of two unseeded prompts in ``folder``: kohya samples
    only from one (sd-scripts 48d368fa fails at its first sampling without it)."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "sample_prompts.txt"
    path.write_text("pixel art baby, smiling\npixel art baby, asleep\n")
    return str(path)


def png_bytes(label: str) -> bytes:
    """A whole 1x1 PNG holding ``label`` in a tEXt chunk: each sample its own bytes (so
    its own SHA-256), ending with IEND as a finished PNG does."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return len(data).to_bytes(4, "big") + body + zlib.crc32(body).to_bytes(4, "big")

    text = chunk(b"tEXt", b"label\x00" + label.encode("utf-8"))
    return PNG[:33] + text + PNG[33:]


def tensors(dim: int, count: int, seed: int, width: int = 320) -> dict[str, np.ndarray]:
    """LoRA-shaped tensors: down/up pairs and alphas."""
    rng = np.random.default_rng(seed)
    found: dict[str, np.ndarray] = {}
    for i in range(count):
        base = f"lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q_{i}"
        found[f"{base}.lora_down.weight"] = rng.standard_normal((dim, width)).astype(np.float16)
        found[f"{base}.lora_up.weight"] = rng.standard_normal((width, dim)).astype(np.float16)
        found[f"{base}.alpha"] = np.array(dim / 2, dtype=np.float16)
    return found


def common_metadata(
    name: str, session: int, started: float, dim: int, alpha: float
) -> dict[str, str]:
    return {
        "ss_session_id": str(session),
        "ss_training_started_at": str(started),
        "ss_output_name": name,
        "ss_learning_rate": "0.0001",
        "ss_text_encoder_lr": "5e-05",
        "ss_unet_lr": "0.0001",
        "ss_num_reg_images": "0",
        "ss_gradient_checkpointing": "True",
        "ss_gradient_accumulation_steps": "1",
        "ss_lr_warmup_steps": "0",
        "ss_lr_scheduler": "cosine",
        "ss_network_module": "networks.lora",
        "ss_network_dim": str(dim),
        "ss_network_alpha": str(float(alpha)),
        "ss_network_dropout": "None",
        "ss_mixed_precision": "fp16",
        "ss_full_fp16": "False",
        "ss_clip_skip": "2",
        "ss_max_token_length": "None",
        "ss_cache_latents": "True",
        "ss_seed": "42",
        "ss_lowram": "False",
        "ss_noise_offset": "None",
        "ss_adaptive_noise_scale": "None",
        "ss_zero_terminal_snr": "False",
        "ss_training_comment": "None",
        "ss_sd_scripts_commit_hash": "48d368fa55579ec5ae4a1a54fb5d1aee27a4d0de",
        "ss_optimizer": "bitsandbytes.optim.adamw.AdamW8bit(weight_decay=0.1)",
        "ss_max_grad_norm": "1.0",
        "ss_caption_dropout_rate": "0.0",
        "ss_caption_dropout_every_n_epochs": "0",
        "ss_caption_tag_dropout_rate": "0.0",
        "ss_face_crop_aug_range": "None",
        "ss_prior_loss_weight": "1.0",
        "ss_min_snr_gamma": "5.0",
        "ss_scale_weight_norms": "None",
        "ss_ip_noise_gamma": "None",
        "ss_debiased_estimation": "False",
    }


def sd15_metadata(name: str, session: int, started: float, dim: int = 32) -> dict[str, str]:
    """A legacy --train_data_dir SD1.5 run: ss_resolution, ss_dataset_dirs, ss_tag_frequency."""
    meta = common_metadata(name, session, started, dim, dim / 2)
    meta.update({
        "ss_v2": "False",
        "ss_base_model_version": "sd_v1",
        "ss_sd_model_name": "v1-5-pruned-emaonly.safetensors",
        "ss_new_sd_model_hash": "6ce0161689b3853acaa03779ec93eafe75a02f4ced659bee03f50797806fa2fa",
        "ss_num_train_images": "2030",
        "ss_num_batches_per_epoch": "1015",
        "ss_num_epochs": "10",
        "ss_max_train_steps": "10150",
        "ss_resolution": "(512, 512)",
        "ss_batch_size_per_device": "2",
        "ss_total_batch_size": "2",
        "ss_dataset_dirs": json.dumps({"10_pixelbaby": {"n_repeats": 10, "img_count": 203}}),
        "ss_tag_frequency": json.dumps(
            {"10_pixelbaby": {"pixel art": 203, "baby": 180, "pink onesie": 40, " bow": 12}}
        ),
        "ss_bucket_info": json.dumps({"buckets": {"0": {"resolution": [512, 512],
                                                         "count": 2030}},
                                      "mean_img_ar_error": 0.0}),
        "ss_enable_bucket": "True",
        "ss_keep_tokens": "0",
        "ss_flip_aug": "False",
        "ss_color_aug": "False",
        "ss_random_crop": "False",
        "ss_shuffle_caption": "True",
        "modelspec.sai_model_spec": "1.0.0",
        "modelspec.architecture": "stable-diffusion-v1/lora",
        "modelspec.implementation": "diffusers",
        "modelspec.title": name,
        "modelspec.resolution": "512x512",
        "modelspec.prediction_type": "epsilon",
    })  # fmt: skip
    return meta


def sdxl_metadata(name: str, session: int, started: float, dim: int = 128) -> dict[str, str]:
    """A --dataset_config SDXL run: ss_datasets instead of ss_resolution."""
    meta = common_metadata(name, session, started, dim, dim / 2)
    datasets = [{
        "is_dreambooth": True,
        "batch_size_per_device": 1,
        "num_train_images": 2030,
        "num_reg_images": 0,
        "resolution": [1024, 1024],
        "enable_bucket": True,
        "min_bucket_reso": 256,
        "max_bucket_reso": 2048,
        "tag_frequency": {"pixelbaby": {"pixel art": 203, "baby": 190}},
        "bucket_info": {"buckets": {}, "mean_img_ar_error": 0.0},
        "subsets": [{"img_count": 203, "num_repeats": 10, "color_aug": False,
                     "flip_aug": False, "random_crop": False, "shuffle_caption": True,
                     "keep_tokens": 0, "image_dir": "pixelbaby", "class_tokens": "pxb",
                     "is_reg": False}],
    }]  # fmt: skip
    meta.update({
        "ss_v2": "False",
        "ss_base_model_version": "sdxl_base_v1-0",
        "ss_sd_model_name": "sd_xl_base_1.0.safetensors",
        "ss_num_train_images": "2030",
        "ss_num_batches_per_epoch": "2030",
        "ss_num_epochs": "10",
        "ss_max_train_steps": "20300",
        "ss_datasets": json.dumps(datasets),
        "ss_optimizer": (
            "transformers.optimization.Adafactor(scale_parameter=False,relative_step=False)"
        ),
        "ss_lr_scheduler": "constant_with_warmup",
        "modelspec.sai_model_spec": "1.0.0",
        "modelspec.architecture": "stable-diffusion-xl-v1-base/lora",
        "modelspec.implementation": "https://github.com/Stability-AI/generative-models",
        "modelspec.title": name,
        "modelspec.resolution": "1024x1024",
        "modelspec.prediction_type": "epsilon",
    })  # fmt: skip
    return meta


def nometa_metadata(name: str, dim: int = 32) -> dict[str, str]:
    """What --no_metadata keeps: network shape, base model version, modelspec, hashes."""
    return {
        "ss_v2": "False",
        "ss_base_model_version": "sd_v1",
        "ss_network_module": "networks.lora",
        "ss_network_dim": str(dim),
        "ss_network_alpha": str(dim / 2),
        "modelspec.sai_model_spec": "1.0.0",
        "modelspec.architecture": "stable-diffusion-v1/lora",
        "modelspec.title": name,
        "modelspec.resolution": "512x512",
    }


def checkpoint_bytes(metadata: dict[str, str], dim: int, seed: int, pairs: int = 4) -> bytes:
    """A complete safetensors file, with sshs hashes computed like kohya's (of the data)."""
    weights = tensors(dim, pairs, seed)
    data_hash = hashlib.sha256(b"".join(weights[k].tobytes() for k in sorted(weights)))
    meta = dict(metadata)
    meta["sshs_model_hash"] = data_hash.hexdigest()
    meta["sshs_legacy_hash"] = data_hash.hexdigest()[:8]
    return save(weights, metadata=meta)


def write_in_place(path: Path, payload: bytes, chunks: int = 1, delay: float = 0.0) -> None:
    """Write at the final path, in chunks, without temp file or rename (as kohya does)."""
    step = max(1, len(payload) // chunks)
    with open(path, "wb") as handle:
        for start in range(0, len(payload), step):
            handle.write(payload[start : start + step])
            handle.flush()
            if delay:
                time.sleep(delay)


@dataclass
class KohyaRun:
    """One simulated training process writing to ``output_dir``."""

    output_dir: Path
    output_name: str = "pixelbaby"
    flavour: Flavour = "sd15"
    epochs: int = 4
    save_last_n: int | None = 2
    dim: int = 32
    session: int = field(default_factory=lambda: random.randint(0, 2**32))
    started: float = 1731146400.0
    chunks: int = 4
    chunk_delay: float = 0.0
    samples_per_epoch: int = 2
    # the seeds of the prompts of a --sample_prompts file, one sample each, named as kohya
    # names them (``_{seed}`` when the prompt sets one); None: ``samples_per_epoch``
    # unseeded samples
    sample_seeds: list[int | None] | None = None
    written: list[Path] = field(default_factory=list)
    removed: list[Path] = field(default_factory=list)

    def metadata(self, epoch: int) -> dict[str, str]:
        if self.flavour == "nometa":
            return nometa_metadata(self.output_name, self.dim)
        maker = sd15_metadata if self.flavour == "sd15" else sdxl_metadata
        meta = maker(self.output_name, self.session, self.started, self.dim)
        meta["ss_num_epochs"] = str(self.epochs)
        meta["ss_epoch"] = str(epoch)
        steps = epoch * 100
        meta["ss_steps"] = str(steps)
        meta["ss_training_finished_at"] = str(self.started + steps)
        meta["modelspec.date"] = "2025-11-09T10:00:00"
        return meta

    def epoch_path(self, epoch: int) -> Path:
        if epoch == self.epochs:
            return self.output_dir / f"{self.output_name}.safetensors"
        return self.output_dir / f"{self.output_name}-{epoch:06d}.safetensors"

    def save_epoch(self, epoch: int) -> Path:
        """Epoch end, in kohya's order: write new file, remove old, then samples."""
        self.output_dir.mkdir(parents=True, exist_ok=True)
        path = self.epoch_path(epoch)
        payload = checkpoint_bytes(self.metadata(epoch), self.dim, seed=self.session + epoch)
        write_in_place(path, payload, self.chunks, self.chunk_delay)
        self.written.append(path)
        if self.save_last_n and epoch < self.epochs:
            old = epoch - self.save_last_n
            if old >= 1:
                old_path = self.epoch_path(old)
                if old_path.exists():
                    old_path.unlink()
                    self.removed.append(old_path)
        self.write_samples(epoch)
        return path

    def save_step(self, step: int) -> Path:
        """A ``--save_every_n_steps`` file: ``{name}-step{step:08d}``, with kohya's 0-based
        epoch in progress in ``ss_epoch`` (100 steps an epoch here)."""
        self.output_dir.mkdir(parents=True, exist_ok=True)
        path = self.output_dir / f"{self.output_name}-step{step:08d}.safetensors"
        meta = self.metadata((step - 1) // 100)
        meta["ss_steps"] = str(step)
        meta["ss_training_finished_at"] = str(self.started + step)
        write_in_place(path, checkpoint_bytes(meta, self.dim, seed=self.session + step))
        self.written.append(path)
        return path

    def write_samples(self, epoch: int) -> list[Path]:
        # kohya's stamp: the local time of writing; epoch N's samples during its steps
        return self._samples(f"e{epoch:06d}", self.started + epoch * 100 - 50)

    def write_step_samples(self, step: int) -> list[Path]:
        """Samples of ``--sample_every_n_steps`` at global step ``step``."""
        return self._samples(f"{step:06d}", self.started + step - 1)

    def _samples(self, number: str, written: float) -> list[Path]:
        folder = self.output_dir / "sample"
        folder.mkdir(parents=True, exist_ok=True)
        seeds = self.sample_seeds
        if seeds is None:
            seeds = [None] * self.samples_per_epoch
        made = []
        for index, seed in enumerate(seeds):
            stamp = time.strftime("%Y%m%d%H%M%S", time.localtime(written + index))
            suffix = "" if seed is None else f"_{seed}"
            path = folder / f"{self.output_name}_{number}_{index:02d}_{stamp}{suffix}.png"
            path.write_bytes(png_bytes(f"{self.session} {path.name}"))
            made.append(path)
        return made

    def run(self, pause: float = 0.0) -> None:
        for epoch in range(1, self.epochs + 1):
            self.save_epoch(epoch)
            if pause:
                time.sleep(pause)
