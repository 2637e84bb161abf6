"""Thumbnails of test images: made once with Pillow, cached under the data folder, so a
grid of epochs x prompts never sends the full 1024x1024 files.

    from lora_tracker.thumbnails import thumbnail_path
    path = thumbnail_path("/out/00012-1234.png", sha256=None, size=256)  # a WebP file

- The cache is ``<data folder>/thumbnails/<sha256[:2]>/<sha256>-<size>.webp``, keyed by the
  SHA-256 of the image's bytes (what ``prompt_test_results.result_key`` holds as
  ``image:<sha256>``) and the size: a moved or copied image reuses its thumbnail, an image
  rewritten in place gets a new one.
- Given the SHA-256 the database knows, a cached thumbnail is returned without reading the
  image. Otherwise the image is read once (hashed and decoded from the same bytes).
- Written to a temporary file and renamed, so a reader never sees half a thumbnail and two
  processes making the same one at once are harmless.

Pillow is imported only when a thumbnail is made.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import tempfile
from pathlib import Path

from .errors import LoraTrackerError
from .settings import data_home

THUMBNAIL_SIZES: tuple[int, ...] = (128, 256, 512)
DEFAULT_SIZE = 256
MAX_IMAGE_BYTES = 200 * 1024 * 1024  # a test image is a few MB; refuse to slurp a huge file
MAX_IMAGE_PIXELS = 64_000_000  # an 8000x8000 grid still thumbnails; a decompression bomb not
MEDIA_TYPE = "image/webp"
RASTER_FORMATS = ("PNG", "JPEG", "WEBP", "GIF")
_SHA256 = re.compile(r"[0-9a-f]{64}")


class ThumbnailError(LoraTrackerError):
    """An image that cannot be made into a thumbnail (missing, unreadable, not an image)."""


def thumbnail_dir(home: Path | None = None) -> Path:
    """Where thumbnails are cached: ``<data folder>/thumbnails``."""
    return (home if home is not None else data_home()) / "thumbnails"


def cached_path(sha256: str, size: int = DEFAULT_SIZE, home: Path | None = None) -> Path:
    """The cache file of the image with this SHA-256 at this size (it may not exist yet)."""
    _check(sha256, size)
    return thumbnail_dir(home) / sha256[:2] / f"{sha256}-{size}.webp"


def thumbnail_path(
    image_path: str | Path,
    sha256: str | None = None,
    size: int = DEFAULT_SIZE,
    *,
    home: Path | None = None,
) -> Path:
    """The thumbnail of ``image_path`` (a WebP whose long side is at most ``size`` px),
    made now if it is not cached yet. ``sha256`` is the image's SHA-256 when the caller
    knows it (the database does): a cached thumbnail is then found without reading the
    image. ``size`` is one of ``THUMBNAIL_SIZES``.

    Raises ThumbnailError when the image is missing, unreadable or not an image."""
    if sha256 is not None:
        cached = cached_path(sha256, size, home)
        if cached.is_file():
            return cached
    elif size not in THUMBNAIL_SIZES:
        _check("0" * 64, size)
    data = _read(Path(image_path))
    actual = hashlib.sha256(data).hexdigest()
    target = cached_path(actual, size, home)
    if not target.is_file():
        _write_atomically(target, _render(data, size, Path(image_path).name))
    return target


def _check(sha256: str, size: int) -> None:
    if not _SHA256.fullmatch(sha256):
        raise ThumbnailError(f"{sha256!r} is not a SHA-256 (64 lowercase hex digits)")
    if size not in THUMBNAIL_SIZES:
        sizes = ", ".join(str(s) for s in THUMBNAIL_SIZES)
        raise ThumbnailError(f"a thumbnail is {sizes} px, not {size}")


def _read(path: Path) -> bytes:
    try:
        if path.stat().st_size > MAX_IMAGE_BYTES:
            raise ThumbnailError(f"{path.name}: larger than {MAX_IMAGE_BYTES >> 20} MB")
        return path.read_bytes()
    except FileNotFoundError:
        raise ThumbnailError(f"{path}: no such file") from None
    except OSError as exc:
        raise ThumbnailError(f"{path}: cannot be read ({exc.strerror or exc})") from None
    except ValueError:  # a NUL in the path
        raise ThumbnailError("not a valid path") from None


def _render(data: bytes, size: int, name: str) -> bytes:
    from PIL import Image, ImageOps

    try:
        # only the raster formats test images come in: Pillow is never asked to run an
        # EPS (Ghostscript) or any other decoder on a file the database names
        with Image.open(io.BytesIO(data), formats=RASTER_FORMATS) as image:
            if image.width * image.height > MAX_IMAGE_PIXELS:
                raise ThumbnailError(f"{name}: {image.width}x{image.height} is too large")
            image.draft("RGB", (size, size))  # JPEG: decode at a reduced scale
            image = ImageOps.exif_transpose(image)
            if image.mode not in ("RGB", "RGBA"):
                image = image.convert("RGBA" if "A" in image.getbands() else "RGB")
            image.thumbnail((size, size), Image.Resampling.LANCZOS, reducing_gap=2.0)
            out = io.BytesIO()
            image.save(out, "WEBP", quality=82, method=4)
            return out.getvalue()
    except ThumbnailError:
        raise
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        # Pillow says "cannot identify image file", "image file is truncated", ...
        raise ThumbnailError(f"{name}: not a readable image ({exc})") from None


def _write_atomically(target: Path, payload: bytes) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".webp", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(payload)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
