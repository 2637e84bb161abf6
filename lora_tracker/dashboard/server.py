"""The local web server behind `lora-tracker dashboard`.

GET: the page, Plotly's bundle, the data as JSON, one run's epochs, a fingerprint the page
polls to refresh, the judging view (``/judge``, its data and version), and images the
database knows of and their cached thumbnails (raster images only; never an arbitrary
path). POST: the write routes of ``writes.WRITE_ROUTES``, each in one transaction, once
``gate.Gate`` let the request through (none at all on a ``--read-only`` server). Bound to
127.0.0.1 unless told otherwise. Every request's Host header must name this server.
Database connections are kept between requests (a few idle ones); one the database closed
meanwhile (a restart) is replaced before use, and a read whose kept connection breaks under
it is read again on a new one, so a restart costs the user nothing.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import select
import threading
from collections.abc import Callable, Iterator
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from typing import Any, TypeVar, cast
from urllib.parse import parse_qs, urlsplit

from .. import epochs, prompts
from ..db import Database
from ..errors import (
    AlreadyExists,
    DatabaseUnavailable,
    LoraTrackerError,
    NotFound,
    SchemaNotInitialized,
)
from ..jsonable import to_jsonable
from ..pg import Connection
from ..settings import Target
from . import data, writes
from .gate import (
    CSP_NONE,
    MAX_BODY_BYTES,
    Gate,
    Refused,
    body_length,
    new_token,
    page_csp,
    parse_body,
)
from .judge import JUDGE_FILES, judge_file, render_judge_page
from .page import POLL_S, plotly_js, render_page, write_tags
from .rasters import HEAD_BYTES, raster_type
from .warm import ThumbnailWarmer

log = logging.getLogger(__name__)

REQUEST_TIMEOUT_S = 30.0  # an idle or trickling connection is closed after this long
MAX_IMAGE_BYTES = 64 * 1024 * 1024
MAX_PATH_CHARS = 4096
RUN_ID = re.compile(r"/api/run/([0-9]{1,18})")  # ASCII digits only ("٣".isdigit() is True)
RUN_REF_ID = re.compile(r"[0-9]{1,18}")
IDLE_CONNECTIONS = 6  # kept open between requests: a browser asks 6 at a time
T = TypeVar("T")


class DashboardServer(ThreadingHTTPServer):
    """Serves one database target; one connection per request thread.

    ``read_only``: no write route at all. ``token``: the token writes must carry, entered by
    the user in the page; None: a random one, carried by the page itself.
    """

    daemon_threads = True

    def __init__(
        self,
        address: tuple[str, int],
        target: Target,
        *,
        poll_s: float = POLL_S,
        read_only: bool = False,
        token: str | None = None,
    ) -> None:
        self._lock = threading.Lock()
        self._idle: list[Database] = []
        self._closing = False
        self.warmer: ThumbnailWarmer | None = None
        super().__init__(address, _Handler)  # a port in use: raises, after server_close()
        self.target = target
        self.warmer = ThumbnailWarmer(target.home)
        port = int(self.server_address[1])
        self.gate = Gate(
            address[0],
            port,
            token=None if read_only else (token or new_token()),
            token_in_page=token is None,
        )
        self.page = render_page(data=None, plotly=None, live=True, poll_s=poll_s,
                                writes=self.gate.writes, token=self.gate.page_token)  # fmt: skip
        self._csp: dict[str, str] = {}
        self.judge_page = render_judge_page(self.write_tags)
        self.write_js = (resources.files("lora_tracker.dashboard") / "write.js").read_bytes()
        self._plotly: bytes | None = None

    @contextlib.contextmanager
    def database(self) -> Iterator[Database]:
        """A connected Database, reused across requests: a page of thumbnails is dozens of
        requests, and a new PostgreSQL connection (and schema check) each cost more than
        the query. An idle one the server closed meanwhile (it restarted, or ended the
        session) is dropped before anything is sent on it, so a write never goes out on
        it. One that raised is closed, not kept (it may be broken)."""
        db, _pooled = self._checkout()
        try:
            yield db
        except BaseException:
            db.close()
            raise
        self._checkin(db)

    def read(self, fetch: Callable[[Connection], T]) -> T:
        """``fetch(conn)`` in one transaction, for a read only: when a pooled connection
        breaks under it (the server went away between the check and the query), it runs
        once more on a new connection. Reads change nothing, so running one twice is
        harmless; a write is never run again this way."""
        db, pooled = self._checkout()
        try:
            with db.transaction() as conn:
                found = fetch(conn)
        except DatabaseUnavailable as exc:
            db.close()
            if not pooled:
                raise
            log.info("dashboard: a kept connection broke (%s); reading again", exc)
            db = Database(target=self.target)
            try:
                with db.transaction() as conn:
                    found = fetch(conn)
            except BaseException:
                db.close()
                raise
        except BaseException:
            db.close()
            raise
        self._checkin(db)
        return found

    def _checkout(self) -> tuple[Database, bool]:
        """An idle connection that still looks alive (those that do not are closed), else
        a new one; and whether it was kept from an earlier request."""
        while True:
            with self._lock:
                db = self._idle.pop() if self._idle else None
            if db is None:
                return Database(target=self.target), False
            if _looks_alive(db):
                return db, True
            log.info("dashboard: dropped a kept database connection the server had closed")
            db.close()

    def _checkin(self, db: Database) -> None:
        with self._lock:
            if len(self._idle) < IDLE_CONNECTIONS and not self._closing:
                self._idle.append(db)
                return
        db.close()

    def warm_recent(self, limit: int = 2000) -> threading.Thread:
        """Make the thumbnails of the newest runs' images ahead, in the background (a judging
        view opened at once on a new run then finds them made); best effort."""

        def run() -> None:
            try:
                paths = self.read(lambda conn: data.recent_images(conn, limit))
            except Exception as exc:  # the page's own requests say what is wrong
                log.debug("no thumbnails made ahead: %s", exc)
                return
            if self.warmer is not None:
                self.warmer.warm(paths)

        thread = threading.Thread(target=run, name="lora-tracker-warm-recent", daemon=True)
        thread.start()
        return thread

    def server_close(self) -> None:
        super().server_close()
        if self.warmer is not None:
            self.warmer.close()
        with self._lock:
            self._closing = True
            idle, self._idle = self._idle, []
        for db in idle:
            db.close()

    @property
    def write_tags(self) -> str:
        """The <head> tags another page of this server includes to write (the write mode,
        the token when the page may carry it, static/write.js)."""
        return write_tags(self.gate.writes, self.gate.page_token)

    def csp_for(self, html: str) -> str:
        """The Content-Security-Policy of one of this server's HTML pages (its own inline
        scripts allowed by hash); computed once per page text."""
        with self._lock:
            policy = self._csp.get(html)
            if policy is None:
                if len(self._csp) >= 64:  # pages rendered per request: keep it bounded
                    self._csp.clear()
                policy = self._csp[html] = page_csp(html)
            return policy

    @property
    def plotly(self) -> bytes:
        with self._lock:
            if self._plotly is None:
                self._plotly = plotly_js().encode("utf-8")
            return self._plotly

    @property
    def url(self) -> str:
        host, port = cast(tuple[str, int], self.server_address[:2])
        host = f"[{host}]" if ":" in host else host
        return f"http://{host}:{port}/"


def _looks_alive(db: Database) -> bool:
    """Whether an idle connection may still be used, told without a round trip: between
    transactions the server sends nothing, so a socket with something to read means the
    server closed it or sent its last words (a restart, a shutdown, an ended session:
    FATAL 57P01, then EOF). The rare harmless message that could also be waiting (a
    changed server setting) costs a new connection, nothing else."""
    conn = db.connected
    if conn is None or conn.closed or conn.broken:
        return False
    try:
        if hasattr(select, "poll"):  # any descriptor number (select() stops at 1024)
            poller = select.poll()
            poller.register(conn.fileno(), select.POLLIN)
            return not poller.poll(0)  # readable, hung up or in error: not alive
        readable, _, _ = select.select([conn.fileno()], [], [], 0)  # Windows: sockets only
    except (OSError, ValueError):  # the socket is gone already
        return False
    return not readable


def _status_of(exc: LoraTrackerError) -> HTTPStatus:
    if isinstance(exc, NotFound):
        return HTTPStatus.NOT_FOUND
    if isinstance(exc, AlreadyExists):
        return HTTPStatus.CONFLICT
    if isinstance(exc, (DatabaseUnavailable, SchemaNotInitialized)):
        return HTTPStatus.SERVICE_UNAVAILABLE
    return HTTPStatus.BAD_REQUEST


class _Handler(BaseHTTPRequestHandler):
    server: DashboardServer
    timeout = REQUEST_TIMEOUT_S

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s - %s", self.address_string(), format % args)

    # -- reading -----------------------------------------------------------------------
    def do_GET(self) -> None:
        self._respond(self._get)

    def _get(self) -> None:
        self.server.gate.check_host(self.headers)
        parts = urlsplit(self.path)
        route = parts.path
        run = RUN_ID.fullmatch(route)
        if route in ("/", "/index.html"):
            self._html(self.server.page)
        elif route == "/static/plotly.min.js":
            self._send(self.server.plotly, "text/javascript; charset=utf-8", cache=True)
        elif route == "/static/write.js":
            self._send(self.server.write_js, "text/javascript; charset=utf-8")
        elif route == "/api/data":
            self._json(self._query(lambda conn: data.snapshot(conn, epochs_for=0)))
        elif route == "/api/fingerprint":
            self._send(self._query(data.fingerprint).encode(), "text/plain; charset=utf-8")
        elif run is not None:
            run_id = int(run.group(1))
            detail = self._query(lambda conn: {
                "epochs": epochs.epochs_of_runs(conn, [run_id], data.EPOCH_COLUMNS)[run_id],
                "prompt_results": prompts.results_of_runs(conn, [run_id])[run_id],
            })  # fmt: skip
            self._json(detail)
            if self.server.warmer is not None:  # its judging view's grid, made ahead
                self.server.warmer.warm(
                    [r["image_path"] for r in detail["prompt_results"]]
                    + [p for e in detail["epochs"] for p in e["sample_images"] or []]
                )
        elif route == "/api/image":
            self._image(parse_qs(parts.query).get("path", [""])[0])
        elif route == "/api/thumb":
            query = parse_qs(parts.query)
            self._thumbnail(query.get("path", [""])[0], query.get("size", ["256"])[0])
        elif route == "/judge" or route in JUDGE_FILES or route.startswith("/api/judge"):
            self._judge_get(route, parse_qs(parts.query).get("run", [""])[0])
        else:
            raise Refused(HTTPStatus.NOT_FOUND, "no such page")

    def _judge_get(self, route: str, ref: str) -> None:
        """The judging view's page and files, one run's data, and its version."""
        if route == "/judge":
            self._html(self.server.judge_page)
        elif route in JUDGE_FILES:
            name, content_type = JUDGE_FILES[route]
            self._send(judge_file(name), content_type)
        elif "\x00" in ref:
            raise Refused(HTTPStatus.BAD_REQUEST, "run: not a valid run name")
        elif route == "/api/judge":
            self._json(self._query(lambda conn: data.judging_view(conn, ref)))
        elif route == "/api/judge/version" and RUN_REF_ID.fullmatch(ref):
            version = self._query(lambda conn: data.judging_version(conn, int(ref)))
            self._send(version.encode(), "text/plain; charset=utf-8")
        elif route == "/api/judge/version":
            raise Refused(HTTPStatus.BAD_REQUEST, "run: a run id is required")
        else:
            raise Refused(HTTPStatus.NOT_FOUND, "no such page")

    def _query(self, fetch: Any) -> Any:
        return self.server.read(fetch)

    def _image(self, path: str) -> None:
        if "\x00" in path or len(path) > MAX_PATH_CHARS:
            raise Refused(HTTPStatus.BAD_REQUEST, "not a valid image path")
        if not path or not self._query(lambda conn: data.recorded_image(conn, path)):
            raise Refused(HTTPStatus.NOT_FOUND, "not a recorded image")
        try:
            with open(path, "rb") as handle:
                body = handle.read(MAX_IMAGE_BYTES + 1)
        except OSError:
            raise Refused(HTTPStatus.NOT_FOUND, "the image file is gone") from None
        mime = raster_type(body[:HEAD_BYTES])
        if mime is None or len(body) > MAX_IMAGE_BYTES:
            raise Refused(HTTPStatus.NOT_FOUND, "not a PNG, JPEG, WebP or GIF image")
        self._send(body, mime, cache=True)

    def _thumbnail(self, path: str, size: str) -> None:
        """A recorded image's thumbnail (WebP, made once with Pillow and cached under the
        data folder; found by the SHA-256 the database holds without reading the image),
        never the full file in a grid."""
        from ..thumbnails import THUMBNAIL_SIZES

        if "\x00" in path or len(path) > MAX_PATH_CHARS:
            raise Refused(HTTPStatus.BAD_REQUEST, "not a valid image path")
        if size not in {str(s) for s in THUMBNAIL_SIZES}:
            sizes = ", ".join(str(s) for s in THUMBNAIL_SIZES)
            raise Refused(HTTPStatus.BAD_REQUEST, f"size: one of {sizes}")
        sha256 = self._query(lambda conn: data.known_image(conn, path)) if path else None
        found = data.thumbnail(path, sha256, int(size)) if sha256 is not None else None
        if found is None:
            raise Refused(HTTPStatus.NOT_FOUND, "not a recorded, readable image")
        self._send(found[0], found[1], cache=True)

    # -- writing -----------------------------------------------------------------------
    def do_POST(self) -> None:
        self._respond(self._post)

    def _post(self) -> None:
        self.server.gate.check_write(self.headers)
        route = writes.WRITE_ROUTES.get(urlsplit(self.path).path)
        if route is None:
            raise Refused(HTTPStatus.NOT_FOUND, "no such write route")
        raw = self.rfile.read(body_length(self.headers))
        self._body_read = True
        body = parse_body(raw)
        with self.server.database() as db, db.transaction() as conn:
            result = route(conn, body)
        self._json(result)

    def _drain(self) -> None:
        """Read a refused write's (small) body, so closing the socket with unread bytes
        does not reset the connection before the client has read the refusal."""
        if self.command != "POST" or getattr(self, "_body_read", False):
            return
        raw = (self.headers.get("Content-Length") or "").strip()
        if re.fullmatch(r"[0-9]{1,12}", raw) and 0 < int(raw) <= MAX_BODY_BYTES:
            self.rfile.read(int(raw))

    # -- responses ---------------------------------------------------------------------
    def _respond(self, handle: Any) -> None:
        """Run a handler; every refusal or error becomes one line of JSON, never a
        traceback, and a failed write has changed nothing (its transaction rolled back)."""
        try:
            try:
                handle()
            except Refused as exc:
                self.close_connection = True
                self._drain()
                self._error(exc.status, exc.message)
            except LoraTrackerError as exc:
                self._error(_status_of(exc), str(exc))
            except (BrokenPipeError, ConnectionResetError, TimeoutError):
                raise  # the browser went away (a tab closed, a lazy image dropped): no error
            except Exception as exc:
                from pydantic import ValidationError

                from ..models import render_validation_error

                if isinstance(exc, ValidationError):
                    self._error(HTTPStatus.BAD_REQUEST, render_validation_error(exc))
                    return
                log.exception("dashboard: %s %s failed", self.command, self.path[:200])
                failure = f"internal error: {type(exc).__name__}"
                self._error(HTTPStatus.INTERNAL_SERVER_ERROR, failure)
        except (BrokenPipeError, ConnectionResetError, TimeoutError):
            self.close_connection = True

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        # the standard library's own refusals (bad request line, unknown method): JSON too
        self.close_connection = True
        with contextlib.suppress(BrokenPipeError, ConnectionResetError, TimeoutError):
            self._error(HTTPStatus(code), message or HTTPStatus(code).phrase)

    def _error(self, status: HTTPStatus, message: str) -> None:
        line = " ".join(message.split())
        body = json.dumps({"error": line}, ensure_ascii=True).encode()
        self._send(body, "application/json", status=status)

    def _html(self, html: str) -> None:
        """One of this server's pages, with its CSP (inline scripts by hash)."""
        self._send(html.encode("utf-8"), "text/html; charset=utf-8",
                   csp=self.server.csp_for(html))  # fmt: skip

    def _json(self, payload: Any) -> None:
        body = json.dumps(to_jsonable(payload), ensure_ascii=False).encode("utf-8")
        self._send(body, "application/json; charset=utf-8")

    def _send(
        self,
        body: bytes,
        content_type: str,
        *,
        status: int = HTTPStatus.OK,
        cache: bool = False,
        csp: str = CSP_NONE,
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "private, max-age=3600" if cache else "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Content-Security-Policy", csp)
        self.send_header("Referrer-Policy", "no-referrer")
        self.send_header("Cross-Origin-Resource-Policy", "same-origin")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)


