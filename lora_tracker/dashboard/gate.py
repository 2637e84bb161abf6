"""The checks a dashboard request passes before it is served or may change anything.

Every request: its ``Host`` header must name the address the server listens on, so a web
page on another site that rebinds its own DNS name to 127.0.0.1 is refused (DNS rebinding).
A write (POST) also needs: a matching ``Origin`` when the browser sends one, the server's
token in the ``X-LT-Token`` header (the page carries it; never a cookie, so a foreign page
cannot make the browser send it), a JSON body of bounded size. Anything else is refused.

No HTTP plumbing here: the server hands in the headers and turns `Refused` into a response.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
import re
import secrets
import socket
from base64 import b64encode
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any, Protocol

TOKEN_HEADER = "X-LT-Token"
MAX_BODY_BYTES = 64 * 1024

# every response that is not the page itself: nothing in it may run or load anything
CSP_NONE = (
    "default-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'; sandbox"
)


class Headers(Protocol):
    """A request's headers (``http.client.HTTPMessage``, a dict)."""

    def get(self, name: str, /) -> str | None: ...


class Refused(Exception):
    """A request the server will not serve: an HTTP status and a one-line reason."""

    def __init__(self, status: HTTPStatus, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def new_token() -> str:
    """A per-server random token (the page carries it; it dies with the server)."""
    return secrets.token_urlsafe(32)


def is_loopback(host: str) -> bool:
    """Whether ``host`` (an address or ``localhost``) is this machine only."""
    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _is_wildcard(host: str) -> bool:
    try:
        return ipaddress.ip_address(host.strip("[]")).is_unspecified
    except ValueError:
        return False


def _ip_literal(name: str) -> bool:
    try:
        ipaddress.ip_address(name.strip("[]"))
    except ValueError:
        return False
    return True


def _split_host(value: str) -> tuple[str, int | None] | None:
    """``name[:port]`` or ``[v6][:port]`` -> (lower-case name, port or None); None if
    malformed."""
    value = value.strip().lower()
    match = re.fullmatch(r"(\[[0-9a-f:.]+\]|[a-z0-9._-]+)(?::([0-9]{1,5}))?", value)
    if match is None:
        return None
    port = int(match.group(2)) if match.group(2) else None
    return match.group(1), port


@dataclass
class Gate:
    """What this server accepts. ``token``: the token writes must carry (None: no writes,
    the server is read-only); ``token_in_page``: whether the page may carry it (a per-server
    random token on this machine) or the user must enter it (``--token VALUE``)."""

    bind_host: str
    port: int
    token: str | None
    token_in_page: bool = True
    names: set[str] = field(default_factory=set)

    def __post_init__(self) -> None:
        host = self.bind_host.strip("[]").lower()
        self.names = {host}
        if is_loopback(host):
            self.names |= {"localhost", "127.0.0.1", "::1"}
        elif _is_wildcard(host):
            # listening everywhere: the machine's own names, and any address literal (an
            # address cannot be rebound; only a DNS name can)
            self.names |= {"localhost", socket.gethostname().lower(), socket.getfqdn().lower()}

    @property
    def read_only(self) -> bool:
        return self.token is None

    @property
    def writes(self) -> str:
        """What the page is told: ``off`` (read-only), ``on`` (token in the page) or
        ``ask`` (the user enters the token)."""
        if self.token is None:
            return "off"
        return "on" if self.token_in_page else "ask"

    @property
    def page_token(self) -> str:
        """The token to inline into the page ("" when the user must enter it)."""
        return self.token if self.token is not None and self.token_in_page else ""

    def _host_allowed(self, value: str) -> bool:
        parsed = _split_host(value)
        if parsed is None:
            return False
        name, port = parsed
        if (port if port is not None else 80) != self.port:
            return False
        bare = name.strip("[]")
        if bare in self.names:
            return True
        return _is_wildcard(self.bind_host) and _ip_literal(bare)

    def check_host(self, headers: Headers) -> None:
        """Every request: the Host header names this server."""
        host = headers.get("Host")
        if not host or not self._host_allowed(host):
            raise Refused(
                HTTPStatus.FORBIDDEN,
                f"Host {host or '(none)'!r} is not this dashboard's address "
                f"({self.bind_host}:{self.port})",
            )

    def check_write(self, headers: Headers) -> None:
        """A write: Host, then Origin (when sent), then the token; `Refused` otherwise."""
        if self.token is None:
            raise Refused(HTTPStatus.NOT_FOUND, "this dashboard is read-only (--read-only)")
        self.check_host(headers)
        origin = headers.get("Origin")
        if origin is not None:
            scheme, _, rest = origin.partition("://")
            if scheme.lower() != "http" or not self._host_allowed(rest):
                raise Refused(HTTPStatus.FORBIDDEN, f"Origin {origin!r} is not this dashboard")
        given = headers.get(TOKEN_HEADER) or ""
        if not hmac.compare_digest(given.encode("utf-8", "replace"), self.token.encode("utf-8")):
            what = "missing" if not given else "wrong"
            raise Refused(HTTPStatus.FORBIDDEN, f"the write token ({TOKEN_HEADER}) is {what}")


def body_length(headers: Headers) -> int:
    """The declared body size of a write, checked before a byte of it is read."""
    content_type = (headers.get("Content-Type") or "").split(";")[0].strip().lower()
    if content_type != "application/json":
        raise Refused(HTTPStatus.UNSUPPORTED_MEDIA_TYPE, "a write must be application/json")
    raw = headers.get("Content-Length")
    if raw is None or not re.fullmatch(r"[0-9]{1,12}", raw.strip()):
        raise Refused(HTTPStatus.LENGTH_REQUIRED, "a write needs a Content-Length")
    length = int(raw)
    if length > MAX_BODY_BYTES:
        raise Refused(
            HTTPStatus.REQUEST_ENTITY_TOO_LARGE, f"a write is at most {MAX_BODY_BYTES} bytes"
        )
    return length


def parse_body(body: bytes) -> dict[str, Any]:
    """The JSON object of a write."""
    try:
        value = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise Refused(HTTPStatus.BAD_REQUEST, "the body is not valid JSON") from None
    if not isinstance(value, dict):
        raise Refused(HTTPStatus.BAD_REQUEST, "the body must be a JSON object")
    return value


_SCRIPT = re.compile(r"<script(\s[^>]*)?>(.*?)</script>", re.S | re.I)


def page_csp(html: str, *, served: bool = True) -> str:
    """The page's Content-Security-Policy: its own inline scripts (by hash) and scripts from
    its own origin; images from its origin or inlined; no plugin, frame, form or base.

    Styles allow 'unsafe-inline': Plotly writes <style> elements and style attributes as it
    draws (Chromium refuses them under a hash-only style-src). A style cannot run code;
    scripts, the part that matters, stay hash-only (no 'unsafe-inline', no 'unsafe-eval').
    ``served=False``: the report's policy, for a <meta> element of a file."""
    hashes = []
    for match in _SCRIPT.finditer(html):
        attrs, text = (match.group(1) or "").lower(), match.group(2)
        if "src=" in attrs or "application/json" in attrs:
            continue  # a file from this origin ('self'), or data that never runs
        digest = b64encode(hashlib.sha256(text.encode("utf-8")).digest()).decode()
        hashes.append(f"'sha256-{digest}'")
    if not served:  # the report: a file, in a <meta> (where frame-ancestors is an error)
        scripts = " ".join(dict.fromkeys(hashes))
        return (
            f"default-src 'none'; script-src {scripts}; style-src 'unsafe-inline'; "
            "img-src data:; base-uri 'none'; form-action 'none'"
        )
    scripts = " ".join(["'self'", *dict.fromkeys(hashes)])
    return (
        f"default-src 'none'; script-src {scripts}; style-src 'self' 'unsafe-inline'; "
        "img-src 'self' data:; connect-src 'self'; font-src 'self' data:; "
        "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    )
