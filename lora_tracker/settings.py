"""Where the data lives: the database target and the local data folder.

The target is resolved in this order: an explicit URL (the CLI's ``--database-url``), the
``LORA_TRACKER_DATABASE_URL`` environment variable, else the embedded PostgreSQL server
kept in the data folder (``LORA_TRACKER_HOME``, default: the user data dir).
"""

from __future__ import annotations

import functools
import os
import re
from dataclasses import dataclass
from pathlib import Path

ENV_DATABASE_URL = "LORA_TRACKER_DATABASE_URL"
ENV_HOME = "LORA_TRACKER_HOME"
APP_NAME = "lora-tracker"


def this_host() -> str:
    """The name of the machine recording (a run's files are keyed by host and path)."""
    named = os.environ.get("LORA_TRACKER_HOST")
    if named:
        return named
    return _machine_name()


@functools.cache  # asked for every event
def _machine_name() -> str:
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

    @property
    def spool_tag(self) -> str:
        """Which database a spooled event is for: the embedded server of this data
        folder, or a URL's database name (a proxy or pooler in front of the same
        database, or a new password, still matches)."""
        if self.url is None:
            return "embedded"
        found = re.search(r"(?:^|\s)dbname\s*=\s*'?([^'\s]+)", self.url)
        if found:
            return f"url:{found.group(1)}"
        from urllib.parse import urlsplit

        shown = mask_password(self.url)  # (a password holding "/" is no path: not kept)
        try:
            path = urlsplit(shown).path if "://" in shown else ""
        except ValueError:  # a malformed URL: its connection fails and says why
            path = ""
        return f"url:{path.lstrip('/') or shown}"

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


# The password in every shape a connection string may take, well-formed or not (masking
# must never depend on the string parsing): the userinfo of a URL, even without "://" or
# with a broken host part, a "password=" query parameter, and a key=value "password=",
# quoted or not, even with its closing quote missing.
_URL_START = re.compile(r"^\s*[A-Za-z][A-Za-z0-9+.-]*:?//")  # "postgresql://", "postgres//"
# The password runs to the last "@": it may hold an unencoded "@", "/" or "?" (and an "@"
# in the query string only makes the mask longer than needed, never shorter).
_URL_USERINFO = re.compile(r"^(\s*[A-Za-z][A-Za-z0-9+.-]*:?/+[^:/@?#\s]*:)(.*)@", re.DOTALL)
_BARE_USERINFO = re.compile(r"^(\s*[^:/@?#=\s]*:)(.*)@", re.DOTALL)  # "user:pw@host", no scheme
# libpq's connection keywords: a token that starts with one and "=" ends a password that
# holds an unencoded "&" (URL) or a space (key=value); anything else is still the password.
_KEYWORD = (
    r"(?:application_name|channel_binding|client_encoding|connect_timeout|dbname|"
    r"fallback_application_name|gss\w*|host|hostaddr|keepalives\w*|krbsrvname|"
    r"load_balance_hosts|\w*_protocol_version|oauth_\w+|options|passfile|password|port|"
    r"replication|require_auth|requirepeer|scram_\w+|service|ssl\w*|"
    r"target_session_attrs|tcp_user_timeout|user)"
)
_SECRET_KEY = r"(?i:(?:ssl)?password|oauth_client_secret|scram_client_key|scram_server_key)"
_QUERY_PASSWORD = re.compile(rf"([?&]{_SECRET_KEY}=)((?:[^&]|&(?!{_KEYWORD}=))*)", re.DOTALL)
_KV_PASSWORD = re.compile(
    # quoted (maybe unterminated) or not, and on over spaces up to the next keyword
    rf"(\b{_SECRET_KEY}\s*=\s*)((?:'(?:[^'\\]|\\.)*(?:'\S*|$)|\S+)"
    rf"(?:\s+(?!{_KEYWORD}\s*=)\S+)*)",
    re.DOTALL,
)
_MASK = "***"


