"""caption_versions: which caption set a run was trained on. All SQL about captions here."""

from __future__ import annotations

from . import _sqlbuild
from .db import Connection
from .errors import NotFound
from .models import CaptionVersion, CaptionVersionCreate


def create_caption_version(conn: Connection, version: CaptionVersionCreate) -> CaptionVersion:
    """Insert a caption version; a taken version_name raises AlreadyExists."""
    values = version.model_dump()
    query, params = _sqlbuild.insert("caption_versions", values)
    row = conn.execute(query, params).fetchone()
    assert row is not None
    return CaptionVersion.model_validate(row)


def get_caption_version(conn: Connection, version_name: str) -> CaptionVersion:
    """A caption version by name."""
    row = conn.execute(
        "SELECT * FROM caption_versions WHERE version_name = %s", (version_name,)
    ).fetchone()
    if row is None:
        raise NotFound(f"no caption version named {version_name!r}")
    return CaptionVersion.model_validate(row)


def list_caption_versions(conn: Connection) -> list[CaptionVersion]:
    """All caption versions, by name."""
    rows = conn.execute("SELECT * FROM caption_versions ORDER BY version_name").fetchall()
    return [CaptionVersion.model_validate(r) for r in rows]
