"""Stand-in for kohya's networks/lora_flux.py: the same save_weights contract."""

from __future__ import annotations

from networks.lora import LoRANetwork as _Base


class LoRANetwork(_Base):
    def save_weights(self, file, dtype, metadata):
        return super().save_weights(file, dtype, metadata)


def create_network(multiplier, network_dim, network_alpha, *args, **kwargs):
    return LoRANetwork(network_dim, network_alpha)
