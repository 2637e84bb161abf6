"""Reading a safetensors header without touching the tensor data.

Layout: 8 bytes little-endian header length N, N bytes of JSON (tensor entries with
``dtype``, ``shape``, ``data_offsets`` and an optional ``__metadata__`` of string->string),
then the tensor bytes. The file is complete when its size is at least 8 + N + the largest
``data_offsets`` end.

The file is opened with plain I/O, read for the header only, and closed at once: no mmap
and no handle left open (kohya removes old checkpoints with an unguarded ``os.remove``,
which an open handle makes fail on Windows). A 6 GB checkpoint costs what a 6 MB one does.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import LoraTrackerError

MAX_HEADER_BYTES = 100 * 1024 * 1024

# bytes per element; unknown dtypes are accepted without the size check
DTYPE_SIZES = {
    "BOOL": 1, "U8": 1, "I8": 1, "F8_E5M2": 1, "F8_E4M3": 1, "F8_E8M0": 1,
    "I16": 2, "U16": 2, "F16": 2, "BF16": 2,
    "I32": 4, "U32": 4, "F32": 4,
    "I64": 8, "U64": 8, "F64": 8,
}  # fmt: skip


class CheckpointError(LoraTrackerError):
    """A checkpoint file that cannot be recorded (yet)."""


class IncompleteCheckpoint(CheckpointError):
    """Shorter than its header says: still being written, or truncated."""


class CorruptCheckpoint(CheckpointError):
    """Not a valid safetensors file, however long one waits."""


@dataclass(frozen=True)
class SafetensorsHeader:
    """What the header says, and the facts needed to trust it."""

    header_length: int
    metadata: dict[str, str]
    tensor_count: int
    data_length: int  # the largest data_offsets end
    file_size: int
    header_sha256: str
    dtypes: dict[str, int] = field(default_factory=dict)  # dtype -> tensor count

    @property
    def expected_size(self) -> int:
        return 8 + self.header_length + self.data_length


def read_safetensors_header(path: str | os.PathLike[str]) -> SafetensorsHeader:
    """Read and validate the header of ``path``.

    Raises IncompleteCheckpoint when the file is shorter than the header promises (wait
    and retry), CorruptCheckpoint when it can never be valid, OSError when unreadable.
    """
    with open(path, "rb", buffering=0) as handle:
        size = os.fstat(handle.fileno()).st_size
        prefix = handle.read(8)
        if len(prefix) < 8:
            raise IncompleteCheckpoint(f"{_name(path)}: {size} bytes, no header yet")
        (header_length,) = struct.unpack("<Q", prefix)
        if header_length > MAX_HEADER_BYTES:
            raise CorruptCheckpoint(
                f"{_name(path)}: header length {header_length} is over "
                f"{MAX_HEADER_BYTES // (1024 * 1024)} MB: not a safetensors file"
            )
        if header_length < 2:
            raise CorruptCheckpoint(f"{_name(path)}: header length {header_length} is too small")
        if size < 8 + header_length:
            raise IncompleteCheckpoint(
                f"{_name(path)}: {size} bytes, the header alone needs {8 + header_length}"
            )
        raw = handle.read(header_length)
    if len(raw) < header_length:  # shrank while reading
        raise IncompleteCheckpoint(f"{_name(path)}: header cut short")
    return parse_header(raw, size, _name(path))


def parse_header(raw: bytes, file_size: int, name: str = "file") -> SafetensorsHeader:
    """Validate header bytes against the file size (shared by the reader and tests)."""
    try:
        document = json.loads(raw.decode("utf-8").rstrip(" "))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise CorruptCheckpoint(f"{name}: header is not JSON ({type(exc).__name__})") from None
    if not isinstance(document, dict):
        raise CorruptCheckpoint(f"{name}: header is not a JSON object")

    metadata_raw = document.pop("__metadata__", None) or {}
    if not isinstance(metadata_raw, dict):
        raise CorruptCheckpoint(f"{name}: __metadata__ is not an object")
    metadata = {str(k): v if isinstance(v, str) else json.dumps(v) for k, v in metadata_raw.items()}

    data_length = 0
    dtypes: dict[str, int] = {}
    spans: list[tuple[int, int]] = []
    for tensor, entry in document.items():
        begin, end, dtype = _check_entry(name, tensor, entry)
        spans.append((begin, end))
        data_length = max(data_length, end)
        dtypes[dtype] = dtypes.get(dtype, 0) + 1
    spans.sort()
    position = 0
    for begin, end in spans:
        if begin != position:
            raise CorruptCheckpoint(f"{name}: tensor data offsets overlap or leave a gap")
        position = end

    header_length = len(raw)
    if file_size < 8 + header_length + data_length:
        raise IncompleteCheckpoint(
            f"{name}: {file_size} bytes of {8 + header_length + data_length}"
        )
    return SafetensorsHeader(
        header_length=header_length,
        metadata=metadata,
        tensor_count=len(spans),
        data_length=data_length,
        file_size=file_size,
        header_sha256=hashlib.sha256(raw).hexdigest(),
        dtypes=dtypes,
    )


def _check_entry(name: str, tensor: str, entry: Any) -> tuple[int, int, str]:
    if not isinstance(entry, dict):
        raise CorruptCheckpoint(f"{name}: tensor {tensor!r} is not an object")
    offsets = entry.get("data_offsets")
    shape = entry.get("shape")
    dtype = entry.get("dtype")
    if (
        not isinstance(offsets, list)
        or len(offsets) != 2
        or not all(type(o) is int and o >= 0 for o in offsets)
        or offsets[0] > offsets[1]
    ):
        raise CorruptCheckpoint(f"{name}: tensor {tensor!r} has bad data_offsets")
    if not isinstance(shape, list) or not all(type(d) is int and d >= 0 for d in shape):
        raise CorruptCheckpoint(f"{name}: tensor {tensor!r} has a bad shape")
    if not isinstance(dtype, str):
        raise CorruptCheckpoint(f"{name}: tensor {tensor!r} has no dtype")
    width = DTYPE_SIZES.get(dtype)
    if width is not None:
        count = 1
        for dim in shape:
            count *= dim
        if count * width != offsets[1] - offsets[0]:
            raise CorruptCheckpoint(
                f"{name}: tensor {tensor!r} size does not match its shape and dtype"
            )
    return offsets[0], offsets[1], dtype


def _name(path: str | os.PathLike[str]) -> str:
    return Path(path).name
