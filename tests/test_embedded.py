"""The embedded default: started on demand, shared by processes, data kept between runs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from lora_tracker import embedded, migrations

from .conftest import run_cli


@pytest.fixture
def home() -> Iterator[Path]:
    """The test's fresh data folder (see conftest); its embedded server is stopped after."""
    path = Path(os.environ["LORA_TRACKER_HOME"])
    try:
        yield path
    finally:
        embedded.stop(path)


def test_fresh_folder_init_and_persist(home: Path) -> None:
    """On a fresh data folder `init --examples` works; data survives a server restart."""
    done = run_cli("init", "--examples")
    assert done.returncode == 0, done.stderr
    assert f"embedded PostgreSQL in {home / 'pgdata'}" in done.stdout
    assert (home / "pgdata" / "PG_VERSION").exists()

    stopped = run_cli("db", "stop")
    assert stopped.returncode == 0 and "stopped" in stopped.stdout
    assert embedded.running_conninfo(home) is None

    again = run_cli("sql", "--json", "SELECT count(*) AS n FROM epoch_results")
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout) == [{"n": 13}]
    assert embedded.running_conninfo(home) is not None


def test_zero_setup_commands_migrate_on_first_use(home: Path) -> None:
    """With nothing configured, the first command starts the server and makes the schema."""
    done = run_cli("sql", "--json", "SELECT count(*) AS n FROM training_runs")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == [{"n": 0}]
    status = run_cli("db", "status", "--json")
    info = json.loads(status.stdout)
    assert info["source"] == "embedded"
    assert info["applied_migrations"] == [m.version for m in migrations.available()]
    assert info["server_version"].startswith("PostgreSQL ")


def test_concurrent_processes_share_one_server(home: Path) -> None:
    """Several processes starting at once on a cold folder share one server and schema."""
    code = (
        "from lora_tracker.db import Database\n"
        "import sys\n"
        "with Database() as db, db.transaction() as conn:\n"
        '    conn.execute("INSERT INTO training_runs (run_name) VALUES (%s)", (sys.argv[1],))\n'
    )
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", code, f"run_{i}"], stderr=subprocess.PIPE, text=True
        )
        for i in range(5)
    ]
    for proc in procs:
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
    done = run_cli(
        "sql",
        "--json",
        "SELECT (SELECT count(*) FROM training_runs) AS runs, "
        "(SELECT count(*) FROM schema_migrations) AS migrations",
    )
    assert json.loads(done.stdout) == [{"runs": 5, "migrations": len(migrations.available())}]
    postmasters = subprocess.run(
        ["pgrep", "-f", f"postgres.*-D {home / 'pgdata'}"], capture_output=True, text=True
    ).stdout.split()
    assert len(postmasters) == 1


def test_stale_postmaster_pid_is_recovered(home: Path) -> None:
    """A postmaster.pid left by a killed server does not stop the next command."""
    assert run_cli("init").returncode == 0
    info = embedded.read_postmaster_pid(embedded.pgdata_path(home))
    assert info is not None
    subprocess.run(["kill", "-9", str(info.pid)], check=True)
    # wait for the postmaster to go
    for _ in range(100):
        if embedded.read_postmaster_pid(embedded.pgdata_path(home)) is None:
            break
        time.sleep(0.05)
    done = run_cli("sql", "--json", "SELECT 1 AS one")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == [{"one": 1}]


def test_restart_within_one_process(home: Path) -> None:
    """A long-running process can start the server again after someone stopped it."""
    first = embedded.start(home)
    assert embedded.stop(home) is True
    assert embedded.running_conninfo(home) is None
    second = embedded.start(home)
    assert second == first
    assert embedded.running_conninfo(home) == second
