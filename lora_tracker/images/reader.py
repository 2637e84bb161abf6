"""Reading one image file: its SHA-256 and the generation metadata A1111 / Forge / SD.Next
or ComfyUI wrote into it, with Pillow (no hand-written PNG or EXIF parser).

- PNG: the ``parameters`` text chunk (A1111, Forge, SD.Next), or the ``prompt`` and
  ``workflow`` chunks (ComfyUI).
- JPEG / WebP: the EXIF UserComment (tag 0x9286 in the Exif IFD 0x8769), whose first 8
  bytes name its character set (``UNICODE\\0``: UTF-16, big-endian as piexif writes it;
  ``ASCII\\0\\0\\0``; eight zero bytes: undefined), which is where A1111's
  ``modules/images.py`` puts the infotext (``piexif.helper.UserComment.dump(...,
  encoding="unicode")``); else a JPEG comment.

The file is read once: the bytes are hashed and handed to Pillow from memory. A truncated
or corrupt file is found without decoding a whole 1024x1024 PNG (``verify()`` checks every
chunk's CRC up to IEND); a JPEG or WebP is decoded at a reduced scale.
"""

from __future__ import annotations

import functools
import hashlib
import io
import re
import warnings
from dataclasses import dataclass
from pathlib import Path

from .comfyui import parse_comfyui
from .infotext import parse_infotext
from .model import ImageMetadata, NotUsable

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".webp"})
FORMATS = ("PNG", "JPEG", "WEBP")  # Pillow runs no other decoder on a file given to it
MAX_IMAGE_BYTES = 256 * 1024 * 1024
EXIF_IFD = 0x8769
USER_COMMENT = 0x9286
_GRID_NAME = re.compile(r"(?:xyz_)?grid-\d{4,}", re.IGNORECASE)


@dataclass
class ReadImage:
    """One image file as read: where it is, the SHA-256 of its bytes, what made it."""

    path: Path
    sha256: str
    size_bytes: int
    metadata: ImageMetadata


def is_image_file(path: Path) -> bool:
    """A file the images command reads: .png, .jpg, .jpeg or .webp (not hidden)."""
    return path.suffix.lower() in IMAGE_SUFFIXES and not path.name.startswith(".")


def is_grid_path(path: Path) -> bool:
    """A1111 saves its grids as ``grid-0001.png`` / ``xyz_grid-0001-....png`` in the
    ``txt2img-grids`` / ``img2img-grids`` folders (``images.save_image(..., grid=True)``)."""
    if _GRID_NAME.match(path.name):
        return True
    return any(part.lower().endswith("-grids") for part in path.parts[-3:-1])


def read_image(path: Path) -> ReadImage:
    """Read ``path``. Raises NotUsable (unreadable, not an image, no metadata, grid)."""
    try:
        if path.stat().st_size > MAX_IMAGE_BYTES:
            raise NotUsable("unreadable", f"larger than {MAX_IMAGE_BYTES >> 20} MB")
        data = path.read_bytes()
    except OSError as exc:
        raise NotUsable("unreadable", exc.strerror or str(exc)) from None
    if not data:
        raise NotUsable("unreadable", "empty file")
    sha256 = hashlib.sha256(data).hexdigest()
    metadata = read_metadata(data, path.name)
    if metadata.generator != "comfyui" and is_grid_path(path):
        raise NotUsable("grid", "an A1111 grid (its file name or folder says so)")
    return ReadImage(path, sha256, len(data), metadata)


def read_metadata(data: bytes, name: str = "image") -> ImageMetadata:
    """The generation metadata of an image given as bytes."""
    from PIL import Image, UnidentifiedImageError

    _quiet_exif_warnings()

    try:
        with Image.open(io.BytesIO(data), formats=FORMATS) as image:
            kind = image.format
            texts = _texts(image)
    except UnidentifiedImageError:
        raise NotUsable("not an image", "not a PNG, JPEG or WebP image") from None
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        raise NotUsable("unreadable", _pillow_error(exc)) from None
    _check_complete(data, kind)
    if texts.get("prompt") or texts.get("workflow"):
        try:
            return parse_comfyui(texts.get("prompt"), texts.get("workflow"))
        except NotUsable:
            if not texts.get("parameters"):
                raise
    if texts.get("parameters"):
        return parse_infotext(texts["parameters"])
    raise NotUsable("no metadata", "no generation metadata (no parameters or prompt)")


def _texts(image: object) -> dict[str, str]:
    """The metadata texts of an open image: PNG text chunks, or the EXIF UserComment."""
    from PIL import Image

    assert isinstance(image, Image.Image)
    texts: dict[str, str] = {}
    for key in ("parameters", "prompt", "workflow"):
        value = image.info.get(key)
        if isinstance(value, str) and value.strip():
            texts[key] = value
    if texts or image.format == "PNG":
        return texts
    comment = image.getexif().get_ifd(EXIF_IFD).get(USER_COMMENT)
    text = decode_user_comment(comment) if comment is not None else ""
    if not text.strip():
        jpeg_comment = image.info.get("comment")
        if isinstance(jpeg_comment, bytes):
            text = jpeg_comment.decode("utf-8", errors="replace")
    if text.strip():
        texts["parameters"] = text
    return texts


@functools.cache
def _quiet_exif_warnings() -> None:
    """Pillow warns (UserWarning, on stderr) about each damaged EXIF block it reads; a
    damaged image is said once, as skipped, instead."""
    warnings.filterwarnings("ignore", category=UserWarning, module=r"PIL\.TiffImagePlugin")


def decode_user_comment(value: bytes | str) -> str:
    """An EXIF UserComment: 8 bytes naming the character set, then the text."""
    if isinstance(value, str):
        return value.strip("\x00")
    prefix, body = value[:8], value[8:]
    if prefix == b"UNICODE\x00":
        return _utf16(body).strip("\x00")
    if prefix in (b"ASCII\x00\x00\x00", b"\x00" * 8):
        return body.decode("utf-8", errors="replace").strip("\x00")
    return value.decode("utf-8", errors="replace").strip("\x00")


def _utf16(body: bytes) -> str:
    """UTF-16 as the writer chose: a BOM when there is one, else the byte order whose
    zero bytes fall where ASCII text puts them (piexif writes big-endian, some Windows
    tools little-endian)."""
    if body[:2] in (b"\xfe\xff", b"\xff\xfe"):
        return body.decode("utf-16", errors="replace")
    even_zeros = body[0::2].count(0)
    odd_zeros = body[1::2].count(0)
    return body.decode("utf-16-le" if odd_zeros > even_zeros else "utf-16-be", errors="replace")


def _check_complete(data: bytes, kind: str | None) -> None:
    """A truncated or damaged file is refused: a PNG's chunks are checked up to IEND (no
    pixel is decoded), a JPEG or WebP is decoded at a small scale."""
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data), formats=FORMATS) as image:
            if kind == "PNG":
                image.verify()
            else:
                image.draft("RGB", (128, 128))
                image.load()
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        raise NotUsable("unreadable", _pillow_error(exc)) from None


def _pillow_error(exc: Exception) -> str:
    text = str(exc).strip() or type(exc).__name__
    text = text.replace("<_io.BytesIO object>", "").replace("  ", " ")
    return f"damaged or truncated ({text})"
