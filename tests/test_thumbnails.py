"""Thumbnails (lora_tracker/thumbnails.py): made once with Pillow, cached by the image's
SHA-256 under the data folder, never larger than asked; a bad image is a ThumbnailError."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest
from PIL import Image

from lora_tracker import thumbnails
from lora_tracker.thumbnails import ThumbnailError, thumbnail_path


def _png(path: Path, size: tuple[int, int] = (1024, 768)) -> Path:
    image = Image.radial_gradient("L").resize(size).convert("RGB")
    image.save(path)
    return path


def test_made_once_and_small(tmp_path: Path) -> None:
    """The thumbnail is a WebP at most 256 px on its long side, kept in the data folder
    and reused (not rewritten) on the next call, even for a copy of the image."""
    image = _png(tmp_path / "a.png")
    sha = hashlib.sha256(image.read_bytes()).hexdigest()
    thumb = thumbnail_path(image)
    assert thumb == tmp_path / "lt-home" / "thumbnails" / sha[:2] / f"{sha}-256.webp"
    with Image.open(thumb) as t:
        assert t.format == "WEBP" and t.size == (256, 192)
    os.utime(thumb, (1, 1))
    copy = tmp_path / "copy.png"
    copy.write_bytes(image.read_bytes())
    assert thumbnail_path(copy) == thumb
    assert thumbnail_path(image, sha, 256) == thumb
    assert thumb.stat().st_mtime == 1  # not made again
    with Image.open(thumbnail_path(image, sha, 128)) as t:
        assert t.size == (128, 96)


def test_known_hash_needs_no_image(tmp_path: Path) -> None:
    """With the SHA-256 the database knows, a cached thumbnail is served after the image
    itself is gone."""
    image = _png(tmp_path / "b.png")
    sha = hashlib.sha256(image.read_bytes()).hexdigest()
    thumb = thumbnail_path(image, sha)
    image.unlink()
    assert thumbnail_path(image, sha) == thumb
    with pytest.raises(ThumbnailError, match="no such file"):
        thumbnail_path(image, "0" * 64)


@pytest.mark.parametrize(
    "content", [b"", b"not an image at all", None], ids=["empty", "text", "truncated"]
)
def test_bad_images_are_one_error(tmp_path: Path, content: bytes | None) -> None:
    path = tmp_path / "bad.png"
    if content is None:
        full = _png(tmp_path / "full.png").read_bytes()
        content = full[: len(full) // 2]
    path.write_bytes(content)
    with pytest.raises(ThumbnailError, match=r"bad\.png"):
        thumbnail_path(path)
    assert not list((tmp_path / "lt-home").rglob("*.webp"))


def test_sizes_and_hashes_are_checked(tmp_path: Path) -> None:
    image = _png(tmp_path / "c.png")
    with pytest.raises(ThumbnailError, match="not 300"):
        thumbnail_path(image, size=300)
    with pytest.raises(ThumbnailError, match="not a SHA-256"):
        thumbnail_path(image, "../../etc/passwd")
    assert thumbnails.cached_path("f" * 64, 512).name == "f" * 64 + "-512.webp"
