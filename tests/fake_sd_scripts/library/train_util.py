"""Stand-in for kohya's library/train_util.py: names, checkpoint naming, config file."""

from __future__ import annotations

import argparse
import os
import sys
import time

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

PNG = bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
    "1f15c4890000000d49444154789c6360000002000154a24f5d0000000049454e44ae426082"
)


def verify_command_line_training_args(args: argparse.Namespace) -> None:
    return None


def read_config_from_file(args: argparse.Namespace, parser: argparse.ArgumentParser):
    """--config_file: sections flattened; the command line wins over the file."""
    if not args.config_file:
        return args
    path = args.config_file if args.config_file.endswith(".toml") else args.config_file + ".toml"
    with open(path, "rb") as handle:
        document = tomllib.load(handle)
    flat = {}
    for key, value in document.items():
        if isinstance(value, dict):
            flat.update(value)
        else:
            flat[key] = value
    defaults = parser.parse_args([])
    for key, value in flat.items():
        if getattr(args, key, None) == getattr(defaults, key, None):
            setattr(args, key, value)
    return args


def get_epoch_ckpt_name(args, ext: str, epoch_no: int) -> str:
    model_name = args.output_name or "epoch"
    return f"{model_name}-{epoch_no:06d}{ext}"


def get_last_ckpt_name(args, ext: str) -> str:
    model_name = args.output_name or "last"
    return f"{model_name}{ext}"


def get_remove_epoch_no(args, epoch_no: int):
    if args.save_last_n_epochs is None:
        return None
    remove = epoch_no - args.save_every_n_epochs * args.save_last_n_epochs
    return remove if remove >= 1 else None


def sample_images(accelerator, args, epoch, steps, device, vae, tokenizer, text_encoder, unet):
    """Writes {output_dir}/sample/{output_name}_e{epoch:06d}_{idx:02d}_{time}.png."""
    if epoch == 0 and not args.sample_at_first:
        return
    if epoch != 0 and (not args.sample_every_n_epochs or epoch % args.sample_every_n_epochs):
        return
    folder = os.path.join(args.output_dir, "sample")
    os.makedirs(folder, exist_ok=True)
    stamp = time.strftime("%Y%m%d%H%M%S")
    for index in range(args.num_samples):
        name = f"{args.output_name or ''}_e{epoch:06d}_{index:02d}_{stamp}.png"
        with open(os.path.join(folder, name), "wb") as handle:
            handle.write(PNG)