def make_server(
    target: Target,
    host: str = "127.0.0.1",
    port: int = 8765,
    *,
    poll_s: float = POLL_S,
    read_only: bool = False,
    token: str | None = None,
) -> DashboardServer:
    """A dashboard server bound to host:port (port 0: any free port); the page checks for
    new data every ``poll_s`` seconds. ``read_only``: no write route. ``token``: writes need
    this token, which the user enters in the page (None: a random one the page carries)."""
    return DashboardServer((host, port), target, poll_s=poll_s, read_only=read_only, token=token)


def write_report(
    target: Target, *, epochs_for: int | None = 1000, image_budget: int = 25 * 1024 * 1024
) -> str:
    """The self-contained report: data, images (within a size budget) and Plotly inlined."""
    with Database(target=target) as db, db.transaction() as conn:
        snapshot = data.snapshot(conn, epochs_for=epochs_for)
    images: dict[str, str] = {}
    spent = 0
    paths = [p for epochs in snapshot["epochs"].values() for e in epochs
             for p in (e["sample_images"] or [])[:4]]  # fmt: skip
    paths += [r["image_path"] for results in snapshot["prompt_results"].values()
              for r in results if r["image_path"]]  # fmt: skip
    for path in dict.fromkeys(paths):
        if spent >= image_budget:
            break
        uri = data.image_data_uri(path, max_bytes=min(2 * 1024 * 1024, image_budget - spent))
        if uri is not None:
            images[path] = uri
            spent += len(uri)
    snapshot["images"] = images
    return render_page(data=snapshot, plotly=plotly_js(), live=False,
                       title="lora-tracker report")  # fmt: skip
