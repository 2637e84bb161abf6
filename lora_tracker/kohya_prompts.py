"""kohya's sample prompts files (``--sample_prompts``): read the way sd-scripts reads them,
written from the test prompts, and matched to the sample images kohya renders from them.

How sd-scripts reads the file (kohya-ss/sd-scripts main at commit 48d368fa, 2026-02:
``library/train_util.py`` ``sample_images_common``, ``load_prompts``,
``line_to_prompt_dict``, ``sample_image_inference``):

- The format follows the path's ending, case-sensitively: ``.txt``, ``.toml`` or ``.json``.
  kohya fails at sampling on any other name, so no sample image comes of it.
- The file is read again at every sampling, as UTF-8 text (universal newlines).
- ``.txt``: a line is a prompt unless it is blank after ``strip()`` or its first character,
  before stripping, is ``#`` (so ``  # x`` is the prompt ``# x``). The prompt is the
  stripped line, split on the exact text ``" --"``: the first piece is the prompt text, and
  every piece (the first too) is matched, case-insensitively, at its start against the
  options ``w N`` (width), ``h N`` (height), ``d N`` (seed), ``s N`` (steps, clamped to
  1..1000), ``l X`` (CFG scale), ``g X`` (guidance scale), ``n TEXT`` (negative prompt),
  ``ss NAME`` (sampler), ``cn PATH``, ``ctr X``, ``rcfg X``, ``fs X``; a later piece wins,
  and a number that does not parse is skipped (kohya logs it).
- ``.toml``: ``[prompt]`` holds defaults and each ``[[prompt.subset]]`` is one prompt, its
  keys joined to the defaults (a key in both makes kohya fail). Keys are kohya's own:
  ``prompt``, ``negative_prompt``, ``width``, ``height``, ``seed``, ``sample_steps``,
  ``scale``, ``sample_sampler``, ``guidance_scale``, ...
- ``.json``: a list whose items are objects (the same keys) or strings (a ``.txt`` line).
- A sample's name carries the prompt's position in that list:
  ``{output_name}_e{epoch:06d}_{index:02d}_{YYYYmmddHHMMSS}[_{seed}].png`` (step samples
  ``{output_name}_{step:06d}_...``); the ``_{seed}`` suffix is there exactly when the prompt
  sets a seed.

Nothing here touches the database: :mod:`lora_tracker.prompts` reads the test prompts, and
capture links the samples with :mod:`lora_tracker.image_results`.
"""

from __future__ import annotations

import io
import json
import os
import re
import sys
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path, PurePath
from typing import Any, Literal

from .errors import InvalidInput, InvalidRequest

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

PromptsFormat = Literal["txt", "toml", "json"]
ExportFormat = Literal["kohya", "toml", "json"]
PROMPTS_FORMATS: tuple[str, ...] = ("txt", "toml", "json")
EXPORT_FORMATS: tuple[str, ...] = ("kohya", "toml", "json")

# A prompts file is a few lines; one that is bigger is not copied into capture events.
MAX_PROMPTS_FILE_BYTES = 256 * 1024

# kohya's --sample_sampler choices (library/train_util.py, get_my_scheduler); a name it
# does not know silently falls back to DDIM, so lora-tracker never writes one.
KOHYA_SAMPLERS: frozenset[str] = frozenset({
    "ddim", "pndm", "lms", "euler", "euler_a", "heun", "dpm_2", "dpm_2_a", "dpmsolver",
    "dpmsolver++", "dpmsingle", "k_lms", "k_euler", "k_euler_a", "k_dpm_2", "k_dpm_2_a",
})  # fmt: skip
# The same samplers as A1111 / Forge and ComfyUI name them (the scheduler being the
# default one: "... Karras" variants have no kohya equivalent).
_SAMPLER_ALIASES = {
    "euler a": "euler_a", "euler_ancestral": "euler_a", "euler ancestral": "euler_a",
    "dpm2": "dpm_2", "dpm2 a": "dpm_2_a", "dpm_2_ancestral": "dpm_2_a",
    "dpm++ 2m": "dpmsolver++", "dpmpp_2m": "dpmsolver++", "plms": "pndm",
}  # fmt: skip

