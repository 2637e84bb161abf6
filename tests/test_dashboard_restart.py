"""The dashboard keeps a few database connections between requests; a database restart (or
sessions ended on the server) must cost its user nothing: no 503 for a read or a write on a
connection the server closed, and a write never applied twice nor run again blindly."""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import psycopg
import pytest
from click.testing import CliRunner

from lora_tracker import embedded
from lora_tracker.cli import cli
from lora_tracker.dashboard import server as server_module
from lora_tracker.dashboard.server import IDLE_CONNECTIONS, DashboardServer, make_server
from lora_tracker.db import Database
from lora_tracker.settings import Target, resolve_target

from .test_dashboard_security import RUN, Served

EPOCH_ROUTE = "/api/judge/epoch"
# the dashboard's own sessions (each Database names itself lora-tracker), this one left out
KEPT = """
SELECT count(*) AS n FROM pg_stat_activity
WHERE application_name = 'lora-tracker' AND datname = current_database()
  AND pid <> pg_backend_pid()
"""


@pytest.fixture
def dashboard() -> Iterator[Any]:
    started: list[tuple[DashboardServer, threading.Thread]] = []

    def start(target: Target) -> tuple[DashboardServer, Served]:
        server = make_server(target, port=0)
        thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1})
        thread.start()
        started.append((server, thread))
        return server, Served(int(server.server_address[1]))

    yield start
    for server, thread in started:
        server.shutdown()
        server.server_close()
        thread.join(5)


def fill_the_pool(served: Served, target: Target) -> int:
    """Many reads at once, as a browser asks for a page's images: the server keeps up to
    IDLE_CONNECTIONS connections open after them. Returns how many it kept."""
    with ThreadPoolExecutor(12) as pool:
        answers = list(pool.map(lambda _: served.request("GET", "/api/data")[0], range(24)))
    assert answers == [200] * 24
    with Database(target=target) as db, db.transaction() as conn:
        row = conn.execute(KEPT).fetchone()
    assert row is not None
    kept = int(row["n"])
    assert kept >= 2, kept  # (those closed may still be ending on the server)
    return kept


def sessions(target: Target) -> set[int]:
    """The server processes of the dashboard's open connections. Asked on a connection
    named otherwise: a Database's own session, closed, may still be ending on the server
    when asked next, and counted as the dashboard's (a new session under load)."""
    assert target.url is not None
    with psycopg.connect(target.url, application_name="lt-test-probe") as conn:
        found = conn.execute(KEPT.replace("count(*) AS n", "pid")).fetchall()
    return {row[0] for row in found}


def end_the_dashboards_sessions(target: Target) -> None:
    """What a restart does to them, without stopping a server others use: each ended
    session gets the server's FATAL message and its socket closed."""
    with Database(target=target) as db:
        with db.transaction() as conn:
            conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE application_name = 'lora-tracker' AND datname = current_database() "
                "AND pid <> pg_backend_pid()"
            )
        deadline = time.monotonic() + 10
        while True:  # pg_stat_activity is read once per transaction: one each time
            with db.transaction() as conn:
                row = conn.execute(KEPT).fetchone()
            if row is not None and not row["n"]:
                break
            assert time.monotonic() < deadline, "the sessions did not end"
            time.sleep(0.05)


def score(served: Served, token: str, value: int) -> tuple[int, dict[str, Any]]:
    body = {"run": RUN, "epoch": 7, "fields": {"visual_quality_score": value}}
    status, _, payload = served.request(
        "POST", EPOCH_ROUTE, json.dumps(body).encode(),
        {"Content-Type": "application/json", "X-LT-Token": token},
    )  # fmt: skip
    return status, json.loads(payload)


def visual(target: Target) -> Any:
    with Database(target=target) as db, db.transaction() as conn:
        row = conn.execute(
            "SELECT er.visual_quality_score FROM epoch_results er "
            "JOIN training_runs tr ON tr.id = er.training_run_id "
            "WHERE tr.run_name = %s AND er.epoch_number = 7",
            (RUN,),
        ).fetchone()
    assert row is not None
    return row["visual_quality_score"]


def test_embedded_server_restart_costs_nothing(dashboard: Any) -> None:
    """The embedded server stopped and started again under a dashboard that kept several
    connections: every read and the next write are answered as before, no 503."""
    home = Path(os.environ["LORA_TRACKER_HOME"])
    result = CliRunner().invoke(cli, ["init", "--examples"])
    assert result.exit_code == 0, result.output
    target = resolve_target(None)
    assert target.embedded
    try:
        _server, served = dashboard(target)
        token = served.token()
        fill_the_pool(served, target)
        assert embedded.stop(home) is True
        embedded.start(home)
        # more requests than connections kept: each kept one is met (and replaced) once
        for _ in range(IDLE_CONNECTIONS + 2):
            status, _, body = served.request("GET", "/api/data")
            assert status == 200, body
            status, _, body = served.request("GET", "/api/judge?run=" + RUN)
            assert status == 200, body
        fill_the_pool(served, target)
        assert embedded.stop(home) is True
        embedded.start(home)
        status, payload = score(served, token, 4)  # a write first, on a kept connection
        assert status == 200, payload
        assert visual(target) == 4
    finally:
        embedded.stop(home)


@pytest.mark.both_servers
def test_sessions_ended_by_the_server_cost_nothing(dashboard: Any, examples_url: str) -> None:
    """The dashboard's sessions ended on the server (as a restart ends them): a write on
    the next request goes out on a new connection, once; the reads after it are answered."""
    target = Target(examples_url, "--database-url", Path(os.environ["LORA_TRACKER_HOME"]))
    _server, served = dashboard(target)
    token = served.token()
    fill_the_pool(served, target)
    # a kept connection the server did not close is used again (the check costs nothing)
    before = sessions(target)
    for _ in range(10):
        assert served.request("GET", "/api/fingerprint")[0] == 200
    assert sessions(target) <= before
    end_the_dashboards_sessions(target)
    status, payload = score(served, token, 3)
    assert status == 200, payload
    assert payload["changes"][0]["after"] == 3 and visual(target) == 3
    for _ in range(IDLE_CONNECTIONS + 2):
        status, _, body = served.request("GET", "/api/data")
        assert status == 200, body


def test_a_connection_that_breaks_under_a_read_is_read_again(
    dashboard: Any, examples_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The check of a kept connection turned off, as if the server closed it just after the
    check: a read is answered all the same (run again on a new connection), but a write is
    not run again: it is refused (503) and nothing changed; sent again, it is saved."""
    monkeypatch.setattr(server_module, "_looks_alive", lambda db: True)
    target = Target(examples_url, "--database-url", Path(os.environ["LORA_TRACKER_HOME"]))
    _server, served = dashboard(target)
    token = served.token()
    before = visual(target)
    fill_the_pool(served, target)
    end_the_dashboards_sessions(target)
    status, payload = score(served, token, 9 if before != 9 else 8)
    assert status == 503 and payload["error"].startswith("database connection lost"), payload
    assert visual(target) == before
    status, _, body = served.request("GET", "/api/data")  # the next kept one: broken too
    assert status == 200, body
    for _ in range(IDLE_CONNECTIONS + 2):
        status, _, body = served.request("GET", "/api/judge?run=" + RUN)
        assert status == 200, body
    status, payload = score(served, token, 9 if before != 9 else 8)
    assert status == 200, payload
    assert visual(target) == (9 if before != 9 else 8)
