"""Test images made the way each tool makes them, with Pillow as the tools do.

- A1111 / Forge / SD.Next (stable-diffusion-webui v1.10, ``modules/processing.py``
  create_infotext and ``modules/images.py`` save_image): the infotext is
  ``prompt\\nNegative prompt: ...\\nSteps: 20, Sampler: ..., ...``, a value JSON-quoted
  when it holds ``,``, ``:`` or a newline; a PNG gets it as the ``parameters`` text chunk
  (``PngInfo.add_text``), a JPEG / WebP as the EXIF UserComment that
  ``piexif.helper.UserComment.dump(text, encoding="unicode")`` writes
  (``UNICODE\\0`` + UTF-16 big-endian) in the Exif IFD. Grids are saved as
  ``grid-0000.png`` / ``xyz_grid-0000-<seed>.png``; an X/Y/Z grid's infotext adds
  ``Script: X/Y/Z plot`` and ``X Type`` / ``X Values``.
- ComfyUI (v0.3, ``nodes.py`` SaveImage): ``prompt`` (the API graph) and ``workflow`` (the
  editor graph) text chunks, ``compress_level=4``, file ``{prefix}_{counter:05}_.png``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from PIL import Image, PngImagePlugin

EXIF_IFD = 0x8769
USER_COMMENT = 0x9286


def picture(size: tuple[int, int] = (64, 64), seed: int = 0) -> Image.Image:
    """Some pixels that differ per seed (so two images are two files)."""
    base = Image.radial_gradient("L").resize(size)
    noise = Image.effect_noise(size, 40 + seed % 50)
    return Image.merge("RGB", (base, noise, Image.linear_gradient("L").resize(size)))


def quote(value: Any) -> str:
    text = str(value)
    if "," not in text and "\n" not in text and ":" not in text:
        return text
    return json.dumps(text, ensure_ascii=False)


def a1111_infotext(
    prompt: str,
    *,
    negative: str = "",
    seed: int = 1234,
    steps: int = 20,
    sampler: str = "DPM++ 2M",
    schedule: str | None = "Karras",
    cfg: float | int = 7,
    size: tuple[int, int] = (512, 512),
    lora_hashes: dict[str, str] | None = None,
    version: str | None = "v1.10.1",
    extra: dict[str, Any] | None = None,
) -> str:
    params: dict[str, Any] = {
        "Steps": steps, "Sampler": sampler, "Schedule type": schedule, "CFG scale": cfg,
        "Seed": seed, "Size": f"{size[0]}x{size[1]}", "Model hash": "6ce0161689",
        "Model": "v1-5-pruned-emaonly", **(extra or {}),
    }  # fmt: skip
    if lora_hashes:
        params["Lora hashes"] = ", ".join(f"{k}: {v}" for k, v in lora_hashes.items())
    params["Version"] = version
    line = ", ".join(f"{k}: {quote(v)}" for k, v in params.items() if v is not None)
    negative_text = f"\nNegative prompt: {negative}" if negative else ""
    return f"{prompt}{negative_text}\n{line}".strip()


def a1111_png(path: Path, infotext: str, seed: int = 0, size: tuple[int, int] = (64, 64)) -> Path:
    info = PngImagePlugin.PngInfo()
    info.add_text("parameters", infotext)
    picture(size, seed).save(path, pnginfo=info)
    return path


def a1111_jpeg(path: Path, infotext: str, seed: int = 0) -> Path:
    exif = Image.Exif()
    exif.get_ifd(EXIF_IFD)[USER_COMMENT] = b"UNICODE\x00" + infotext.encode("utf-16-be")
    picture(seed=seed).save(path, format="JPEG", quality=80, exif=exif)
    return path


def comfyui_graph(
    text: str,
    negative: str,
    loras: list[tuple[str, float]],
    *,
    seed: int = 156680208700286,
    steps: int = 20,
    cfg: float = 8.0,
    sampler: str = "euler",
    scheduler: str = "normal",
    size: tuple[int, int] = (512, 768),
) -> dict[str, Any]:
    """ComfyUI's default text-to-image graph with LoRA loaders between the checkpoint
    loader and the sampler / text encoders, in the API format."""
    graph: dict[str, Any] = {
        "4": {"inputs": {"ckpt_name": "v1-5-pruned-emaonly.safetensors"},
              "class_type": "CheckpointLoaderSimple", "_meta": {"title": "Load Checkpoint"}},
        "5": {"inputs": {"width": size[0], "height": size[1], "batch_size": 1},
              "class_type": "EmptyLatentImage", "_meta": {"title": "Empty Latent Image"}},
    }  # fmt: skip
    model: list[Any] = ["4", 0]
    clip: list[Any] = ["4", 1]
    for i, (name, strength) in enumerate(loras):
        node = str(10 + i)
        graph[node] = {"inputs": {"lora_name": name, "strength_model": strength,
                                  "strength_clip": strength, "model": model, "clip": clip},
                       "class_type": "LoraLoader", "_meta": {"title": "Load LoRA"}}  # fmt: skip
        model, clip = [node, 0], [node, 1]
    graph.update({
        "6": {"inputs": {"text": text, "clip": clip}, "class_type": "CLIPTextEncode",
              "_meta": {"title": "CLIP Text Encode (Prompt)"}},
        "7": {"inputs": {"text": negative, "clip": clip}, "class_type": "CLIPTextEncode",
              "_meta": {"title": "CLIP Text Encode (Prompt)"}},
        "3": {"inputs": {"seed": seed, "steps": steps, "cfg": cfg, "sampler_name": sampler,
                         "scheduler": scheduler, "denoise": 1, "model": model,
                         "positive": ["6", 0], "negative": ["7", 0], "latent_image": ["5", 0]},
              "class_type": "KSampler", "_meta": {"title": "KSampler"}},
        "8": {"inputs": {"samples": ["3", 0], "vae": ["4", 2]}, "class_type": "VAEDecode",
              "_meta": {"title": "VAE Decode"}},
        "9": {"inputs": {"filename_prefix": "ComfyUI", "images": ["8", 0]},
              "class_type": "SaveImage", "_meta": {"title": "Save Image"}},
    })  # fmt: skip
    return graph


def workflow_of(graph: dict[str, Any]) -> dict[str, Any]:
    """The editor's ``workflow`` JSON for an API graph: nodes with ``widgets_values`` in
    the editor's order (a KSampler's seed followed by "randomize") and a links table."""
    widgets = {
        "CheckpointLoaderSimple": ["ckpt_name"], "EmptyLatentImage": ["width", "height",
        "batch_size"], "LoraLoader": ["lora_name", "strength_model", "strength_clip"],
        "CLIPTextEncode": ["text"], "KSampler": ["seed", "*", "steps", "cfg", "sampler_name",
        "scheduler", "denoise"], "VAEDecode": [], "SaveImage": ["filename_prefix"],
    }  # fmt: skip
    nodes: list[dict[str, Any]] = []
    links: list[list[Any]] = []
    for node_id, node in graph.items():
        kind = node["class_type"]
        values = [("randomize" if w == "*" else node["inputs"][w]) for w in widgets.get(kind, [])]
        inputs: list[dict[str, Any]] = []
        for name, value in node["inputs"].items():
            if isinstance(value, list):
                link_id = len(links) + 1
                links.append([link_id, int(value[0]), value[1], int(node_id), len(inputs), "*"])
                inputs.append({"name": name, "type": "*", "link": link_id})
        nodes.append({"id": int(node_id), "type": kind, "mode": 0, "inputs": inputs,
                      "widgets_values": values, "pos": [0, 0], "size": [300, 100]})  # fmt: skip
    return {"last_node_id": max(n["id"] for n in nodes), "last_link_id": len(links),
            "nodes": nodes, "links": links, "groups": [], "config": {}, "extra": {},
            "version": 0.4}  # fmt: skip


def comfyui_png(
    path: Path, graph: dict[str, Any], *, with_prompt: bool = True, seed: int = 0
) -> Path:
    info = PngImagePlugin.PngInfo()
    if with_prompt:
        info.add_text("prompt", json.dumps(graph))
    info.add_text("workflow", json.dumps(workflow_of(graph)))
    picture(seed=seed).save(path, pnginfo=info, compress_level=4)
    return path
