"""Which tracked checkpoint an image's LoRA is: by A1111's hash, else by file name.

- A1111 / Forge / SD.Next write each LoRA's short hash (``Lora hashes``): it is matched
  against ``checkpoints.lora_hash``, so a renamed or copied file still finds its exact
  epoch. ``lora_hash`` is filled from kohya's ``sshs_model_hash`` (the same hash, kept as
  ``content_hash`` at capture); for a checkpoint without it, the hash is computed from the
  file (streamed, once, stored) the first time an image's hash matches nothing known.
- ComfyUI names the file (``lora_name``), as does a ``<lora:name:w>`` tag without a hash:
  it is matched by file stem against this host's checkpoints. Where the generator's LoRA
  folder is given (``lora_dirs``) and holds that file, its hash decides instead.
- Never guessed: a hash that matches nothing, a name that matches checkpoints of several
  epochs, a checkpoint with no epoch, all leave the LoRA unmatched, with the reason.
"""

from __future__ import annotations

import logging
import os
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path, PureWindowsPath
from typing import Any, Literal

from ..pg import Connection
from ..settings import this_host
from .comfyui import lora_stem
from .lora_hash import NotSafetensors, a1111_lora_hash
from .model import LoraRef

log = logging.getLogger(__name__)

# which checkpoints without a hash may be hashed when an image's hash matches nothing: all
# of this host's (`lora-tracker images`), only those named like the image's LoRA (the
# watcher: never a long pause on its path), or none
HashMissing = Literal["all", "named", "none"]

CHECKPOINTS_SQL = """
    SELECT c.id, c.host, c.path, c.size_bytes, c.lora_hash, c.file_format,
           c.epoch_result_id, c.training_run_id, e.epoch_number, r.run_name
    FROM checkpoints c
    JOIN training_runs r ON r.id = c.training_run_id
    LEFT JOIN epoch_results e ON e.id = c.epoch_result_id
    ORDER BY c.id
"""


@dataclass(frozen=True)
class Match:
    """A LoRA of an image found as the checkpoint of one epoch."""

    epoch_result_id: int
    training_run_id: int
    run_name: str
    epoch_number: int
    lora: LoraRef


@dataclass
class Resolution:
    """What an image's LoRAs matched: one Match per epoch, and why the others did not."""

    matches: list[Match] = field(default_factory=list)
    misses: list[str] = field(default_factory=list)


