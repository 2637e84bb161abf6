"""ComfyUI's metadata: the ``prompt`` (API graph) and ``workflow`` (editor graph) text
chunks its SaveImage node writes into every PNG (``nodes.py`` SaveImage.save_images, as of
ComfyUI v0.3: ``PngInfo.add_text("prompt", json.dumps(prompt))`` and one chunk per
``extra_pnginfo`` key, i.e. ``workflow``).

The API graph maps a node id to ``{"class_type": ..., "inputs": {...}}``; an input that is
wired to another node is ``[node_id, output_index]``. The image was made by the sampler
(``KSampler``: seed, steps, cfg, sampler_name, scheduler, positive, negative, model,
latent_image; ``KSamplerAdvanced``: noise_seed instead of seed) that feeds the VAEDecode
feeding the SaveImage. Its prompts are the ``text`` of the ``CLIPTextEncode`` nodes wired
to ``positive`` / ``negative`` (through conditioning nodes), its size the ``width`` /
``height`` of the ``EmptyLatentImage`` behind ``latent_image``, and its LoRAs the
``LoraLoader`` (lora_name, strength_model, strength_clip) and ``LoraLoaderModelOnly``
(lora_name, strength_model) nodes on its ``model`` chain up to ``CheckpointLoaderSimple``.

A graph whose ``prompt`` chunk is missing is read from ``workflow`` (nodes with their
``widgets_values`` in the editor's order; muted or bypassed nodes left out).

The raw metadata kept is the API graph, with secrets masked (``lora_tracker.secrets``: a
paid-API node's ``api_key`` input); the editor's ``workflow`` (layout, unnamed widget
values) is not kept beside it.
"""

from __future__ import annotations

import json
from pathlib import PureWindowsPath
from typing import Any

from ..secrets import mask_secrets
from .model import ImageMetadata, LoraRef, NotUsable

SAMPLERS = ("KSampler", "KSamplerAdvanced")
LORA_LOADERS = ("LoraLoader", "LoraLoaderModelOnly")
MAX_DEPTH = 64  # a graph is a DAG; the bound only guards against a hand-made cycle
Graph = dict[str, dict[str, Any]]


def parse_comfyui(prompt_chunk: str | None, workflow_chunk: str | None) -> ImageMetadata:
    """The generation settings of a ComfyUI PNG from its ``prompt`` / ``workflow`` chunk
    texts. Raises NotUsable when neither holds a sampler with a prompt."""
    raw: dict[str, Any] = {}
    graph: Graph | None = None
    if prompt_chunk:
        loaded = _json(prompt_chunk)
        if isinstance(loaded, dict):
            graph = {str(k): v for k, v in loaded.items() if _is_node(v)}
            raw["prompt"] = mask_secrets(graph)  # a node's api_key input is never kept
    if workflow_chunk and not graph:
        loaded = _json(workflow_chunk)
        if isinstance(loaded, dict):
            graph = graph_from_workflow(loaded)
            # the editor's widgets are unnamed (a secret among them could not be told
            # apart): what is kept is the graph read from the built-in nodes
            raw["workflow"] = mask_secrets(graph)
    if not graph:
        raise NotUsable("no metadata", "its ComfyUI chunks hold no graph")
    sampler_id = _find_sampler(graph)
    if sampler_id is None:
        raise NotUsable("no metadata", "its ComfyUI graph has no KSampler")
    sampler = graph[sampler_id]["inputs"]
    prompt = _text(graph, sampler.get("positive"))
    if not prompt:
        raise NotUsable("no metadata", "its ComfyUI graph has no prompt text")
    latent = _find_node(graph, sampler.get("latent_image"), lambda n: "width" in n["inputs"])
    width = height = None
    if latent is not None:
        width = _int(_value(graph, latent["inputs"].get("width")))
        height = _int(_value(graph, latent["inputs"].get("height")))
    loras, model = _model_chain(graph, sampler.get("model"))
    seed = sampler.get("seed", sampler.get("noise_seed"))
    return ImageMetadata(
        generator="comfyui",
        prompt=prompt.strip(),
        negative_prompt=(_text(graph, sampler.get("negative")) or "").strip() or None,
        seed=_int(_value(graph, seed)),
        steps=_int(_value(graph, sampler.get("steps"))),
        cfg_scale=_float(_value(graph, sampler.get("cfg"))),
        sampler=_str(_value(graph, sampler.get("sampler_name"))),
        scheduler=_str(_value(graph, sampler.get("scheduler"))),
        width=width,
        height=height,
        model=model,
        loras=loras,
        raw=raw,
    )


def lora_stem(lora_name: str) -> str:
    """``sub\\knight-000005.safetensors`` -> ``knight-000005`` (ComfyUI names a LoRA by
    its path under models/loras, with the OS's separator)."""
    name = PureWindowsPath(lora_name).name  # splits on both / and \
    for ext in (".safetensors", ".ckpt", ".pt", ".bin"):
        if name.lower().endswith(ext):
            return name[: -len(ext)]
    return name


