"""Stand-in for kohya's sdxl_train_network.py: subclasses NetworkTrainer, overrides
sample_images."""

from __future__ import annotations

import train_network
from library import train_util


class SdxlNetworkTrainer(train_network.NetworkTrainer):
    def base_model_version(self) -> str:
        return "sdxl_base_v1-0"

    def get_sai_model_spec(self, args):
        return {
            "modelspec.architecture": "stable-diffusion-xl-v1-base/lora",
            "modelspec.resolution": args.resolution.replace(",", "x"),
        }

    def sample_images(
        self, accelerator, args, epoch, global_step, device, vae, tokenizer, text_encoder, unet
    ):
        train_util.sample_images(
            accelerator, args, epoch, global_step, device, vae, tokenizer, text_encoder, unet
        )


def setup_parser():
    return train_network.setup_parser()


if __name__ == "__main__":
    parser = setup_parser()

    args = parser.parse_args()
    train_util.verify_command_line_training_args(args)
    args = train_util.read_config_from_file(args, parser)

    trainer = SdxlNetworkTrainer()
    trainer.train(args)
