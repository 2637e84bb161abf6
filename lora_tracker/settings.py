"""Where the data lives: the database target and the local data folder.

The target is resolved in this order: an explicit URL (the CLI's ``--database-url``), the
``LORA_TRACKER_DATABASE_URL`` environment variable, else the embedded PostgreSQL server
kept in the data folder (``LORA_TRACKER_HOME``, default: the user data dir).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

ENV_DATABASE_URL = "LORA_TRACKER_DATABASE_URL"
ENV_HOME = "LORA_TRACKER_HOME"
APP_NAME = "lora-tracker"


def this_host() -> str:
    """The name of the machine recording (a run's files are keyed by host and path)."""
    named = os.environ.get("LORA_TRACKER_HOST")
    if named:
        return named
    if hasattr(os, "uname"):  # what gethostname() returns, without importing socket
        return os.uname().nodename
    import socket

    return socket.gethostname()


def data_home() -> Path:
    """The data folder: ``$LORA_TRACKER_HOME`` or the platform's user data dir."""
    env = os.environ.get(ENV_HOME)
    if env:
        return Path(env).expanduser().resolve()
    import platformdirs  # only paid for when needed

    return Path(platformdirs.user_data_dir(APP_NAME, appauthor=False)).resolve()


@dataclass(frozen=True)
class Target:
    """A resolved database target. ``url`` is None for the embedded server."""

    url: str | None
    source: str  # "--database-url", "LORA_TRACKER_DATABASE_URL" or "embedded"
    home: Path

    @property
    def embedded(self) -> bool:
        return self.url is None

    def display(self) -> str:
        """A printable description of the target, never showing a password."""
        if self.url is None:
            return f"embedded PostgreSQL in {self.home / 'pgdata'}"
        return mask_password(self.url)


def resolve_target(database_url: str | None = None) -> Target:
    """Resolve the database target from an explicit URL, the environment, or the default."""
    home = data_home()
    if database_url:
        return Target(database_url, "--database-url", home)
    env = os.environ.get(ENV_DATABASE_URL)
    if env:
        return Target(env, ENV_DATABASE_URL, home)
    return Target(None, "embedded", home)


_KV_PASSWORD = re.compile(r"(\bpassword\s*=\s*)('(?:[^'\\]|\\.)*'|\S+)", re.IGNORECASE)


def mask_password(conninfo: str) -> str:
    """Replace the password in a URL or key=value connection string with ``***``."""
    if "://" in conninfo:
        parts = urlsplit(conninfo)
        netloc = parts.netloc
        if "@" in netloc:
            userinfo, _, hostport = netloc.rpartition("@")
            if ":" in userinfo:
                user = userinfo.split(":", 1)[0]
                netloc = f"{user}:***@{hostport}"
        query = _mask_query_password(parts.query)
        return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))
    return _KV_PASSWORD.sub(r"\1***", conninfo)


def _mask_query_password(query: str) -> str:
    if not query:
        return query
    pieces = []
    for piece in query.split("&"):
        key, sep, _ = piece.partition("=")
        pieces.append(f"{key}{sep}***" if key.lower() == "password" and sep else piece)
    return "&".join(pieces)