# kohya's options, matched at the start of each " --" piece (case-insensitive): name ->
# (pattern of the value, key in kohya's prompt dict, how the value is read)
_OPTIONS: tuple[tuple[str, str, str], ...] = (
    ("w", r"(\d+)", "width"),
    ("h", r"(\d+)", "height"),
    ("d", r"(\d+)", "seed"),
    ("s", r"(\d+)", "sample_steps"),
    ("l", r"([\d\.]+)", "scale"),
    ("g", r"([\d\.]+)", "guidance_scale"),
    ("n", r"(.+)", "negative_prompt"),
    ("ss", r"(.+)", "sample_sampler"),
    ("cn", r"(.+)", "controlnet_image"),
    ("ctr", r"(.+)", "cfg_trunc_ratio"),
    ("rcfg", r"(.+)", "renorm_cfg"),
    ("fs", r"(.+)", "flow_shift"),
)
_OPTION_PATTERNS = tuple(
    (re.compile(rf"{name} {value}", re.IGNORECASE), key) for name, value, key in _OPTIONS
)
_INT_KEYS = {"width", "height", "seed"}
_FLOAT_KEYS = {"scale", "guidance_scale", "cfg_trunc_ratio", "renorm_cfg"}
SEPARATOR = " --"


@dataclass(frozen=True)
class SamplePrompt:
    """One prompt of a kohya prompts file, at ``index`` (the ``_{index:02d}_`` of its
    samples). ``options`` is kohya's whole prompt dict, as read."""

    index: int
    prompt: str
    negative_prompt: str | None = None
    width: int | None = None
    height: int | None = None
    seed: int | None = None
    steps: int | None = None
    cfg_scale: float | None = None
    sampler: str | None = None
    options: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class PromptsFile:
    """A prompts file as read at one moment: where it was, its format and its text (kept
    in capture events: kohya reads it again at every sampling, and it may change or go)."""

    path: str
    format: PromptsFormat
    content: str


def prompts_format(path: str | PurePath) -> PromptsFormat | None:
    """The format kohya reads a prompts file in, by its name's ending (case-sensitive, as
    kohya's ``str.endswith``); None for a name kohya cannot sample from."""
    name = str(path)
    for fmt in ("txt", "toml", "json"):
        if name.endswith("." + fmt):
            return fmt
    return None


