"""The read-only local web server behind `lora-tracker dashboard`.

GET only: the page, Plotly's bundle, the data as JSON, one run's epochs, a fingerprint the
page polls to refresh, and images the database knows of (sample images and prompt-result
images; never an arbitrary path). Bound to 127.0.0.1 unless told otherwise.
"""

from __future__ import annotations

import json
import logging
import mimetypes
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from .. import epochs, prompts
from ..db import Database
from ..errors import AmbiguousName, InvalidInput, LoraTrackerError, NotFound
from ..jsonable import to_jsonable
from ..settings import Target
from . import data
from .judge import JUDGE_FILES, judge_file
from .page import POLL_S, plotly_js, render_page
from .writes import WRITE_ROUTES

log = logging.getLogger(__name__)


class DashboardServer(ThreadingHTTPServer):
    """Serves one database target; one connection per request thread."""

    daemon_threads = True

    def __init__(self, address: tuple[str, int], target: Target, *, poll_s: float = POLL_S) -> None:
        super().__init__(address, _Handler)
        self.target = target
        self.page = render_page(data=None, plotly=None, live=True, poll_s=poll_s)
        self._plotly: bytes | None = None
        self._lock = threading.Lock()

    @property
    def plotly(self) -> bytes:
        with self._lock:
            if self._plotly is None:
                self._plotly = plotly_js().encode("utf-8")
            return self._plotly

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host!s}:{port}/"


class _Handler(BaseHTTPRequestHandler):
    server: DashboardServer

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s - %s", self.address_string(), format % args)

    def do_GET(self) -> None:
        parts = urlsplit(self.path)
        route = parts.path
        try:
            if route in ("/", "/index.html"):
                self._send(self.server.page.encode("utf-8"), "text/html; charset=utf-8")
            elif route == "/static/plotly.min.js":
                self._send(self.server.plotly, "application/javascript; charset=utf-8",
                           cache=True)  # fmt: skip
            elif route == "/api/data":
                self._json(self._query(lambda conn: data.snapshot(conn, epochs_for=0)))
            elif route == "/api/fingerprint":
                self._send(self._query(data.fingerprint).encode(), "text/plain; charset=utf-8")
            elif route.startswith("/api/run/") and route[len("/api/run/") :].isdigit():
                run_id = int(route[len("/api/run/") :])
                self._json(self._query(lambda conn: {
                    "epochs": epochs.epochs_of_runs(conn, [run_id], data.EPOCH_COLUMNS)[run_id],
                    "prompt_results": prompts.results_of_runs(conn, [run_id])[run_id],
                }))  # fmt: skip
            elif route in JUDGE_FILES or route.startswith("/api/judge"):
                self._judge_get(route, parse_qs(parts.query).get("run", [""])[0])
            elif route == "/api/image":
                self._image(parse_qs(parts.query).get("path", [""])[0])
            else:
                self.send_error(HTTPStatus.NOT_FOUND)
        except (NotFound, AmbiguousName, InvalidInput) as exc:
            self._send(json.dumps({"error": str(exc)}).encode(), "application/json",
                       status=HTTPStatus.NOT_FOUND)  # fmt: skip
        except LoraTrackerError as exc:
            self._send(json.dumps({"error": str(exc)}).encode(), "application/json",
                       status=HTTPStatus.SERVICE_UNAVAILABLE)  # fmt: skip
        except (BrokenPipeError, ConnectionResetError):
            pass

    def do_POST(self) -> None:  # stand-in until the write gate (issue 13a) lands
        route = WRITE_ROUTES.get(urlsplit(self.path).path)
        if route is None:
            self.send_error(HTTPStatus.NOT_FOUND)
            return
        try:
            length = int(self.headers.get("Content-Length") or 0)
            body = json.loads(self.rfile.read(length) or b"{}")
            if not isinstance(body, dict):
                raise InvalidInput("the request body must be a JSON object")
            self._json(self._query(lambda conn: route(conn, body)))
        except ValueError:
            self._send(b'{"error": "the request body is not JSON"}', "application/json",
                       status=HTTPStatus.BAD_REQUEST)  # fmt: skip
        except (NotFound, AmbiguousName, InvalidInput) as exc:
            self._send(json.dumps({"error": str(exc)}).encode(), "application/json",
                       status=HTTPStatus.BAD_REQUEST)  # fmt: skip
        except LoraTrackerError as exc:
            self._send(json.dumps({"error": str(exc)}).encode(), "application/json",
                       status=HTTPStatus.SERVICE_UNAVAILABLE)  # fmt: skip

    def _judge_get(self, route: str, ref: str) -> None:
        """The judging view's page and files, one run's data, and its version."""
        if route in JUDGE_FILES:
            name, content_type = JUDGE_FILES[route]
            self._send(judge_file(name), content_type)
        elif route == "/api/judge":
            self._json(self._query(lambda conn: data.judging_view(conn, ref)))
        elif route == "/api/judge/version" and ref.isascii() and ref.isdigit():
            version = self._query(lambda conn: data.judging_version(conn, int(ref)))
            self._send(version.encode(), "text/plain; charset=utf-8")
        elif route == "/api/judge/version":
            self.send_error(HTTPStatus.BAD_REQUEST, "run: a run id is required")
        else:
            self.send_error(HTTPStatus.NOT_FOUND)

    def _query(self, fetch: Any) -> Any:
        with Database(target=self.server.target) as db, db.transaction() as conn:
            return fetch(conn)

    def _json(self, payload: Any) -> None:
        body = json.dumps(to_jsonable(payload), ensure_ascii=False).encode("utf-8")
        self._send(body, "application/json; charset=utf-8")

    def _image(self, path: str) -> None:
        if not path or not self._query(lambda conn: data.recorded_image(conn, path)):
            self.send_error(HTTPStatus.NOT_FOUND, "not a recorded image")
            return
        mime = mimetypes.guess_type(path)[0] or "application/octet-stream"
        if not mime.startswith("image/"):
            self.send_error(HTTPStatus.NOT_FOUND, "not an image")
            return
        try:
            with open(path, "rb") as handle:
                body = handle.read()
        except OSError:
            self.send_error(HTTPStatus.NOT_FOUND, "image file is gone")
            return
        self._send(body, mime, cache=True)

    def _send(
        self, body: bytes, content_type: str, *, status: int = HTTPStatus.OK, cache: bool = False
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "max-age=3600" if cache else "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.end_headers()
        self.wfile.write(body)


def make_server(
    target: Target, host: str = "127.0.0.1", port: int = 8765, *, poll_s: float = POLL_S
) -> DashboardServer:
    """A dashboard server bound to host:port (port 0: any free port); the page checks for
    new data every ``poll_s`` seconds."""
    return DashboardServer((host, port), target, poll_s=poll_s)


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
