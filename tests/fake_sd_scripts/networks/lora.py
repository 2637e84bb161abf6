"""Stand-in for kohya's networks/lora.py: a LoRANetwork whose save_weights writes the
file in place (no temp file), computing sshs hashes first, as kohya does."""

from __future__ import annotations

import hashlib
import os

import numpy as np


class LoRANetwork:
    def __init__(self, dim: int, alpha: float, blocks: int = 4) -> None:
        self.dim = dim
        self.alpha = alpha
        rng = np.random.default_rng(dim)
        self.weights = {}
        for i in range(blocks):
            base = f"lora_unet_block_{i}"
            self.weights[f"{base}.lora_down.weight"] = rng.standard_normal((dim, 64)).astype(
                np.float16
            )
            self.weights[f"{base}.lora_up.weight"] = rng.standard_normal((64, dim)).astype(
                np.float16
            )
            self.weights[f"{base}.alpha"] = np.array(alpha, dtype=np.float16)

    def train_step(self) -> None:
        for key in self.weights:
            if key.endswith("down.weight"):
                self.weights[key] += np.float16(0.01)

    def save_weights(self, file, dtype, metadata):
        if metadata is not None and len(metadata) == 0:
            metadata = None
        if os.path.splitext(file)[1] == ".safetensors":
            from safetensors.numpy import save_file

            if metadata is None:
                metadata = {}
            digest = hashlib.sha256(b"".join(v.tobytes() for _, v in sorted(self.weights.items())))
            metadata["sshs_model_hash"] = digest.hexdigest()
            metadata["sshs_legacy_hash"] = digest.hexdigest()[:8]
            save_file(self.weights, file, metadata)
        else:
            with open(file, "wb") as handle:  # torch.save stand-in: no metadata
                for value in self.weights.values():
                    handle.write(value.tobytes())


def create_network(multiplier, network_dim, network_alpha, *args, **kwargs):
    return LoRANetwork(network_dim, network_alpha)
