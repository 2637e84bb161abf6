"""A1111 / Forge / SD.Next "infotext": the generation parameters those tools write into a
PNG ``parameters`` text chunk, or a JPEG / WebP EXIF UserComment.

The format, as AUTOMATIC1111/stable-diffusion-webui v1.10 writes it
(``modules/processing.py`` create_infotext) and reads it back
(``modules/infotext_utils.py`` parse_generation_parameters)::

    a knight, pixel art <lora:knight-000005:0.8>
    Negative prompt: blurry
    Steps: 20, Sampler: DPM++ 2M, Schedule type: Karras, CFG scale: 7, Seed: 1234,
    Size: 512x512, Model hash: 6ce0161689, Model: v1-5-pruned-emaonly,
    Lora hashes: "knight-000005: 1a2b3c4d5e6f", Version: v1.10.1

(the parameters are one line). The prompt runs until a line starting ``Negative prompt:``;
the last line holds ``key: value`` pairs separated by commas, a value that contains a comma,
a colon or a newline JSON-quoted. The last line is parameters only when it holds at least
three pairs (otherwise it is part of the prompt). ``Lora hashes`` (Lora extension,
``extra_networks_lora.py``) lists ``alias: shorthash`` with ``:`` and ``,`` removed from the
alias (some SD.Next versions write ``LoRA hashes`` as bare hashes, in the prompt's order);
the short hash is the first 12 hex digits of the LoRA's SHA-256 after its
safetensors header (``network.py``: sshs_model_hash, else ``hashes.sha256`` with
``use_addnet_hash``). Forge writes the same with a ``Version: f2.0.1v1.10.1-...``; SD.Next
writes ``App: SD.Next`` and ``Version: <git commit>``. X/Y/Z plot grids carry
``Script: X/Y/Z plot`` and ``X Type`` / ``Y Type`` / ``Z Type`` (``scripts/xyz_grid.py``);
their per-cell images do not.
"""

from __future__ import annotations

import json
import re
from typing import Any

from ..secrets import mask_text
from .model import ImageGenerator, ImageMetadata, LoraRef, NotUsable

# key: value, where value is a JSON string in quotes or runs to the next comma
_PAIR = re.compile(r'\s*(\w[\w \-/]+):\s*("(?:\\.|[^\\"])+"|[^,]*)(?:,|$)')
_SIZE = re.compile(r"(\d+)x(\d+)")
_NETWORK_TAG = re.compile(r"<(lora|lyco):([^>]+)>", re.IGNORECASE)
_HEX12 = re.compile(r"[0-9a-fA-F]{8,64}")
GRID_SCRIPTS = frozenset({"X/Y/Z plot", "X/Y plot", "Prompt matrix"})
NEGATIVE = "Negative prompt:"


def parse_parameters_line(line: str) -> dict[str, str]:
    """The ``key: value`` pairs of an infotext's last line, quoted values unquoted."""
    found: dict[str, str] = {}
    for key, value in _PAIR.findall(line):
        value = value.strip()
        if len(value) >= 2 and value[0] == '"' and value[-1] == '"':
            try:
                decoded = json.loads(value)
            except ValueError:
                decoded = value
            value = decoded if isinstance(decoded, str) else value
        found[key.strip()] = value
    return found


def split_infotext(text: str) -> tuple[str, str, dict[str, str]]:
    """(prompt, negative prompt, parameters) of an infotext, the way A1111 reads it."""
    *lines, last = text.strip().split("\n")
    if len(_PAIR.findall(last)) < 3:
        lines.append(last)
        last = ""
    prompt: list[str] = []
    negative: list[str] = []
    in_negative = False
    for line in lines:
        line = line.strip()
        if line.startswith(NEGATIVE):
            in_negative = True
            line = line[len(NEGATIVE) :].strip()
        (negative if in_negative else prompt).append(line)
    return "\n".join(prompt), "\n".join(negative), parse_parameters_line(last)


def lora_tags(prompt: str) -> list[tuple[str, float | None]]:
    """The ``<lora:name:weight>`` (and older ``<lyco:...>``) tags of a prompt: (name,
    weight), in order, each name once. The weight is the first multiplier (the text
    encoder's; ``te=`` when named), 1.0 when none is written, as A1111 does."""
    tags: dict[str, float | None] = {}
    for _kind, body in _NETWORK_TAG.findall(prompt):
        name, *items = body.split(":")
        name = name.strip()
        if not name or name in tags:
            continue
        weight: float | None = 1.0
        positional = [i for i in items if "=" not in i]
        named = dict(i.split("=", 1) for i in items if "=" in i)
        raw = positional[0] if positional else named.get("te")
        if raw is not None:
            weight = _float(raw)
        tags[name] = weight
    return list(tags.items())


