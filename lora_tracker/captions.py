"""caption_versions: which caption set a run was trained on (written only here; ``export``
and ``db status`` read the table whole)."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg

from . import _sqlbuild
from .errors import AlreadyExists, InvalidInput, NotFound
from .models import CaptionVersion, CaptionVersionCreate
from .pg import Connection


def create_caption_version(conn: Connection, version: CaptionVersionCreate) -> CaptionVersion:
    """Insert a caption version; a taken version_name raises AlreadyExists."""
    values = version.model_dump()
    query, params = _sqlbuild.insert("caption_versions", values)
    try:
        with conn.transaction():
            row = conn.execute(query, params).fetchone()
    except psycopg.errors.UniqueViolation:
        raise AlreadyExists(
            f"a caption version named {version.version_name} already exists"
        ) from None
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


def list_with_runs(conn: Connection) -> list[dict[str, Any]]:
    """Caption versions with the runs that used them and how those went."""
    return conn.execute(
        """
        SELECT cv.version_name, cv.detail_level, cv.num_captions, cv.includes_hex_codes,
               cv.includes_accessories, cv.includes_jewelry,
               count(tr.id) AS runs,
               round(avg(tr.quality_score), 2) AS avg_quality,
               string_agg(tr.overall_verdict, ', ' ORDER BY tr.run_date) AS verdicts
        FROM caption_versions cv
        LEFT JOIN training_runs tr ON tr.caption_version = cv.version_name
        GROUP BY cv.id ORDER BY cv.version_name
        """
    ).fetchall()


def link_runs(conn: Connection, version_name: str, run_ids: list[int]) -> list[str]:
    """Mark runs as trained on a caption version (both sides: the run's caption_version
    and the version's used_in_training_runs). Returns the run names."""
    get_caption_version(conn, version_name)
    rows = conn.execute(
        "UPDATE training_runs SET caption_version = %s WHERE id = ANY(%s) RETURNING run_name",
        (version_name, run_ids),
    ).fetchall()
    names = [r["run_name"] for r in rows]
    conn.execute(
        """
        UPDATE caption_versions SET used_in_training_runs = used_in_training_runs || ARRAY(
            SELECT x FROM unnest(%s::text[]) AS x WHERE x <> ALL(used_in_training_runs))
        WHERE version_name = %s
        """,
        (names, version_name),
    )
    return names


# -- a caption set on disk ---------------------------------------------------------------------

HEX_CODE = re.compile(r"#[0-9a-fA-F]{6}\b")
ACCESSORY_WORDS = (
    "bow",
    "hat",
    "headband",
    "glasses",
    "sunglasses",
    "scarf",
    "bag",
    "cap",
    "hair clip",
    "ribbon",
    "gloves",
    "belt",
    "crown",
    "tiara",
    "mask",
)
JEWELRY_WORDS = ("necklace", "bracelet", "earring", "earrings", "ring", "jewelry",
                 "jewellery", "pendant", "brooch", "anklet", "choker")  # fmt: skip


@dataclass(frozen=True)
class CaptionSet:
    """What a folder of .txt captions looks like."""

    source_dir: str
    num_captions: int
    mean_words: float
    detail_level: str
    sample_caption: str | None
    caption_set_hash: str
    includes_hex_codes: bool
    includes_accessories: bool
    includes_jewelry: bool


def analyze_caption_dir(folder: Path) -> CaptionSet:
    """Count the .txt captions under ``folder``, guess their detail level, hash the set."""
    if not folder.is_dir():
        raise InvalidInput(f"{folder} is not a folder")
    files = sorted(p for p in folder.rglob("*.txt") if p.is_file())
    if not files:
        raise InvalidInput(f"no .txt captions in {folder}")
    digest = hashlib.sha256()
    words = 0
    hex_codes = accessories = jewelry = False
    sample = None
    for path in files:
        text = path.read_text(encoding="utf-8", errors="replace").strip()
        digest.update(str(path.relative_to(folder)).encode() + b"\0" + text.encode() + b"\0")
        words += len(re.findall(r"[\w#'-]+", text))
        lowered = text.lower()
        hex_codes = hex_codes or bool(HEX_CODE.search(text))
        accessories = accessories or _mentions(lowered, ACCESSORY_WORDS)
        jewelry = jewelry or _mentions(lowered, JEWELRY_WORDS)
        if sample is None and text:
            sample = text
    mean = words / len(files)
    return CaptionSet(
        source_dir=str(folder.absolute()), num_captions=len(files), mean_words=mean,
        detail_level=_detail_level(mean), sample_caption=sample,
        caption_set_hash=digest.hexdigest(), includes_hex_codes=hex_codes,
        includes_accessories=accessories, includes_jewelry=jewelry,
    )  # fmt: skip


def _mentions(text: str, words: tuple[str, ...]) -> bool:
    return any(re.search(rf"\b{re.escape(word)}\b", text) for word in words)


def _detail_level(mean_words: float) -> str:
    if mean_words < 8:
        return "minimal"
    if mean_words < 20:
        return "moderate"
    if mean_words < 40:
        return "detailed"
    return "very_detailed"
