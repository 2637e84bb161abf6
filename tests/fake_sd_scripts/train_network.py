"""Stand-in for kohya's train_network.py (sd-scripts main, commit 48d368fa, 2026-02-16):
NetworkTrainer with the same method names, arguments and call order: model load and latent
caching before update_metadata; per step sample_images(..., None, global_step, ...) then the
step save and removal; at each epoch end epoch_logging, save (written in place), remove the
old checkpoint, sample_images(epoch + 1); then the final unnumbered file. Test knobs:
--fail_at_step, --interrupt_at_step, --fail_at_load, --steps_per_epoch, --step_delay."""

from __future__ import annotations

import argparse
import importlib
import json
import math
import os
import random
import time

from library import train_util
from library.utils import setup_logging


class Accelerator:
    def __init__(self, log_with: str | None) -> None:
        self.is_main_process = int(os.environ.get("RANK", "0")) == 0
        self.trackers = [log_with] if log_with else []
        self.logged: list[tuple[dict, int]] = []

    def log(self, logs: dict, step: int) -> None:
        self.logged.append((logs, step))

    def print(self, *args) -> None:
        print(*args, flush=True)

    def wait_for_everyone(self) -> None:
        pass

    def unwrap_model(self, model):
        return model


class NetworkTrainer:
    def __init__(self) -> None:
        self.vae_scale_factor = 0.18215

    def step_logging(self, accelerator, logs, global_step, epoch):
        accelerator.log(logs, step=global_step)

    def epoch_logging(self, accelerator, logs, global_step, epoch):
        accelerator.log(logs, step=epoch)

    def sample_images(
        self, accelerator, args, epoch, global_step, device, vae, tokenizers, text_encoder, unet
    ):
        train_util.sample_images(
            accelerator, args, epoch, global_step, device, vae, tokenizers, text_encoder, unet
        )

    def get_sai_model_spec(self, args):
        return {
            "modelspec.architecture": "stable-diffusion-v1/lora",
            "modelspec.resolution": args.resolution.replace(",", "x"),
        }

    def update_metadata(self, metadata, args):
        pass

    def base_model_version(self) -> str:
        return "sd_v1"

    def train(self, args):
        # the order of kohya's NetworkTrainer.train (sd-scripts main, commit 48d368fa,
        # 2026-02-16): session and start time, logging set up again, dataset, model load,
        # latent caching, metadata (update_metadata before the dataset keys), sample at
        # first, then per step: sample_images(..., None, global_step, ...) and the
        # --save_every_n_steps save / --save_last_n_steps removal; per epoch: epoch_logging,
        # save, removal, sample_images(epoch + 1); the final file last.
        session_id = random.randint(0, 2**32)
        training_started_at = time.time()
        setup_logging(args, reset=True)
        subsets = train_util.load_dataset(args)
        num_train_images = sum(len(images) * repeats for _, repeats, images in subsets)
        accelerator = Accelerator(args.log_with)
        is_main_process = accelerator.is_main_process
        train_util.load_target_model(args)
        train_util.cache_latents(subsets)
        network = importlib.import_module(args.network_module).create_network(
            1.0, args.network_dim, args.network_alpha
        )
        num_train_epochs = args.max_train_epochs
        width, height = (int(v) for v in args.resolution.split(","))
        metadata = {
            "ss_session_id": session_id,
            "ss_training_started_at": training_started_at,
            "ss_output_name": args.output_name,
            "ss_learning_rate": args.learning_rate,
            "ss_num_train_images": num_train_images,
            "ss_num_batches_per_epoch": args.steps_per_epoch,
            "ss_num_epochs": num_train_epochs,
            "ss_gradient_accumulation_steps": 1,
            "ss_max_train_steps": num_train_epochs * args.steps_per_epoch,
            "ss_network_module": args.network_module,
            "ss_network_dim": args.network_dim,
            "ss_network_alpha": args.network_alpha,
            "ss_optimizer": args.optimizer_type,
            "ss_seed": args.seed,
            "ss_base_model_version": self.base_model_version(),
            "ss_resolution": (width, height),
            "ss_total_batch_size": args.train_batch_size,
        }
        if hasattr(self, "update_metadata"):  # older versions have no such method
            self.update_metadata(metadata, args)
        dirs = {
            os.path.basename(folder or ""): {"n_repeats": repeats, "img_count": len(images)}
            for folder, repeats, images in subsets
        }
        if args.dataset_config:
            subsets_meta = [
                {"img_count": len(images), "num_repeats": repeats, "image_dir": folder}
                for folder, repeats, images in subsets
            ]
            metadata["ss_datasets"] = json.dumps([{"subsets": subsets_meta}])
            metadata["ss_tag_frequency"] = json.dumps({})
            metadata["ss_dataset_dirs"] = json.dumps(dirs)
        else:
            metadata["ss_dataset_dirs"] = json.dumps(dirs)
        metadata = {k: str(v) for k, v in metadata.items()}
        minimum_metadata = {
            k: metadata[k] for k in ("ss_network_module", "ss_network_dim", "ss_network_alpha")
        }

        def save_model(ckpt_name, unwrapped_nw, steps, epoch_no):
            os.makedirs(args.output_dir, exist_ok=True)
            ckpt_file = os.path.join(args.output_dir, ckpt_name)
            accelerator.print(f"\nsaving checkpoint: {ckpt_file}")
            metadata["ss_training_finished_at"] = str(time.time())
            metadata["ss_steps"] = str(steps)
            metadata["ss_epoch"] = str(epoch_no)
            to_save = dict(minimum_metadata if args.no_metadata else metadata)
            to_save.update(self.get_sai_model_spec(args))
            unwrapped_nw.save_weights(ckpt_file, None, to_save)

        def remove_model(old_ckpt_name):
            old_ckpt_file = os.path.join(args.output_dir, old_ckpt_name)
            if os.path.exists(old_ckpt_file):
                accelerator.print(f"removing old checkpoint: {old_ckpt_file}")
                os.remove(old_ckpt_file)

        global_step = 0
        if hasattr(self, "sample_images"):
            self.sample_images(accelerator, args, 0, global_step, "cpu", None, [None], None, None)
        is_tracking = len(accelerator.trackers) > 0
        for epoch in range(num_train_epochs):
            accelerator.print(f"\nepoch {epoch + 1}/{num_train_epochs}\n")
            metadata["ss_epoch"] = str(epoch + 1)
            losses = []
            for _ in range(args.steps_per_epoch):
                network.train_step()
                global_step += 1
                if hasattr(self, "sample_images"):
                    self.sample_images(
                        accelerator, args, None, global_step, "cpu", None, [None], None, None
                    )
                every = args.save_every_n_steps
                if every is not None and global_step % every == 0:
                    accelerator.wait_for_everyone()
                    if is_main_process:
                        ckpt_name = train_util.get_step_ckpt_name(
                            args, "." + args.save_model_as, global_step
                        )
                        save_model(ckpt_name, accelerator.unwrap_model(network), global_step, epoch)
                        remove_step_no = train_util.get_remove_step_no(args, global_step)
                        if remove_step_no is not None:
                            remove_model(
                                train_util.get_step_ckpt_name(
                                    args, "." + args.save_model_as, remove_step_no
                                )
                            )
                loss = 0.5 / math.sqrt(global_step)
                losses.append(loss)
                if is_tracking:
                    self.step_logging(accelerator, {"loss/current": loss}, global_step, epoch + 1)
                if args.fail_at_step and global_step == args.fail_at_step:
                    raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB (simulated)")
                if args.interrupt_at_step and global_step == args.interrupt_at_step:
                    raise KeyboardInterrupt
                if args.step_delay:
                    time.sleep(args.step_delay)
            if is_tracking:
                logs = {"loss/epoch_average": sum(losses) / len(losses)}
                self.epoch_logging(accelerator, logs, global_step, epoch + 1)
            if args.save_every_n_epochs is not None:
                saving = (epoch + 1) % args.save_every_n_epochs == 0 and (
                    epoch + 1
                ) < num_train_epochs
                if is_main_process and saving:
                    ckpt_name = train_util.get_epoch_ckpt_name(
                        args, "." + args.save_model_as, epoch + 1
                    )
                    save_model(ckpt_name, accelerator.unwrap_model(network), global_step, epoch + 1)
                    remove_epoch_no = train_util.get_remove_epoch_no(args, epoch + 1)
                    if remove_epoch_no is not None:
                        remove_model(
                            train_util.get_epoch_ckpt_name(
                                args, "." + args.save_model_as, remove_epoch_no
                            )
                        )
            if hasattr(self, "sample_images"):
                self.sample_images(
                    accelerator, args, epoch + 1, global_step, "cpu", None, [None], None, None
                )
        metadata["ss_training_finished_at"] = str(time.time())
        if is_main_process:
            ckpt_name = train_util.get_last_ckpt_name(args, "." + args.save_model_as)
            save_model(ckpt_name, network, global_step, num_train_epochs)
            print("model saved.", flush=True)


