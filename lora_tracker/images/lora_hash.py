"""A1111's hash of a LoRA file: the SHA-256 of a safetensors file's bytes after its header
(8-byte little-endian length N, N header bytes, then the tensor data), which is what kohya
writes as ``sshs_model_hash``. A1111 shows its first 12 hex digits in ``Lora hashes``
(``modules/hashes.py`` addnet_hash_safetensors, ``extensions-builtin/Lora/network.py``).

Streamed in 1 MiB blocks into one reused buffer: runs at disk speed, in constant memory.
"""

from __future__ import annotations

import hashlib
import os
import struct

from ..errors import LoraTrackerError

BLOCK = 1 << 20
MAX_HEADER_BYTES = 100 * 1024 * 1024


class NotSafetensors(LoraTrackerError):
    """A file that is no safetensors file (its header length makes no sense)."""


def a1111_lora_hash(path: str | os.PathLike[str]) -> str:
    """The full 64-hex-digit hash; A1111's short hash is its first 12 digits. Raises
    OSError when unreadable, NotSafetensors when not a safetensors file."""
    digest = hashlib.sha256()
    buffer = bytearray(BLOCK)
    view = memoryview(buffer)
    with open(path, "rb", buffering=0) as f:
        size = os.fstat(f.fileno()).st_size
        prefix = f.read(8)
        if len(prefix) < 8:
            raise NotSafetensors(f"{os.fspath(path)}: too short for a safetensors file")
        (header_length,) = struct.unpack("<Q", prefix)
        if header_length > min(MAX_HEADER_BYTES, size - 8):
            raise NotSafetensors(f"{os.fspath(path)}: not a safetensors file")
        f.seek(8 + header_length)
        while count := f.readinto(buffer):
            digest.update(view[:count])
    return digest.hexdigest()