def read_prompts_file(path: str | Path, *, limit: int = MAX_PROMPTS_FILE_BYTES) -> PromptsFile:
    """Read a prompts file as kohya would (UTF-8, universal newlines); InvalidInput when
    kohya could not sample from it (other name, unreadable, bigger than ``limit``, not
    text). The content is checked by parsing it once."""
    fmt = prompts_format(path)
    if fmt is None:
        raise InvalidInput(f"{path}: kohya reads sample prompts only from .txt, .toml or .json")
    try:
        with open(path, encoding="utf-8") as handle:  # newline=None: as kohya's open()
            content = handle.read(limit + 1)
    except OSError as exc:
        raise InvalidInput(f"cannot read prompts file {path}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise InvalidInput(f"{path} is not UTF-8 text (kohya reads prompts as UTF-8)") from None
    if len(content.encode("utf-8")) > limit:
        raise InvalidInput(f"{path}: a prompts file over {limit // 1024} KiB is not read")
    found = PromptsFile(path=str(Path(path).absolute()), format=fmt, content=content)
    parse_prompts(found.content, found.format, name=str(path))
    return found


def launch_problem(path: str) -> str | None:
    """What keeps kohya from sampling ``--sample_prompts`` ``path`` (or lora-tracker from
    linking its samples), said once before training in one line; None when it reads. In
    kohya's order: a missing file means no samples (``sample_images_common`` logs it at each
    sampling), an other ending makes ``load_prompts`` fail wherever kohya reads the file
    (at the first sampling; at startup in trainers that cache the prompts' text encoder
    outputs, such as flux_train_network.py), a file without a prompt samples nothing."""
    if not os.path.isfile(path):
        return f"--sample_prompts {path}: no such file, kohya cannot render samples from it"
    if prompts_format(path) is None:
        return (
            f"--sample_prompts {path}: kohya reads sample prompts only from .txt, .toml or"
            " .json, and stops with an error where it reads this file"
        )
    try:
        found = read_prompts_file(path)
        prompts = parse_prompts(found.content, found.format, name=path)
    except InvalidInput as exc:
        return f"--sample_prompts: {exc}; its samples will not be linked to test prompts"
    if not prompts:
        return f"--sample_prompts {path} holds no prompt, kohya will render no samples"
    return None


def line_options(line: str) -> dict[str, Any]:
    """kohya's prompt dict of one ``.txt`` line (already stripped), read as
    ``line_to_prompt_dict`` reads it."""
    pieces = line.split(SEPARATOR)
    found: dict[str, Any] = {"prompt": pieces[0]}
    for piece in pieces:
        for pattern, key in _OPTION_PATTERNS:
            match = pattern.match(piece)
            if not match:
                continue
            text = match.group(1)
            try:
                if key == "sample_steps":
                    found[key] = max(1, min(1000, int(text)))
                elif key in _INT_KEYS:
                    found[key] = int(text)
                elif key in _FLOAT_KEYS:
                    found[key] = float(text)
                else:
                    found[key] = text
            except ValueError:
                pass  # kohya logs the piece and goes on
            break
    return found


def parse_prompts(
    content: str, fmt: PromptsFormat, *, name: str = "prompts file"
) -> list[SamplePrompt]:
    """The prompts of a file's content in kohya's order (the index of each is the one its
    samples are named with). InvalidInput where kohya would fail to read the file."""
    items: list[Any]
    if fmt == "txt":
        lines = io.StringIO(content, newline=None).readlines()
        items = [line.strip() for line in lines if line.strip() and line[0] != "#"]
    elif fmt == "toml":
        items = _toml_items(content, name)
    elif fmt == "json":
        try:
            items = json.loads(content)
        except ValueError as exc:
            raise InvalidInput(f"{name} is not valid JSON: {exc}") from None
        if not isinstance(items, list):
            raise InvalidInput(f"{name}: kohya expects a JSON list of prompts")
    else:
        raise InvalidInput(f"{name}: unknown prompts format {fmt!r}")
    prompts = []
    for index, item in enumerate(items):
        if isinstance(item, str):
            options = line_options(item)
        elif isinstance(item, dict):
            options = dict(item)
            options.pop("subset", None)
        else:
            raise InvalidInput(f"{name}: prompt {index} is neither text nor a table")
        prompts.append(_sample_prompt(index, options))
    return prompts


def _toml_items(content: str, name: str) -> list[Any]:
    try:
        document = tomllib.loads(content)
    except tomllib.TOMLDecodeError as exc:
        raise InvalidInput(f"{name} is not valid TOML: {exc}") from None
    defaults = document.get("prompt")
    subsets = defaults.get("subset") if isinstance(defaults, dict) else None
    if not isinstance(subsets, list) or not all(isinstance(s, dict) for s in subsets):
        raise InvalidInput(f"{name}: kohya expects [prompt] with [[prompt.subset]] tables")
    assert isinstance(defaults, dict)
    items = []
    for index, subset in enumerate(subsets):
        both = (set(defaults) & set(subset)) - {"subset"}
        if both:  # kohya's dict(**defaults, **subset) raises on a repeated key
            raise InvalidInput(
                f"{name}: prompt {index} repeats {', '.join(sorted(both))} of [prompt]"
                " (kohya fails on that)"
            )
        items.append({**defaults, **subset})
    return items


def _sample_prompt(index: int, options: dict[str, Any]) -> SamplePrompt:
    def whole(key: str) -> int | None:
        value = options.get(key)
        return value if isinstance(value, int) and not isinstance(value, bool) else None

    def number(key: str) -> float | None:
        value = options.get(key)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return None
        return float(value)

    def text(key: str) -> str | None:
        value = options.get(key)
        return value if isinstance(value, str) else None

    prompt = options.get("prompt", "")
    return SamplePrompt(
        index=index,
        prompt=prompt if isinstance(prompt, str) else str(prompt),
        negative_prompt=text("negative_prompt"),
        width=whole("width"),
        height=whole("height"),
        seed=whole("seed"),
        steps=whole("sample_steps"),
        cfg_scale=number("scale"),
        sampler=text("sample_sampler"),
        options=options,
    )


# -- writing ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class ExportedPrompts:
    """A prompts file's text, and what was left out of it (one line each)."""

    text: str
    notes: list[str]
    count: int


def kohya_sampler(name: str | None) -> str | None:
    """kohya's name for a sampler (its own, or the A1111 / ComfyUI name of the same one);
    None when kohya has no such sampler."""
    if not name:
        return None
    key = " ".join(name.strip().lower().split())
    if key in KOHYA_SAMPLERS:
        return key
    return _SAMPLER_ALIASES.get(key)


def _misread_start(text: str) -> bool:
    """Whether kohya would read an option out of the prompt text itself (every piece of a
    line is matched against the options, the first too)."""
    return any(pattern.match(text) for pattern, _ in _OPTION_PATTERNS)


def _settings(row: dict[str, Any], notes: list[str]) -> dict[str, Any]:
    """A test prompt's settings as kohya's prompt dict keys (what kohya cannot take is
    left out, with a note)."""
    name = row.get("prompt_name") or row.get("prompt_text", "")[:20]
    found: dict[str, Any] = {"prompt": row["prompt_text"]}
    negative = (row.get("negative_prompt") or "").strip()
    if negative:
        found["negative_prompt"] = negative
    for column, key in (("width", "width"), ("height", "height")):
        if row.get(column):
            found[key] = int(row[column])
    seed = row.get("seed")
    if seed is not None and seed >= 0:
        found["seed"] = int(seed)
    elif seed is not None:
        notes.append(f"prompt {name!r}: seed {seed} means random; left out")
    if row.get("cfg_scale") is not None:
        found["scale"] = Decimal(str(row["cfg_scale"]))
    if row.get("steps"):
        found["sample_steps"] = int(row["steps"])
    if row.get("sampler"):
        sampler = kohya_sampler(row["sampler"])
        if sampler is None:
            notes.append(
                f"prompt {name!r}: kohya has no sampler {row['sampler']!r}; left out"
                " (kohya uses --sample_sampler)"
            )
        else:
            found["sample_sampler"] = sampler
    return found


def _txt_line(settings: dict[str, Any], name: str) -> str:
    text = settings["prompt"]
    negative = settings.get("negative_prompt") or ""
    why = None
    if any(c in text + negative for c in "\r\n"):
        why = "spans several lines"
    elif SEPARATOR in text or SEPARATOR in negative:
        why = f"holds {SEPARATOR.strip()!r} after a space, which kohya reads as an option"
    elif text != text.strip():
        why = "starts or ends with whitespace, which kohya strips"
    elif _misread_start(text):
        why = "starts like one of kohya's options"
    elif negative.startswith("--"):
        why = "has a negative prompt starting with '--', which kohya reads as an option"
    if why:
        raise InvalidInput(
            f"test prompt {name!r} {why}: kohya's .txt format cannot hold it (use --format toml)"
        )
    parts = [" " + text if text.startswith("#") else text]  # " #..." is no comment
    for option, key in (("n", "negative_prompt"), ("w", "width"), ("h", "height"),
                        ("d", "seed"), ("l", "scale"), ("s", "sample_steps"),
                        ("ss", "sample_sampler")):  # fmt: skip
        if key in settings:
            parts.append(f"--{option} {_plain(settings[key])}")
    line = " ".join(parts)
    # the last word: read the line back as kohya will
    read = parse_prompts(line, "txt")
    if len(read) != 1 or not _same_settings(read[0].options, settings):
        raise InvalidInput(
            f"test prompt {name!r}: kohya would read its .txt line otherwise (use --format toml)"
        )
    return line


def _same_settings(read: dict[str, Any], settings: dict[str, Any]) -> bool:
    def plain(values: dict[str, Any]) -> dict[str, Any]:
        return {k: float(v) if isinstance(v, Decimal) else v for k, v in values.items()}

    return plain(read) == plain(settings)


def _plain(value: Any) -> str:
    if isinstance(value, Decimal):
        return format(value.normalize(), "f")
    return str(value)


def _toml_value(value: Any) -> str:
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False).replace("\x7f", "\\u007f")
    if isinstance(value, Decimal):
        return repr(float(value))
    return str(value)