if os.environ.get("FAKE_KOHYA_OLD"):  # an older sd-scripts without these methods
    del NetworkTrainer.update_metadata
    del NetworkTrainer.sample_images


def setup_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser()
    parser.add_argument("--output_dir", type=str, default=None)
    parser.add_argument("--output_name", type=str, default=None)
    parser.add_argument("--pretrained_model_name_or_path", type=str, default=None)
    parser.add_argument("--network_module", type=str, default="networks.lora")
    parser.add_argument("--network_dim", type=int, default=4)
    parser.add_argument("--network_alpha", type=float, default=1.0)
    parser.add_argument("--learning_rate", type=float, default=1e-4)
    parser.add_argument("--optimizer_type", type=str, default="AdamW8bit")
    parser.add_argument("--resolution", type=str, default="512,512")
    parser.add_argument("--train_batch_size", type=int, default=1)
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--max_train_epochs", type=int, default=2)
    parser.add_argument("--save_every_n_epochs", type=int, default=None)
    parser.add_argument("--save_last_n_epochs", type=int, default=None)
    parser.add_argument("--save_every_n_steps", type=int, default=None)
    parser.add_argument("--save_last_n_steps", type=int, default=None)
    parser.add_argument("--save_model_as", type=str, default="safetensors")
    parser.add_argument("--no_metadata", action="store_true")
    parser.add_argument("--log_with", type=str, default=None)
    parser.add_argument("--sample_every_n_epochs", type=int, default=None)
    parser.add_argument("--sample_every_n_steps", type=int, default=None)
    parser.add_argument("--sample_at_first", action="store_true")
    parser.add_argument("--sample_prompts", type=str, default=None)
    parser.add_argument("--sample_sampler", type=str, default="ddim")
    parser.add_argument("--config_file", type=str, default=None)
    parser.add_argument("--dataset_config", type=str, default=None)
    # sd-scripts 48d368f library/train_util.py: the Hub upload token and the wandb key
    parser.add_argument("--huggingface_token", type=str, default=None)
    parser.add_argument("--wandb_api_key", type=str, default=None)
    parser.add_argument("--fail_at_step", type=int, default=None)
    parser.add_argument("--steps_per_epoch", type=int, default=3)
    parser.add_argument("--step_delay", type=float, default=0.0)
    parser.add_argument("--interrupt_at_step", type=int, default=None)  # Ctrl-C, as a test knob
    parser.add_argument("--fail_at_load", action="store_true")  # out of memory loading the model
    return parser


if __name__ == "__main__":
    parser = setup_parser()

    args = parser.parse_args()
    train_util.verify_command_line_training_args(args)
    args = train_util.read_config_from_file(args, parser)

    trainer = NetworkTrainer()
    trainer.train(args)
