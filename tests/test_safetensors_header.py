"""The safetensors header reader: valid, incomplete and corrupt files; random bytes."""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from safetensors.numpy import save

from lora_tracker.capture.safetensors_header import (
    CheckpointError,
    CorruptCheckpoint,
    IncompleteCheckpoint,
    read_safetensors_header,
)

from .kohya_sim import PNG, checkpoint_bytes, sd15_metadata


@pytest.fixture
def valid(tmp_path: Path) -> Path:
    path = tmp_path / "pixelbaby-000003.safetensors"
    path.write_bytes(checkpoint_bytes(sd15_metadata("pixelbaby", 7, 1731146400.0), 8, seed=1))
    return path


def header_bytes(document: dict[str, object]) -> bytes:
    raw = json.dumps(document).encode()
    return struct.pack("<Q", len(raw)) + raw


def test_valid_file(valid: Path) -> None:
    """A file written by the safetensors library reads whole, metadata intact."""
    header = read_safetensors_header(valid)
    assert header.file_size == valid.stat().st_size == header.expected_size
    assert header.tensor_count == 12
    assert header.metadata["ss_network_dim"] == "32"
    assert header.metadata["ss_resolution"] == "(512, 512)"
    assert header.dtypes == {"F16": 12}


@pytest.mark.parametrize("keep", [0, 1, 7, 8, 20, -1])
def test_truncated_is_incomplete(valid: Path, keep: int) -> None:
    """A file cut anywhere (zero bytes, mid-header, mid-data) is incomplete, not corrupt."""
    data = valid.read_bytes()
    valid.write_bytes(data[:keep])
    with pytest.raises(IncompleteCheckpoint):
        read_safetensors_header(valid)


def test_huge_header_is_corrupt(tmp_path: Path) -> None:
    """A header length over 100 MB is refused without reading it."""
    path = tmp_path / "huge.safetensors"
    path.write_bytes(struct.pack("<Q", 200 * 1024 * 1024) + b"{}")
    with pytest.raises(CorruptCheckpoint, match="over 100 MB"):
        read_safetensors_header(path)


def test_non_safetensors_is_corrupt(tmp_path: Path) -> None:
    """A PNG (or any text) named .safetensors is corrupt."""
    for name, content in (("png.safetensors", PNG), ("text.safetensors", b"hello world" * 10)):
        path = tmp_path / name
        path.write_bytes(content)
        with pytest.raises(CorruptCheckpoint):
            read_safetensors_header(path)


def test_corrupt_json_header(tmp_path: Path) -> None:
    """A header that is not JSON, or not an object, is corrupt."""
    for raw in (b"{not json", b"[1, 2, 3]", b"\xff\xfe\x00{}"):
        path = tmp_path / "bad.safetensors"
        path.write_bytes(struct.pack("<Q", len(raw)) + raw + b"\0" * 16)
        with pytest.raises(CorruptCheckpoint):
            read_safetensors_header(path)


@pytest.mark.parametrize(
    "entry",
    [
        {"dtype": "F32", "shape": [2], "data_offsets": [0, 4]},  # size mismatch
        {"dtype": "F32", "shape": [1], "data_offsets": [4, 0]},  # reversed
        {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]},  # gap at 0
        {"dtype": "F32", "shape": [1], "data_offsets": [0]},  # one offset
        {"dtype": "F32", "shape": "1", "data_offsets": [0, 4]},  # bad shape
        {"shape": [1], "data_offsets": [0, 4]},  # no dtype
        "not an object",
    ],
)
def test_inconsistent_offsets_are_corrupt(tmp_path: Path, entry: object) -> None:
    """data_offsets that do not match shape and dtype, or leave gaps, are corrupt."""
    path = tmp_path / "bad.safetensors"
    path.write_bytes(header_bytes({"w": entry}) + b"\0" * 64)
    with pytest.raises(CorruptCheckpoint):
        read_safetensors_header(path)


def test_overlapping_tensors_are_corrupt(tmp_path: Path) -> None:
    """Two tensors sharing bytes are corrupt."""
    path = tmp_path / "overlap.safetensors"
    document: dict[str, object] = {
        "a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
        "b": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]},
    }
    path.write_bytes(header_bytes(document) + b"\0" * 8)
    with pytest.raises(CorruptCheckpoint):
        read_safetensors_header(path)