def export_prompts(rows: list[dict[str, Any]], fmt: ExportFormat = "kohya") -> ExportedPrompts:
    """The test prompts ``rows`` (``test_prompts`` rows, in the order given) as a kohya
    ``--sample_prompts`` file: ``kohya`` (the ``.txt`` lines), ``toml`` or ``json``.
    InvalidInput when a prompt cannot be written in the format (nothing is written)."""
    notes: list[str] = []
    all_settings = [_settings(row, notes) for row in rows]
    header = (
        "lora-tracker test prompts for kohya's --sample_prompts"
        " (prompt 1 renders samples _00_, prompt 2 _01_, ...)"
    )
    if fmt == "kohya":
        lines = [f"# {header}"]
        for row, settings in zip(rows, all_settings, strict=True):
            lines.append(_txt_line(settings, str(row.get("prompt_name"))))
        text = "\n".join(lines) + "\n"
    elif fmt == "toml":
        lines = [f"# {header}", "[prompt]"]
        for settings in all_settings:
            lines.append("\n[[prompt.subset]]")
            lines += [f"{key} = {_toml_value(value)}" for key, value in settings.items()]
        text = "\n".join(lines) + "\n"
    elif fmt == "json":
        plain = [
            {k: float(v) if isinstance(v, Decimal) else v for k, v in s.items()}
            for s in all_settings
        ]
        text = json.dumps(plain, ensure_ascii=False, indent=2) + "\n"
    else:
        raise InvalidInput(f"unknown format {fmt!r} (kohya, toml or json)")
    return ExportedPrompts(text=text, notes=notes, count=len(rows))


