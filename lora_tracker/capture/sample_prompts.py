"""Where a run's kohya sample prompts came from (``--sample_prompts``), copied into the
capture events that carry its sample images: kohya reads the file again at every sampling,
and it may change or vanish before an event is applied.

Looked for, first found wins:

1. ``lora-tracker watch --prompts FILE`` (the person says so);
2. ``sample_prompts`` in the run's configuration as the event carries it (a kohya_ss GUI
   ``config_lora-*.toml`` beside the outputs, a ``--config`` TOML, the hook's arguments);
3. ``{output_dir}/sample/prompt.txt``, where the kohya_ss GUI writes the prompts of its
   text box (kohya_gui/class_sample_images.py ``create_prompt_file``, bmaltais/kohya_ss
   at 45088f04) and passes that file to sd-scripts;
4. when an event carries none, at apply time the ``sample_prompts`` of the run's stored
   configuration (see :mod:`lora_tracker.capture.sample_links`).

No database here: plain reads, small and bounded (MAX_PROMPTS_FILE_BYTES).
"""

import logging
import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

from ..errors import InvalidInput

log = logging.getLogger(__name__)

GUI_PROMPTS_FILE = ("sample", "prompt.txt")

FoundBy = Literal["--sample_prompts", "watch --prompts", "config", "sample/prompt.txt", "run"]


@dataclass(kw_only=True, frozen=True, slots=True)
class SamplePromptsFile:
    """A prompts file as it was read: its path, kohya's format for it, its text, and how
    it was found (a plain dataclass, as the events that carry it)."""

    path: str
    format: Literal["txt", "toml", "json"]
    content: str
    found_by: FoundBy

    @property
    def source(self) -> str:
        """What a test prompt created from one of its lines says it came from."""
        return f"kohya prompts file {self.path}"


# (path, size, mtime_ns) -> what was read; a backfill asks for the same file per checkpoint
_READ: dict[tuple[str, int, int], SamplePromptsFile | None] = {}
_WARNED: set[tuple[str, int, int]] = set()


def read_sample_prompts(path: str | Path, found_by: FoundBy) -> SamplePromptsFile | None:
    """The prompts file at ``path`` (None when it is not there; a file kohya could not
    read is skipped with one warning per version of it)."""
    absolute = os.path.abspath(path)
    try:
        st = os.stat(absolute)
    except OSError:
        return None
    key = (absolute, st.st_size, st.st_mtime_ns)
    if key not in _READ:
        if len(_READ) > 256:
            _READ.clear()
        try:
            from ..kohya_prompts import read_prompts_file  # only when there is one

            read = read_prompts_file(absolute)
            _READ[key] = SamplePromptsFile(
                path=read.path, format=read.format, content=read.content, found_by=found_by
            )
        except InvalidInput as exc:
            if key not in _WARNED:
                _WARNED.add(key)
                log.warning("sample prompts not linked: %s", exc)
            _READ[key] = None
    found = _READ[key]
    if found is not None and found.found_by != found_by:
        found = replace(found, found_by=found_by)
    return found


def configured_prompts_path(config: dict[str, Any] | None) -> str | None:
    """``sample_prompts`` of a configuration: a flat kohya TOML (the GUI's, a
    ``--config_file``) or the kohya hook's ``{"args": {...}}``."""
    if not isinstance(config, dict):
        return None
    for holder in (config, config.get("args")):
        if isinstance(holder, dict):
            value = holder.get("sample_prompts")
            if isinstance(value, str) and value.strip():
                return value.strip()
    return None


def find_sample_prompts(
    output_dir: str | Path,
    config: dict[str, Any] | None = None,
    *,
    explicit: str | Path | None = None,
    config_path: str | Path | None = None,
) -> SamplePromptsFile | None:
    """The prompts file of the samples in ``output_dir/sample`` (see the module's order).
    A relative ``sample_prompts`` is tried from the config file's folder, then the output
    folder's and its parent's (kohya resolved it from the trainer's working folder)."""
    if explicit is not None:
        return read_sample_prompts(explicit, "watch --prompts")
    configured = configured_prompts_path(config)
    if configured:
        candidates = [Path(configured)]
        if not candidates[0].is_absolute():
            bases = [Path(output_dir), Path(output_dir).parent]
            if config_path is not None:
                bases.insert(0, Path(config_path).parent)
            candidates = [base / configured for base in bases]
        for candidate in candidates:
            found = read_sample_prompts(candidate, "config")
            if found is not None:
                return found
    return read_sample_prompts(Path(output_dir).joinpath(*GUI_PROMPTS_FILE), "sample/prompt.txt")