def test_sparse_two_gigabyte_file_reads_header_only(tmp_path: Path) -> None:
    """A 2 GB checkpoint (sparse on disk) is read from its header alone."""
    path = tmp_path / "big.safetensors"
    count = 2 * 1024**3 // 2
    document = {
        "__metadata__": {"ss_network_dim": "128"},
        "big": {"dtype": "F16", "shape": [count], "data_offsets": [0, count * 2]},
    }
    head = header_bytes(document)
    with open(path, "wb") as handle:
        handle.write(head)
        handle.truncate(len(head) + count * 2)
    header = read_safetensors_header(path)
    assert header.file_size == 2 * 1024**3 + len(head)
    assert header.metadata == {"ss_network_dim": "128"}
    assert os.stat(path).st_blocks * 512 < 1024 * 1024  # still sparse: data never written


def test_no_file_handle_left_open(valid: Path) -> None:
    """The file is closed when the reader returns (kohya must be able to delete it)."""
    fd_dir = Path("/proc/self/fd")
    if not fd_dir.exists():
        pytest.skip("needs /proc")
    read_safetensors_header(valid)
    open_paths = {os.path.realpath(fd_dir / fd) for fd in os.listdir(fd_dir)}
    assert str(valid.resolve()) not in open_paths


def test_metadata_non_strings_are_kept_as_json(tmp_path: Path) -> None:
    """Metadata values that are not strings are kept, JSON-encoded, not dropped."""
    path = tmp_path / "odd.safetensors"
    path.write_bytes(save({"w": np.zeros(2, dtype=np.float32)}, metadata={"a": "b"}))
    raw = path.read_bytes()
    (length,) = struct.unpack("<Q", raw[:8])
    document = json.loads(raw[8 : 8 + length])
    document["__metadata__"] = {"n": 3, "s": "x"}
    new_header = json.dumps(document).encode()
    path.write_bytes(struct.pack("<Q", len(new_header)) + new_header + raw[8 + length :])
    assert read_safetensors_header(path).metadata == {"n": "3", "s": "x"}


@settings(max_examples=400, deadline=2000, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.binary(max_size=4096))
def test_random_bytes_never_crash(tmp_path_factory: pytest.TempPathFactory, data: bytes) -> None:
    """Random bytes give a typed error or a result: never another exception, never a hang."""
    path = tmp_path_factory.mktemp("fuzz") / "x.safetensors"
    path.write_bytes(data)
    try:
        header = read_safetensors_header(path)
    except CheckpointError:
        return
    assert header.expected_size <= len(data)


MUTATION_BASE = checkpoint_bytes({"ss_network_dim": "4"}, 4, seed=3, pairs=1)
MUTATION_HEADER_END = 8 + struct.unpack("<Q", MUTATION_BASE[:8])[0]
MUTATION_DOCUMENT = json.loads(MUTATION_BASE[8:MUTATION_HEADER_END])


@settings(max_examples=300, deadline=2000)
@given(
    cut=st.integers(min_value=0, max_value=len(MUTATION_BASE) + 100),
    flip=st.none() | st.integers(min_value=0, max_value=10_000),
    value=st.integers(min_value=0, max_value=255),
)
@example(cut=len(MUTATION_BASE), flip=None, value=0)  # the file as written
@example(cut=MUTATION_HEADER_END + 1, flip=None, value=0)  # cut in the data
@example(cut=len(MUTATION_BASE), flip=MUTATION_HEADER_END + 5, value=1)  # a data byte
@example(cut=len(MUTATION_BASE), flip=20, value=0)  # a header byte
def test_mutated_checkpoints_never_crash(cut: int, flip: int | None, value: int) -> None:
    """A real checkpoint, cut short or with one byte changed, read from a file as capture
    reads it: a typed error or a header that fits the file, never another exception. What
    is known is checked too: the whole file reads as written, a file cut short is
    incomplete (never corrupt), and a byte changed among the tensors' data leaves the
    header as it was (the reader reads the header alone)."""
    import tempfile

    good = MUTATION_BASE
    data = bytearray(good[:cut])
    where = None if flip is None or not data else flip % len(data)
    if where is not None:
        data[where] = value
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "m.safetensors"
        path.write_bytes(bytes(data))
        try:
            header = read_safetensors_header(path)
        except CheckpointError as exc:
            error: CheckpointError | None = exc
        else:
            error = None
    whole = len(data) == len(good)
    if bytes(data) == good[: len(data)]:  # unchanged: whole, or cut short
        if whole:
            assert error is None, error
            assert header.metadata == MUTATION_DOCUMENT["__metadata__"]
            assert header.tensor_count == len(MUTATION_DOCUMENT) - 1
        else:
            assert isinstance(error, IncompleteCheckpoint), error
        return
    if whole and where is not None and where >= MUTATION_HEADER_END:  # data changed only
        assert error is None, error
        assert header.metadata == MUTATION_DOCUMENT["__metadata__"]
        assert header.expected_size == len(good)
        return
    if error is not None:
        return
    assert header.expected_size <= len(data)
    assert 8 + struct.unpack("<Q", bytes(data[:8]))[0] <= len(data)