def export_format_for(path: str | PurePath | None, given: str | None) -> ExportFormat:
    """The format asked for, else the one the output file's name says (kohya reads by the
    ending), else kohya's ``.txt`` lines. A name kohya would read otherwise is refused (a
    usage error: InvalidRequest)."""
    by_name = prompts_format(path) if path is not None else None
    if path is not None and by_name is None:
        raise InvalidRequest(f"{path}: kohya reads sample prompts only from .txt, .toml or .json")
    named: ExportFormat | None = {"txt": "kohya", "toml": "toml", "json": "json"}.get(by_name or "")  # type: ignore[assignment]
    if given is None:
        return named or "kohya"
    fmt: ExportFormat = given  # type: ignore[assignment]
    if named is not None and named != fmt:
        raise InvalidRequest(f"{path}: kohya reads a file of that name as {by_name}, not as {fmt}")
    return fmt


# -- samples ---------------------------------------------------------------------------------


def prompt_for_sample(
    prompts: list[SamplePrompt], index: int, seed_in_name: int | None
) -> SamplePrompt | None:
    """The prompt a sample named with ``index`` (and ``seed_in_name``, its ``_{seed}``
    suffix) was rendered from; None when the file no longer says so (fewer prompts, or a
    seed that differs: the file changed since)."""
    if index < 0 or index >= len(prompts):
        return None
    found = prompts[index]
    if found.seed != seed_in_name:
        return None
    if not found.prompt.strip():
        return None  # kohya rendered an empty prompt: nothing to judge it on
    return found


def write_prompts_file(path: str | Path, text: str) -> None:
    """Write a prompts file whole (a temporary file renamed over it: kohya, reading it at
    a sampling, never sees half of it)."""
    target = Path(path)
    temporary = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    try:
        with open(temporary, "w", encoding="utf-8", newline="\n") as handle:
            handle.write(text)
        os.replace(temporary, target)
    except OSError as exc:
        temporary.unlink(missing_ok=True)
        raise InvalidInput(f"cannot write {path}: {exc.strerror}") from None
