"""Which image files the dashboard shows: raster images, recognised by their first bytes
(never by their name), so a recorded ``.png`` that is really an SVG or HTML is not served
as an image from the page's origin."""

from __future__ import annotations

HEAD_BYTES = 12  # enough for every signature below


def raster_type(head: bytes) -> str | None:
    """The content type of a PNG, JPEG, WebP or GIF image from its first bytes, else None."""
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if head.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if head.startswith((b"GIF87a", b"GIF89a")):
        return "image/gif"
    if len(head) >= 12 and head.startswith(b"RIFF") and head[8:12] == b"WEBP":
        return "image/webp"
    return None