class CheckpointIndex:
    """The tracked checkpoints, loaded once for a batch of images."""

    def __init__(
        self,
        conn: Connection,
        *,
        lora_dirs: list[Path] | None = None,
        host: str | None = None,
        hash_missing: HashMissing = "all",
    ) -> None:
        self.conn = conn
        self.host = host or this_host()
        self.lora_dirs = list(lora_dirs or [])
        self.hash_missing = hash_missing
        self.hashed_files = 0  # checkpoints whose hash was computed by this index
        self._tried: set[int] = set()
        self._file_hashes: dict[tuple[str, int, int], str | None] = {}
        self.reload()

    def reload(self) -> None:
        with self.conn.transaction():
            # kohya's sshs_model_hash (content_hash at capture) is A1111's hash
            self.conn.execute(
                "UPDATE checkpoints SET lora_hash = content_hash WHERE lora_hash IS NULL"
                " AND content_hash ~ '^[0-9a-f]{64}$'"
            )
            rows = self.conn.execute(CHECKPOINTS_SQL).fetchall()
        self.rows = rows
        self.by_hash: dict[str, list[dict[str, Any]]] = defaultdict(list)
        self.by_hash12: dict[str, list[dict[str, Any]]] = defaultdict(list)
        self.by_stem: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for row in rows:
            if row["lora_hash"]:
                self._add_hash(row, row["lora_hash"])
            if row["host"] == self.host:
                self.by_stem[_stem(row["path"])].append(row)

    def _add_hash(self, row: dict[str, Any], digest: str) -> None:
        row["lora_hash"] = digest
        self.by_hash[digest].append(row)
        self.by_hash12[digest[:12]].append(row)

    # -- lookups ------------------------------------------------------------------------

    def resolve(self, loras: list[LoraRef]) -> Resolution:
        """The epochs an image's LoRAs are, one Match per distinct epoch."""
        result = Resolution()
        seen: set[int] = set()
        for ref in loras:
            rows, miss = self._rows_for(ref)
            if miss:
                result.misses.append(miss)
                continue
            for row in rows:
                if row["epoch_result_id"] is None:
                    result.misses.append(f"{ref.name}: {row['path']} has no epoch")
                elif row["epoch_result_id"] not in seen:
                    seen.add(row["epoch_result_id"])
                    result.matches.append(_match(row, ref))
        return result

    def _rows_for(self, ref: LoraRef) -> tuple[list[dict[str, Any]], str | None]:
        if ref.hash12:
            rows = self._by_prefix(ref.hash12)
            while not rows and self._hash_pending(prefer=_stem(ref.name)):
                rows = self._by_prefix(ref.hash12)
            if rows:
                return _one_per_epoch(rows), None
            return [], f"{ref.name} (hash {ref.hash12}): no tracked checkpoint has this hash"
        found = self._find_in_lora_dirs(ref.name)
        if found is not None:
            digest = self._file_hash(found)
            rows = self.by_hash.get(digest or "", [])
            while not rows and digest and self._hash_pending(prefer=_stem(ref.name)):
                rows = self.by_hash.get(digest, [])
            if rows:
                return _one_per_epoch(rows), None
            return [], f"{ref.name}: {found} is no tracked checkpoint (by its hash)"
        rows = self.by_stem.get(_stem(ref.name), [])
        if not rows:
            return [], f"{ref.name}: no tracked checkpoint of that name on {self.host}"
        epochs = {row["epoch_result_id"] for row in rows}
        if len(epochs) > 1:
            return [], (f"{ref.name}: {len(rows)} tracked checkpoints have that name "
                        "(give --lora-dir to tell them apart by hash)")  # fmt: skip
        return rows[:1], None

    def _by_prefix(self, prefix: str) -> list[dict[str, Any]]:
        prefix = prefix.lower()
        if len(prefix) == 12:
            return self.by_hash12.get(prefix, [])
        return [row for digest, rows in self.by_hash.items() if digest.startswith(prefix)
                for row in rows]  # fmt: skip

    def _find_in_lora_dirs(self, lora_name: str) -> Path | None:
        parts = PureWindowsPath(lora_name).parts  # ComfyUI: sub\\name.safetensors
        for folder in self.lora_dirs:
            for candidate in (folder.joinpath(*parts), folder / (parts[-1] if parts else "")):
                for path in (candidate, candidate.with_name(candidate.name + ".safetensors")):
                    if path.is_file():
                        return path
        return None

    def _file_hash(self, path: Path) -> str | None:
        stat = path.stat()
        key = (str(path), stat.st_size, stat.st_mtime_ns)
        if key not in self._file_hashes:
            try:
                self._file_hashes[key] = a1111_lora_hash(path)
            except (OSError, NotSafetensors) as exc:
                log.info("cannot hash %s: %s", path, exc)
                self._file_hashes[key] = None
        return self._file_hashes[key]

    # -- computing missing hashes ---------------------------------------------------------

    def _hash_pending(self, prefer: str) -> bool:
        """Compute and store A1111's hash of this host's checkpoints that have none yet
        (their file still the one captured: same size), those named like the image's LoRA
        first. True when any hash was added."""
        pending = [row for row in self.rows if self._may_hash(row)]
        if not pending or self.hash_missing == "none":
            return False
        first = [row for row in pending if _stem(row["path"]) == prefer]
        if self.hash_missing == "named" and not first:
            return False
        batch = first or pending
        added = False
        for row in batch:
            self._tried.add(row["id"])
            digest = self._checkpoint_hash(row)
            if digest is None:
                continue
            with self.conn.transaction():
                self.conn.execute(
                    "UPDATE checkpoints SET lora_hash = %s WHERE id = %s AND lora_hash IS NULL",
                    (digest, row["id"]),
                )
            self._add_hash(row, digest)
            self.hashed_files += 1
            added = True
        if self.hash_missing == "named":
            return added
        return added or (bool(first) and self._hash_pending(prefer="\0"))

    def _may_hash(self, row: dict[str, Any]) -> bool:
        unhashed = row["lora_hash"] is None and row["id"] not in self._tried
        return unhashed and row["host"] == self.host and row["file_format"] == "safetensors"

    def _checkpoint_hash(self, row: dict[str, Any]) -> str | None:
        path = row["path"]
        try:
            if os.stat(path).st_size != row["size_bytes"]:
                log.info("%s changed since it was captured: not hashed", path)
                return None
            log.info("computing the LoRA hash of %s", path)
            return a1111_lora_hash(path)
        except FileNotFoundError:
            return None
        except (OSError, NotSafetensors) as exc:
            log.info("cannot hash %s: %s", path, exc)
            return None


def _match(row: dict[str, Any], ref: LoraRef) -> Match:
    return Match(row["epoch_result_id"], row["training_run_id"], row["run_name"],
                 row["epoch_number"], ref)  # fmt: skip


def _stem(path_or_name: str) -> str:
    return lora_stem(path_or_name)


def _one_per_epoch(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Copies of one file (several paths or hosts) are one epoch's checkpoint."""
    seen: set[Any] = set()
    kept = []
    for row in rows:
        key = row["epoch_result_id"] if row["epoch_result_id"] is not None else ("c", row["id"])
        if key not in seen:
            seen.add(key)
            kept.append(row)
    return kept