def graph_from_workflow(workflow: dict[str, Any]) -> Graph:
    """An API-like graph from the editor's ``workflow`` JSON: each node's widgets named in
    the order the built-in nodes declare them, each wired input as ``[from_node, slot]``."""
    links: dict[Any, tuple[str, int]] = {}
    for link in workflow.get("links") or []:
        if isinstance(link, list) and len(link) >= 3:  # [id, from, from_slot, to, to_slot, type]
            links[link[0]] = (str(link[1]), int(link[2]))
    graph: Graph = {}
    for node in workflow.get("nodes") or []:
        if not isinstance(node, dict) or node.get("mode", 0) in (2, 4):  # muted, bypassed
            continue
        kind = str(node.get("type", ""))
        inputs: dict[str, Any] = {}
        widgets = node.get("widgets_values")
        names = _WIDGETS.get(kind)
        if names and isinstance(widgets, list):
            inputs.update({n: v for n, v in zip(names, widgets, strict=False) if n})
        for slot in node.get("inputs") or []:
            if isinstance(slot, dict) and slot.get("link") in links:
                inputs[str(slot.get("name"))] = list(links[slot["link"]])
        graph[str(node.get("id"))] = {"class_type": kind, "inputs": inputs}
    return graph


# The widgets of the built-in nodes, in order (a KSampler's seed is followed by the
# editor's "control after generate" value, which is no input).
_WIDGETS: dict[str, list[str | None]] = {
    "KSampler": ["seed", None, "steps", "cfg", "sampler_name", "scheduler", "denoise"],
    "KSamplerAdvanced": ["add_noise", "noise_seed", None, "steps", "cfg", "sampler_name",
                         "scheduler", "start_at_step", "end_at_step",
                         "return_with_leftover_noise"],
    "CLIPTextEncode": ["text"],
    "EmptyLatentImage": ["width", "height", "batch_size"],
    "LoraLoader": ["lora_name", "strength_model", "strength_clip"],
    "LoraLoaderModelOnly": ["lora_name", "strength_model"],
    "CheckpointLoaderSimple": ["ckpt_name"],
}  # fmt: skip


def _json(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return None


def _is_node(value: Any) -> bool:
    return isinstance(value, dict) and isinstance(value.get("inputs"), dict)


def _link(value: Any) -> str | None:
    if isinstance(value, list) and len(value) == 2 and isinstance(value[1], int):
        return str(value[0])
    return None


def _find_sampler(graph: Graph) -> str | None:
    """The sampler that made the saved image: the one behind the SaveImage's VAEDecode,
    else the first sampler of the graph."""
    for node in graph.values():
        if node.get("class_type") == "SaveImage":
            found = _find_id(
                graph, node["inputs"].get("images"), lambda n: n.get("class_type") in SAMPLERS
            )
            if found is not None:
                return found
    return next((k for k, n in graph.items() if n.get("class_type") in SAMPLERS), None)


def _find_id(graph: Graph, value: Any, match: Any) -> str | None:
    for _ in range(MAX_DEPTH):
        node_id = _link(value)
        if node_id is None or node_id not in graph:
            return None
        node = graph[node_id]
        if match(node):
            return node_id
        inputs = node["inputs"]
        value = next((inputs[k] for k in ("samples", "images", "latent", "latent_image",
                                          "conditioning", "conditioning_to", "conditioning_1",
                                          "positive", "model", "value")
                      if _link(inputs.get(k)) is not None), None)  # fmt: skip
    return None


def _find_node(graph: Graph, value: Any, match: Any) -> dict[str, Any] | None:
    node_id = _find_id(graph, value, match)
    return graph[node_id] if node_id is not None else None


def _text(graph: Graph, value: Any) -> str | None:
    """The prompt text behind a conditioning input: a CLIPTextEncode's ``text`` (itself
    possibly wired to a string node), through conditioning nodes in between."""
    node = _find_node(graph, value, lambda n: "text" in n["inputs"] or "text_g" in n["inputs"])
    if node is None:
        return None
    inputs = node["inputs"]
    text = _value(graph, inputs.get("text", inputs.get("text_g")))
    return text if isinstance(text, str) else None


def _value(graph: Graph, value: Any) -> Any:
    """A widget value, following a wire to a primitive node (``value``/``string``/...)."""
    for _ in range(MAX_DEPTH):
        node_id = _link(value)
        if node_id is None:
            return value
        node = graph.get(node_id)
        if node is None:
            return None
        inputs = node["inputs"]
        key = next((k for k in ("value", "string", "text", "int", "float", "seed", "number")
                    if k in inputs), None)  # fmt: skip
        if key is None:
            return None
        value = inputs[key]
    return None


def _model_chain(graph: Graph, value: Any) -> tuple[list[LoraRef], str | None]:
    """The LoRA loaders on the sampler's model input, nearest the checkpoint first, and
    the checkpoint's name."""
    loras: list[LoraRef] = []
    model: str | None = None
    for _ in range(MAX_DEPTH):
        node_id = _link(value)
        if node_id is None or node_id not in graph:
            break
        node = graph[node_id]
        inputs = node["inputs"]
        if node.get("class_type") in LORA_LOADERS or (
            "lora_name" in inputs and "strength_model" in inputs
        ):
            name = _value(graph, inputs.get("lora_name"))
            weight = _float(_value(graph, inputs.get("strength_model")))
            if isinstance(name, str) and name:
                loras.append(LoraRef(name, None, weight))
        if "ckpt_name" in inputs:
            model = _str(_value(graph, inputs["ckpt_name"]))
            break
        value = inputs.get("model")
    loras.reverse()
    return loras, model


def _int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return None


def _float(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None
