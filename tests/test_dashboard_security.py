"""The dashboard server over plain HTTP (http.client): the write gate (token, Host, Origin,
read-only), what images it serves, and bad requests refused in one line, never a crash."""

from __future__ import annotations

import http.client
import json
import os
import re
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from lora_tracker import judging, runs
from lora_tracker.cli import cli
from lora_tracker.dashboard import server as server_module
from lora_tracker.dashboard import writes
from lora_tracker.dashboard.server import DashboardServer, make_server
from lora_tracker.db import Database
from lora_tracker.epochs import upsert_epoch
from lora_tracker.models import EpochFields
from lora_tracker.pg import Connection
from lora_tracker.settings import Target

from .kohya_sim import PNG

RUN = "SD15_PERFECT_Nov9"
ROUTE = "/api/test/visual"


def _set_visual(conn: Connection, body: dict[str, Any]) -> dict[str, Any]:
    """A write route as the judging view registers them: the library, validated."""
    scored = judging.score_epoch(
        conn, body["run"], int(body["epoch"]), EpochFields(visual_quality_score=body["visual"])
    )
    return {"visual": scored.epoch.visual_quality_score}


@pytest.fixture
def test_route(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(writes.WRITE_ROUTES, ROUTE, _set_visual)


class Served:
    """Plain HTTP requests to a dashboard listening on 127.0.0.1:port."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.host = f"127.0.0.1:{port}"

    def request(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, dict[str, str], bytes]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            conn.putrequest(method, path, skip_host=True, skip_accept_encoding=True)
            sent = {"Host": self.host, **(headers or {})}
            if body is not None:
                sent.setdefault("Content-Length", str(len(body)))
            for name, value in sent.items():
                conn.putheader(name, value)
            conn.endheaders(body)
            response = conn.getresponse()
            return response.status, dict(response.getheaders()), response.read()
        finally:
            conn.close()

    def token(self) -> str:
        status, _, page = self.request("GET", "/")
        assert status == 200
        found = re.search(rb'<meta name="lt-token" content="([^"]*)">', page)
        assert found is not None
        return found.group(1).decode()

    def post(self, body: Any, **headers: str) -> tuple[int, dict[str, Any]]:
        sent = {"Content-Type": "application/json", **headers}
        status, _, payload = self.request("POST", ROUTE, json.dumps(body).encode(), sent)
        return status, json.loads(payload)


@pytest.fixture
def serve(examples_url: str) -> Iterator[Any]:
    started: list[tuple[DashboardServer, threading.Thread]] = []

    def start(**options: Any) -> Served:
        home = Path(os.environ["LORA_TRACKER_HOME"])
        server = make_server(Target(examples_url, "--database-url", home), port=0, **options)
        thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1})
        thread.start()
        started.append((server, thread))
        return Served(int(server.server_address[1]))

    yield start
    for server, thread in started:
        server.shutdown()
        server.server_close()
        thread.join(5)


def _visual(url: str, epoch: int = 7) -> Any:
    with Database(url) as db, db.transaction() as conn:
        run = runs.get_run(conn, RUN)
        row = conn.execute(
            "SELECT visual_quality_score FROM epoch_results "
            "WHERE training_run_id = %s AND epoch_number = %s",
            (run.id, epoch),
        ).fetchone()
    assert row is not None
    return row["visual_quality_score"]


def test_writes_need_token_host_and_origin(serve: Any, examples_url: str, test_route: None) -> None:
    """A write without the token, with a wrong one, a foreign Host or a foreign Origin is
    403 and changes nothing; the page's own request goes through."""
    served = serve()
    token = served.token()
    assert len(token) >= 32
    before = _visual(examples_url)
    new = 3 if before != 3 else 4
    body = {"run": RUN, "epoch": 7, "visual": new}
    own = f"http://{served.host}"
    refused = [
        served.post(body),
        served.post(body, **{"X-LT-Token": token[:-1]}),
        served.post(body, **{"X-LT-Token": token, "Host": f"evil.example:{served.port}"}),
        served.post(body, **{"X-LT-Token": token, "Host": f"127.0.0.1:{served.port + 1}"}),
        served.post(body, **{"X-LT-Token": token, "Origin": "http://evil.example"}),
        served.post(body, **{"X-LT-Token": token, "Origin": "null"}),
        served.post(body, **{"X-LT-Token": token, "Origin": f"https://{served.host}"}),
    ]
    for status, payload in refused:
        assert status == 403, payload
        assert "\n" not in payload["error"]
    assert "token" in refused[0][1]["error"]
    assert _visual(examples_url) == before
    # the page's own write (same Host, same Origin, its token) is served
    status, payload = served.post(body, **{"X-LT-Token": token, "Origin": own})
    assert (status, payload) == (200, {"visual": new})
    assert _visual(examples_url) == new
    # localhost names the same server when it listens on 127.0.0.1
    status, payload = served.post(
        {**body, "visual": before},
        **{"X-LT-Token": token, "Host": f"localhost:{served.port}",
           "Origin": f"http://localhost:{served.port}"},
    )  # fmt: skip
    assert status == 200, payload
    assert _visual(examples_url) == before


def test_write_refusals_change_nothing(serve: Any, examples_url: str, test_route: None) -> None:
    """A value the rules refuse, an unrecorded epoch, a body that is not a JSON object, of
    another type or too large: a one-line error and nothing changed."""
    served = serve()
    auth = {"X-LT-Token": served.token()}
    before = _visual(examples_url)
    status, payload = served.post({"run": RUN, "epoch": 7, "visual": 11}, **auth)
    assert status == 400 and "visual_quality_score" in payload["error"]
    status, payload = served.post({"run": RUN, "epoch": 99, "visual": 5}, **auth)
    assert status == 404 and "99" in payload["error"]
    status, payload = served.post({"run": "no_such_run", "epoch": 1, "visual": 5}, **auth)
    assert status == 404
    status, payload = served.post([1, 2], **auth)
    assert status == 400 and payload == {"error": "the body must be a JSON object"}
    status, _, raw = served.request("POST", ROUTE, b"{not json", {**auth,
                                    "Content-Type": "application/json"})  # fmt: skip
    assert status == 400 and b"not valid JSON" in raw
    status, _, raw = served.request("POST", ROUTE, b"{}", {**auth, "Content-Type": "text/plain"})
    assert status == 415
    big = json.dumps({"run": RUN, "epoch": 7, "visual": 5, "pad": "x" * 70_000}).encode()
    status, _, raw = served.request("POST", ROUTE, big, {**auth,
                                    "Content-Type": "application/json"})  # fmt: skip
    assert status == 413
    status, _, raw = served.request("POST", "/api/nothing-here", b"{}", {**auth,
                                    "Content-Type": "application/json"})  # fmt: skip
    assert status == 404
    assert _visual(examples_url) == before


def test_read_only_server_has_no_write_route(
    serve: Any, examples_url: str, test_route: None
) -> None:
    """--read-only: the page carries no token and says writes are off; every POST is
    refused, whatever it carries."""
    served = serve(read_only=True)
    status, _, page = served.request("GET", "/")
    assert status == 200
    assert b'<meta name="lt-writes" content="off">' in page
    assert b'<meta name="lt-token" content="">' in page
    before = _visual(examples_url)
    for token in ("", "anything"):
        status, payload = served.post(
            {"run": RUN, "epoch": 7, "visual": 1}, **{"X-LT-Token": token}
        )
        assert status in (404, 405) and "read-only" in payload["error"]
    assert _visual(examples_url) == before


def test_given_token_is_entered_not_inlined(
    serve: Any, examples_url: str, test_route: None
) -> None:
    """--token VALUE: the page does not carry it (it asks); a write with it is served."""
    served = serve(token="correct-horse-battery")
    status, _, page = served.request("GET", "/")
    assert b'<meta name="lt-writes" content="ask">' in page
    assert b"correct-horse" not in page
    assert served.token() == ""
    status, _ = served.post({"run": RUN, "epoch": 7, "visual": 2}, **{"X-LT-Token": "wrong"})
    assert status == 403
    status, payload = served.post(
        {"run": RUN, "epoch": 7, "visual": 2}, **{"X-LT-Token": "correct-horse-battery"}
    )
    assert (status, payload) == (200, {"visual": 2})
    assert _visual(examples_url) == 2


def test_every_response_has_host_check_and_headers(serve: Any) -> None:
    """A foreign Host (DNS rebinding) is refused on reads too; every response, refusals
    included, carries nosniff and a Content-Security-Policy."""
    served = serve()
    for host in ("evil.example", f"evil.example:{served.port}", f"10.1.2.3:{served.port}", ""):
        status, headers, body = served.request("GET", "/api/data", headers={"Host": host})
        assert status == 403, host
        assert b"RUN" not in body and json.loads(body)["error"]
    for path in ("/", "/api/data", "/api/fingerprint", "/static/write.js", "/no-such"):
        status, headers, _ = served.request("GET", path)
        assert status == (404 if path == "/no-such" else 200)
        assert headers["X-Content-Type-Options"] == "nosniff"
        assert "default-src 'none'" in headers["Content-Security-Policy"]
    _, headers, _ = served.request("GET", "/")
    page_policy = headers["Content-Security-Policy"]
    assert "'unsafe-eval'" not in page_policy and "script-src 'self' 'sha256-" in page_policy
    assert "frame-ancestors 'none'" in page_policy


def _add_samples(url: str, paths: list[Path]) -> None:
    with Database(url) as db, db.transaction() as conn:
        run = runs.get_run(conn, RUN)
        upsert_epoch(conn, run.id, 7, EpochFields(sample_images=[str(p) for p in paths]))


SVG = (
    b'<svg xmlns="http://www.w3.org/2000/svg" onload="alert(1)">'
    b"<script>fetch('/api/data')</script></svg>"
)


def test_only_recorded_raster_images_are_served(
    serve: Any, examples_url: str, tmp_path: Path
) -> None:
    """A recorded PNG is served as image/png; a recorded SVG, an SVG named .png and an
    HTML file are not; a NUL in the path is a 400."""
    png = tmp_path / "e7.png"
    png.write_bytes(PNG)
    svg = tmp_path / "e7.svg"
    svg.write_bytes(SVG)
    disguised = tmp_path / "e7_disguised.png"
    disguised.write_bytes(SVG)
    page = tmp_path / "e7.html"
    page.write_bytes(b"<html><script>alert(1)</script></html>")
    _add_samples(examples_url, [png, svg, disguised, page])
    served = serve()

    def image(path: str) -> tuple[int, dict[str, str], bytes]:
        from urllib.parse import quote

        answer: tuple[int, dict[str, str], bytes] = served.request(
            "GET", "/api/image?path=" + quote(path)
        )
        return answer

    status, headers, body = image(str(png))
    assert (status, headers["Content-Type"], body) == (200, "image/png", PNG)
    assert "sandbox" in headers["Content-Security-Policy"]
    for path in (svg, disguised, page, tmp_path / "never-recorded.png"):
        status, headers, body = image(str(path))
        assert status == 404, path
        assert headers["Content-Type"] == "application/json"
        assert b"<svg" not in body
    status, _, body = image(str(png) + "\x00.svg")
    assert status == 400 and json.loads(body) == {"error": "not a valid image path"}
    status, _, body = served.request("GET", "/api/image?path=%00")
    assert status == 400


def _raw_get(port: int, target: bytes) -> tuple[int, bytes]:
    """A request line with bytes http.client would refuse to send (the server reads the
    line as Latin-1, where "\xb2" is "²", a digit to str.isdigit but not to int)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        raw.sendall(b"GET " + target + b" HTTP/1.0\r\nHost: 127.0.0.1:%d\r\n\r\n" % port)
        answer = b""
        while chunk := raw.recv(65536):
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    return int(head.split()[1]), body


def test_bad_run_ids_are_refused(serve: Any) -> None:
    """Run ids in non-ASCII digits, too long, or with a NUL: 404, never a crash; the
    server keeps serving."""
    served = serve()
    for path in ("/api/run/%D9%A3", "/api/run/%C2%B2", "/api/run/1%00", "/api/run/" + "9" * 30,
                 "/api/run/-1", "/api/run/1.5", "/api/run/%EF%BC%91"):  # fmt: skip
        status, _, body = served.request("GET", path)
        assert status in (400, 404), path
        assert "error" in json.loads(body)
    for raw in (b"/api/run/\xb2", b"/api/run/\xd9\xa3", b"/api/run/1\x00", b"/api/image?path=\x00"):
        status, body = _raw_get(served.port, raw)
        assert status in (400, 404), raw
        assert "error" in json.loads(body)
    status, _, body = served.request("GET", "/api/run/" + "9" * 18)
    assert status == 200 and json.loads(body) == {"epochs": [], "prompt_results": []}


def test_idle_connection_times_out(serve: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """A connection that never sends its request is closed by the server."""
    monkeypatch.setattr(server_module._Handler, "timeout", 0.5)
    served = serve()
    with socket.create_connection(("127.0.0.1", served.port), timeout=10) as idle:
        idle.sendall(b"GET / HTTP/1.1\r\n")  # and nothing more
        started = time.monotonic()
        assert idle.recv(1024) == b""  # closed by the server
        assert time.monotonic() - started < 5
    status, _, _ = served.request("GET", "/api/fingerprint")
    assert status == 200


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--host", "0.0.0.0"], "--host 0.0.0.0 makes the whole database readable"),
        (["--host", "192.168.1.10"], "add --read-only, or --token VALUE"),
        (["--read-only", "--token", "a-long-enough-token"], "exclude each other"),
        (["--token", "short"], "at least 12 characters"),
        (["--token", "correct horse battery"], "no spaces or accents"),
        (["--token", "mot-de-passe-été"], "no spaces or accents"),
    ],
)
def test_dashboard_refuses_unsafe_options(examples_url: str, args: list[str], message: str) -> None:
    """Listening beyond this machine needs --read-only or --token: one line, exit 2."""
    result = CliRunner().invoke(cli, ["--database-url", examples_url, "dashboard", *args])
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert len(result.output.strip().splitlines()) == 1


@pytest.mark.parametrize("text", ["\u00b2", "\u0663", "\uff11", "1\u00b2"])
def test_non_ascii_digits_are_not_numbers(examples_url: str, text: str) -> None:
    """Digits str.isdigit accepts but int refuses ("²") or reads ("٣" is 3): never an id,
    an epoch or a size; one line, never a traceback."""
    from lora_tracker import prompts
    from lora_tracker.capture.checkpoint_metadata import _resolution_text
    from lora_tracker.config_files import _whole
    from lora_tracker.errors import NotFound

    with Database(examples_url) as db, db.transaction() as conn:
        with pytest.raises(NotFound):
            runs.get_run(conn, text)
        with pytest.raises(NotFound):
            prompts.get_prompt(conn, text)
    assert _resolution_text(text) is None
    with pytest.raises(ValueError, match="whole number"):
        _whole(text)
    result = CliRunner().invoke(
        cli, ["--database-url", examples_url, "score", RUN, text, "--visual", "5"]
    )
    assert result.exit_code == 2 and "must be a whole number" in result.output
    assert len(result.output.strip().splitlines()) == 1
    result = CliRunner().invoke(cli, ["--database-url", examples_url, "show", text])
    assert result.exit_code == 1 and "Traceback" not in result.output


def test_dashboard_on_every_address_read_only(examples_url: str, tmp_path: Path) -> None:
    """`dashboard --host 0.0.0.0 --read-only`, as a real process: it warns that the whole
    database is readable, serves the page by address (no DNS name but the machine's own),
    and refuses every write."""
    import subprocess
    import sys

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    process = subprocess.Popen(
        [sys.executable, "-m", "lora_tracker", "--database-url", examples_url, "dashboard",
         "--host", "0.0.0.0", "--port", str(port), "--read-only"],
        stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True,
    )  # fmt: skip
    try:
        assert process.stderr is not None
        warning = process.stderr.readline()
        assert warning.startswith("Warning: listening on 0.0.0.0: anyone who can reach")
        assert "read the whole database" in warning
        assert "(read-only;" in process.stderr.readline()
        served = Served(port)
        status, _, page = served.request("GET", "/")
        assert status == 200 and b'<meta name="lt-writes" content="off">' in page
        status, _, _ = served.request("GET", "/", headers={"Host": f"rebound.example:{port}"})
        assert status == 403
        status, _, body = served.request(
            "POST", ROUTE, b"{}", {"Content-Type": "application/json", "X-LT-Token": "x"}
        )
        assert status == 404 and b"read-only" in body
    finally:
        process.terminate()
        process.wait(10)
