"""Stand-in for kohya's library/train_util.py: names, checkpoint naming, config file,
sampling rules and sample file names (sd-scripts main at commit 48d368fa, 2026-02-16)."""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
import zlib

from library.utils import setup_logging

setup_logging()

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


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


def get_step_ckpt_name(args, ext: str, step_no: int) -> str:
    model_name = args.output_name or "at"
    return f"{model_name}-step{step_no:08d}{ext}"


def get_remove_epoch_no(args, epoch_no: int):
    if args.save_last_n_epochs is None:
        return None
    remove = epoch_no - args.save_every_n_epochs * args.save_last_n_epochs
    return None if remove < 0 else remove


def get_remove_step_no(args, step_no: int):
    """As kohya: keep --save_last_n_steps worth of step files."""
    if args.save_last_n_steps is None:
        return None
    remove = step_no - args.save_last_n_steps - 1
    remove = remove - (remove % args.save_every_n_steps)
    return None if remove < 0 else remove


def sample_images(accelerator, args, epoch, steps, device, vae, tokenizer, text_encoder, unet):
    """kohya's rules (sample_images_common): step 0 only with --sample_at_first; with
    --sample_every_n_epochs only epoch-end calls (epoch not None) sample; else with
    --sample_every_n_steps only per-step calls (epoch None) at multiples. Writes
    {output_dir}/sample/{output_name}_{e{epoch:06d}|{steps:06d}}_{idx:02d}_{local time}
    [_{seed}].png: one per prompt of the --sample_prompts file, read again at every sampling (a
    missing file: an error line and no samples; no --sample_prompts at all: kohya's
    os.path.isfile(None) raises TypeError, and so does this)."""
    if steps == 0:
        if not args.sample_at_first:
            return
    else:
        if args.sample_every_n_steps is None and args.sample_every_n_epochs is None:
            return
        if args.sample_every_n_epochs is not None:
            if epoch is None or epoch % args.sample_every_n_epochs != 0:
                return
        elif steps % args.sample_every_n_steps != 0 or epoch is not None:
            return
    # as sd-scripts 48d368fa: no --sample_prompts is os.path.isfile(None), a TypeError
    if not os.path.isfile(args.sample_prompts):
        print(f"No prompt file: {args.sample_prompts}", file=sys.stderr)
        return
    prompts = read_sample_prompts(args.sample_prompts)
    folder = args.output_dir + "/sample"
    os.makedirs(folder, exist_ok=True)
    for index, prompt in enumerate(prompts):
        seed = prompt.get("seed")
        stamp = time.strftime("%Y%m%d%H%M%S", time.localtime())
        number = f"e{epoch:06d}" if epoch is not None else f"{steps:06d}"
        prefix = "" if args.output_name is None else args.output_name + "_"
        suffix = "" if seed is None else f"_{seed}"
        name = f"{prefix}{number}_{index:02d}_{stamp}{suffix}.png"
        with open(os.path.join(folder, name), "wb") as handle:
            handle.write(png_of(f"{name} {prompt.get('prompt', '')}"))


def read_sample_prompts(path: str) -> list[dict]:
    """The prompts, in the order kohya numbers their samples: by the name's ending (.txt
    lines that are not blank and do not begin with '#'; a .toml's [[prompt.subset]] tables
    over its [prompt] defaults; a .json list of tables or lines). Only what names a sample
    is read here: the text and the seed (`--d N` in a line)."""
    if path.endswith(".txt"):
        with open(path, encoding="utf-8") as handle:
            items = [raw.strip() for raw in handle if raw.strip() and not raw.startswith("#")]
    elif path.endswith(".toml"):
        with open(path, "rb") as handle:
            document = tomllib.load(handle)
        defaults = document["prompt"]
        items = [dict(defaults, **table) for table in defaults["subset"]]
    elif path.endswith(".json"):
        with open(path, encoding="utf-8") as handle:
            items = json.load(handle)
    else:
        raise UnboundLocalError("local variable 'prompts' referenced before assignment")
    prompts = []
    for item in items:
        if isinstance(item, str):
            pieces = item.split(" --")
            found = {"prompt": pieces[0]}
            for piece in pieces:
                seed = re.match(r"d (\d+)", piece, re.IGNORECASE)
                if seed:
                    found["seed"] = int(seed.group(1))
            item = found
        prompts.append(item)
    return prompts


def png_of(label: str) -> bytes:
    """A whole, valid 32x32 PNG (kohya's samples are real images a browser shows): one
    colour taken from ``label``, which is also kept in a tEXt chunk, so every sample has its
    own bytes and its own look."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return len(data).to_bytes(4, "big") + body + zlib.crc32(body).to_bytes(4, "big")

    size = 32
    colour = zlib.crc32(label.encode("utf-8")).to_bytes(4, "big")[:3]
    rows = (b"\x00" + colour * size) * size  # filter byte 0, then RGB pixels
    header = size.to_bytes(4, "big") * 2 + bytes([8, 2, 0, 0, 0])  # 8-bit RGB
    return (
        PNG_SIGNATURE
        + chunk(b"IHDR", header)
        + chunk(b"tEXt", b"label\x00" + label.encode("utf-8"))
        + chunk(b"IDAT", zlib.compress(rows))
        + chunk(b"IEND", b"")
    )


IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp")


def load_dataset(args):
    """The --dataset_config subsets: (image_dir, num_repeats, image files). A missing
    folder is skipped with a warning, as kohya does."""
    subsets = []
    if not args.dataset_config:
        return subsets
    with open(args.dataset_config, "rb") as handle:
        document = tomllib.load(handle)
    for dataset in document.get("datasets", []):
        for subset in dataset.get("subsets", []):
            folder = subset.get("image_dir")
            repeats = int(subset.get("num_repeats", 1))
            if not folder or not os.path.isdir(folder):
                print(f"not directory: {folder}", file=sys.stderr)
                images = []
            else:
                images = sorted(
                    os.path.join(folder, f)
                    for f in os.listdir(folder)
                    if f.lower().endswith(IMAGE_EXTENSIONS)
                )
            subsets.append((folder, repeats, images))
    return subsets


def cache_latents(subsets) -> None:
    """Open every image (kohya's latent caching): a vanished or broken file ends training
    here, before update_metadata."""
    for _, _, images in subsets:
        for image in images:
            with open(image, "rb") as handle:
                if handle.read(8) != PNG_SIGNATURE:
                    raise OSError(f"cannot identify image file {image!r}")


def load_target_model(args):
    """kohya loads a file as a checkpoint, else asks diffusers, which fails on a wrong name."""
    path = args.pretrained_model_name_or_path
    if path and not os.path.exists(path):
        raise OSError(
            f"{path} is not a local folder and is not a valid model identifier listed on "
            "'https://huggingface.co/models'"
        )
    if args.fail_at_load:
        raise RuntimeError("CUDA out of memory. Tried to allocate 3.00 GiB (simulated load)")