def strip_lora_tags(prompt: str) -> str:
    """The prompt without its LoRA tags (and the comma that set each apart): the same test
    prompt rendered with every epoch's file (``<lora:knight-000005:1>``,
    ``<lora:knight-000006:1>``) is one prompt. The rest of the text is left as written."""
    tag = _NETWORK_TAG.pattern
    text = re.sub(rf"(?im)^[ \t]*{tag}[ \t]*,?[ \t]*", "", prompt)  # a tag opening a line
    text = re.sub(rf"(?i)[ \t]*,?[ \t]*{tag}", "", text)  # a tag after the text
    return text.strip()


def lora_hashes(value: str) -> tuple[dict[str, str], list[str]]:
    """``Lora hashes``: ``"name: 1a2b3c4d5e6f, other: ..."`` -> ({name: hash}, []); the
    bare ``"1a2b3c4d5e6f, ..."`` some SD.Next versions write (``LoRA hashes``) -> ({},
    [hash, ...]). Hashes in lowercase."""
    named: dict[str, str] = {}
    bare: list[str] = []
    for part in value.split(","):
        name, sep, digest = part.rpartition(":")
        digest = digest.strip()
        if not _HEX12.fullmatch(digest):
            continue
        if sep and name.strip():
            named[name.strip()] = digest.lower()
        elif not sep:
            bare.append(digest.lower())
    return named, bare


def generator_of(params: dict[str, str]) -> ImageGenerator:
    """a1111, forge or sdnext, from ``App`` / ``Version``."""
    if params.get("App", "").strip().lower() == "sd.next":
        return "sdnext"
    if re.match(r"f\d", params.get("Version", "").strip()):
        return "forge"
    return "a1111"


def is_grid(params: dict[str, str]) -> bool:
    """An X/Y/Z plot (or prompt matrix) grid: one file holding many cells."""
    if params.get("Script", "").strip() in GRID_SCRIPTS:
        return True
    return any(f"{axis} Type" in params for axis in "XYZ")


def parse_infotext(text: str) -> ImageMetadata:
    """The generation settings of an A1111 / Forge / SD.Next infotext. Raises NotUsable for
    an X/Y/Z grid, or for a text that holds no prompt or no parameters."""
    prompt, negative, params = split_infotext(text)
    if not params or not ("Steps" in params or "Seed" in params):
        raise NotUsable("no metadata", "its text holds no generation parameters")
    if is_grid(params):
        raise NotUsable("grid", f"an {params.get('Script') or 'X/Y/Z plot'} grid")
    hashes, bare = lora_hashes(params.get("Lora hashes") or params.get("LoRA hashes") or "")
    tags = lora_tags(prompt)
    refs: list[LoraRef] = []
    for name, weight in tags:
        key = name.replace(":", "").replace(",", "")
        refs.append(LoraRef(name, hashes.pop(key, None), weight))
    refs.extend(LoraRef(name, digest, None) for name, digest in hashes.items())
    unhashed = [i for i, ref in enumerate(refs) if ref.hash12 is None]
    if bare and len(bare) == len(unhashed):  # SD.Next lists them in the prompt's order
        for i, digest in zip(unhashed, bare, strict=True):
            refs[i] = LoraRef(refs[i].name, digest, refs[i].weight)
    elif bare:
        refs.extend(LoraRef(digest, digest, None) for digest in bare)
    width = height = None
    if size := _SIZE.fullmatch(params.get("Size", "").strip()):
        width, height = int(size.group(1)), int(size.group(2))
    clean = strip_lora_tags(prompt)
    if not clean:
        raise NotUsable("no metadata", "its infotext has no prompt")
    raw: dict[str, Any] = {"parameters": mask_text(text)}
    return ImageMetadata(
        generator=generator_of(params),
        prompt=clean,
        negative_prompt=negative or None,
        seed=_int(params.get("Seed")),
        steps=_int(params.get("Steps")),
        cfg_scale=_float(params.get("CFG scale")),
        sampler=params.get("Sampler") or None,
        scheduler=params.get("Schedule type") or None,
        width=width,
        height=height,
        model=params.get("Model") or None,
        model_hash=params.get("Model hash") or None,
        loras=refs,
        raw=raw,
    )


def _int(value: str | None) -> int | None:
    try:
        return int(str(value).strip()) if value is not None else None
    except ValueError:
        return None


def _float(value: str | None) -> float | None:
    try:
        number = float(str(value).strip()) if value is not None else None
    except ValueError:
        return None
    return number if number is None or abs(number) < 1e6 else None
