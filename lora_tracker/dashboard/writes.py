"""The dashboard's write routes: URL path -> function, apart from the HTTP plumbing.

The server (``server.py``) serves a POST to a path found here only after `gate.Gate` let it
through (Host, Origin, token, a JSON object body of bounded size; never on a
``--read-only`` server). It then opens one transaction and calls the route with the
connection and the parsed body::

    def route(conn: Connection, body: dict[str, Any]) -> dict[str, Any]: ...

The route validates the body and changes the record only through the library (the same
functions as the CLI, e.g. `lora_tracker.judging`): no SQL and no rules here or in the
server. Its result is sent back as JSON (status 200). A refusal is raised, never returned:
`lora_tracker.errors.InvalidInput` (and the other `LoraTrackerError` s) or a pydantic
``ValidationError`` become a 400 (`NotFound`: 404, `AlreadyExists`: 409) with a one-line
``{"error": "..."}``, and the transaction is rolled back, so nothing changes.

Paths start with ``/api/``; the page posts to them with ``ltWrite.post(path, body)``
(``static/write.js``), which adds the token.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..pg import Connection

WriteRoute = Callable[[Connection, dict[str, Any]], dict[str, Any]]

WRITE_ROUTES: dict[str, WriteRoute] = {}