def _password_spans(conninfo: str) -> list[tuple[int, int]]:
    spans: list[tuple[int, int]] = []
    url_start = _URL_START.match(conninfo)
    if url_start:
        if url_start.group(0).strip().lower().startswith("postgres"):
            match = _URL_USERINFO.match(conninfo)
        else:  # not a URL to libpq ("user://..."): mask from the first ":" to the last "@"
            match = _BARE_USERINFO.match(conninfo)
        if match:
            spans.append(match.span(2))
        spans += [m.span(2) for m in _QUERY_PASSWORD.finditer(conninfo)]
    else:
        bare = _BARE_USERINFO.match(conninfo)
        if bare:
            spans.append(bare.span(2))
        spans += [m.span(2) for m in _KV_PASSWORD.finditer(conninfo)]
    merged: list[tuple[int, int]] = []
    for start, end in sorted(spans):
        if end <= start:
            continue
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(end, merged[-1][1]))
        else:
            merged.append((start, end))
    return merged


def mask_password(conninfo: str) -> str:
    """Replace the password in a URL or key=value connection string with ``***``.

    Works on malformed strings too (a missing ``:``, a bad ``%`` escape, an unclosed
    ``[``), since those are the ones that end up in error messages.
    """
    masked = conninfo
    for start, end in sorted(_password_spans(conninfo), reverse=True):
        masked = masked[:start] + _MASK + masked[end:]
    return masked


def passwords_in(conninfo: str) -> list[str]:
    """The password(s) a connection string holds, as written and percent-decoded."""
    from urllib.parse import unquote

    found: set[str] = set()
    for start, end in _password_spans(conninfo):
        raw = conninfo[start:end]
        found.add(raw)
        if raw.startswith("'"):
            found.add(raw.strip("'"))
        found.add(unquote(raw))
        # libpq ends a URL's password at its first "@" or "/": what follows it, it takes
        # for the host or the database and names in its errors
        found.update(raw[cut + 1 :] for cut, c in enumerate(raw) if c in "@/")
        found.update(re.split(r"[@/]", raw)[1:])
    return sorted((p for p in found if p), key=len, reverse=True)


def redact(text: str, conninfo: str) -> str:
    """``text`` (an error message) with the connection string and its password masked.

    libpq and psycopg quote the piece of a connection string they stumble on, which may be
    the password, part of it, or a piece holding it: in every quoted piece taken from the
    string, what overlaps the password is masked, and a quoted piece libpq rebuilt (not
    found in the string) is masked whole. The password is also masked anywhere else, as
    written or percent-decoded, when it is long enough not to be a common word.
    """
    spans = _password_spans(conninfo)
    if not spans:
        return text
    text = _mask_quoted_pieces(text, conninfo, spans)
    text = text.replace(conninfo, mask_password(conninfo))
    for secret in passwords_in(conninfo):
        if len(secret.strip()) >= 4:
            text = text.replace(secret, _MASK).replace(secret.strip(), _MASK)
    return text


def _mask_quoted_pieces(text: str, conninfo: str, spans: list[tuple[int, int]]) -> str:
    out: list[str] = []
    quoted_password = any('"' in conninfo[start:end] for start, end in spans)
    i = 0
    while i < len(text):
        if text[i] != '"':
            out.append(text[i])
            i += 1
            continue
        # The piece may itself hold '"' (a password can): take the longest quoted run that
        # is a piece of the connection string.
        closing = [j for j in range(len(text) - 1, i, -1) if text[j] == '"']
        end = next((j for j in closing if text[i + 1 : j] in conninfo), None)
        if end is not None and end != closing[0] and quoted_password:
            end = None  # a '"' of the password may have cut the piece short: all of it
            closing = closing[:1]
        if end is None:
            if not closing:
                out.append(text[i:])
                break
            end = min(closing)
            if end - i - 1 <= 1:  # a syntax character libpq names, such as "=" or "]"
                out.append(text[i : end + 1])
            else:  # rebuilt by libpq from pieces, so it may hold the password: all of it
                end = max(closing)
                out.append(f'"{_MASK}"')
        else:
            out.append(f'"{_mask_piece(text[i + 1 : end], conninfo, spans)}"')
        i = end + 1
    return "".join(out)


def _mask_piece(piece: str, conninfo: str, spans: list[tuple[int, int]]) -> str:
    """``piece`` (found in ``conninfo``) with what overlaps a password span masked."""
    at = conninfo.find(piece) if piece else -1
    while at != -1:
        end = at + len(piece)
        hits = [(max(a, at) - at, min(b, end) - at) for a, b in spans if a < end and b > at]
        if hits:
            for lo, hi in sorted(hits, reverse=True):
                piece = piece[:lo] + _MASK + piece[hi:]
            return piece
        at = conninfo.find(piece, at + 1)
    return piece
