"""Stand-in for kohya's flux_train_network.py: overrides update_metadata and
sample_images, saves through networks/lora_flux.py."""

from __future__ import annotations

import train_network
from library import train_util


class FluxNetworkTrainer(train_network.NetworkTrainer):
    def base_model_version(self) -> str:
        return "flux1"

    def update_metadata(self, metadata, args):
        metadata["ss_model_type"] = "flux-dev"
        metadata["ss_guidance_scale"] = 1.0
        super().update_metadata(metadata, args)

    def get_sai_model_spec(self, args):
        return {
            "modelspec.architecture": "flux-1-dev/lora",
            "modelspec.resolution": args.resolution.replace(",", "x"),
        }

    def sample_images(
        self, accelerator, args, epoch, global_step, device, ae, tokenizer, text_encoder, flux
    ):
        train_util.sample_images(
            accelerator, args, epoch, global_step, device, ae, tokenizer, text_encoder, flux
        )


def setup_parser():
    parser = train_network.setup_parser()
    parser.set_defaults(network_module="networks.lora_flux")
    return parser


if __name__ == "__main__":
    parser = setup_parser()

    args = parser.parse_args()
    train_util.verify_command_line_training_args(args)
    args = train_util.read_config_from_file(args, parser)

    trainer = FluxNetworkTrainer()
    trainer.train(args)
