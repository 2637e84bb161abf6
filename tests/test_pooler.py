"""Through a transaction-mode pooler (PgBouncer, as Supabase's port 6543): no session state.

Each transaction may run on a different server connection, so nothing may rely on a prepared
statement, a session advisory lock or a session setting. `.ci/start-pgbouncer` starts
PgBouncer with ``pool_mode = transaction`` and 2 server connections in front of the
PostgreSQL 15 test server and prints the URL to put in LORA_TRACKER_TEST_PGBOUNCER_URL.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from lora_tracker import migrations
from lora_tracker.capture.delivery import EventDelivery
from lora_tracker.capture.events import observe_checkpoint
from lora_tracker.settings import Target

from .conftest import DatabaseFactory, rows, run_cli
from .kohya_sim import KohyaRun

PGBOUNCER_ENV = "LORA_TRACKER_TEST_PGBOUNCER_URL"


@pytest.fixture(scope="session")
def pgbouncer_url() -> str:
    url = os.environ.get(PGBOUNCER_ENV)
    if not url:
        if os.environ.get("CI"):
            pytest.fail(f"{PGBOUNCER_ENV} is not set: .ci/run must start PgBouncer")
        pytest.skip(f"{PGBOUNCER_ENV} not set (run .ci/start-pgbouncer)")
    return url


@pytest.fixture
def pg15_factory(pg15_admin_url: str, factories: dict[str, DatabaseFactory]) -> DatabaseFactory:
    return factories.setdefault(pg15_admin_url, DatabaseFactory(pg15_admin_url))


def pooled(pgbouncer_url: str, direct_url: str) -> str:
    """The URL of the same database as ``direct_url``, through the pooler."""
    params = conninfo_to_dict(pgbouncer_url)
    params["dbname"] = conninfo_to_dict(direct_url)["dbname"]
    return make_conninfo(**params)  # type: ignore[arg-type]


def start(*args: str, home: Path) -> subprocess.Popen[str]:
    env = {**os.environ, "LORA_TRACKER_HOME": str(home)}
    return subprocess.Popen(
        [sys.executable, "-m", "lora_tracker", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def finish(proc: subprocess.Popen[str]) -> str:
    out, err = proc.communicate(timeout=180)
    assert proc.returncode == 0, f"{proc.args!r}: {out}{err}"
    assert "Traceback" not in err, err
    return out


TRAINER = """
import sys, lora_tracker
run = lora_tracker.start_run("pooled_trainer", {"rank": 8}, database_url=sys.argv[1])
for epoch in range(1, 6):
    run.log_epoch(epoch, loss=1.0 / epoch)
run.finish()
assert run.flush(60)
"""


def test_concurrent_init_through_pooler(
    pgbouncer_url: str, pg15_factory: DatabaseFactory, tmp_path: Path
) -> None:
    """Three `init` at once through the pooler apply every migration exactly once."""
    direct = pg15_factory.create()
    url = pooled(pgbouncer_url, direct)
    procs = [start("--database-url", url, "init", home=tmp_path / f"h{i}") for i in range(3)]
    outputs = [finish(p) for p in procs]
    assert sum("Applied migrations" in out for out in outputs) >= 1
    versions = rows(direct, "SELECT version FROM schema_migrations ORDER BY 1")
    assert [r["version"] for r in versions] == [m.version for m in migrations.available()]
    # A session lock taken through the pooler may be released on another server connection
    # (a no-op there) and stay held on the first one, blocking every later migration.
    held = rows(
        direct,
        "SELECT count(*) AS n FROM pg_locks WHERE locktype = 'advisory' "
        "AND database = (SELECT oid FROM pg_database WHERE datname = current_database())",
    )
    assert held[0]["n"] == 0
    again = run_cli("--database-url", url, "init")
    assert again.returncode == 0 and "Schema is up to date" in again.stdout, again.stderr


def test_recorders_and_scorers_at_once_through_pooler(
    pgbouncer_url: str, pg15_factory: DatabaseFactory, tmp_path: Path
) -> None:
    """Recorders (library and `record` processes) and `score` processes sharing 2 server
    connections: every event lands exactly once and nothing is spooled."""
    direct = pg15_factory.create(template=pg15_factory.template("examples"))
    url = pooled(pgbouncer_url, direct)
    home = tmp_path / "home"

    library_runs = [
        KohyaRun(tmp_path / f"lib{i}", f"lib{i}", epochs=4, save_last_n=None) for i in range(3)
    ]
    process_runs = [
        KohyaRun(tmp_path / f"cli{i}", f"cli{i}", epochs=3, save_last_n=None) for i in range(3)
    ]
    watched = KohyaRun(tmp_path / "watched", "watched", epochs=3, save_last_n=None)
    for sim in [*library_runs, *process_runs, watched]:
        sim.run()

    failures: list[BaseException] = []
    deliveries: list[str] = []
    lock = threading.Lock()

    def record_one_by_one(sim: KohyaRun) -> None:
        delivery = EventDelivery(target=Target(url, "--database-url", home))
        try:
            events = [observe_checkpoint(sim.epoch_path(e)) for e in range(1, sim.epochs + 1)]
            for _ in range(2):  # the second pass is all duplicates: more statements per session
                for event in events:
                    outcome, _ = delivery.submit(event)
                    with lock:
                        deliveries.append(outcome)
        except BaseException as exc:  # reported below, in the test's thread
            failures.append(exc)
        finally:
            delivery.close()

    threads = [threading.Thread(target=record_one_by_one, args=(s,)) for s in library_runs]
    procs = [
        start("--database-url", url, "record", str(s.output_dir), home=home) for s in process_runs
    ]
    procs += [
        start(
            "--database-url",
            url,
            "score",
            "SD15_PERFECT_Nov9",
            str(epoch),
            "--visual",
            str(epoch),
            "--add",  # epochs 1-5 are new rows: concurrent inserts through the pooler
            home=home,
        )
        for epoch in range(1, 7)
    ]
    # what the kohya and transformers hooks do: the Python API from a training process
    procs.append(
        subprocess.Popen(
            [sys.executable, "-c", TRAINER, url],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "LORA_TRACKER_HOME": str(home)},
        )
    )
    procs.append(
        start("--database-url", url, "watch", "--once", str(watched.output_dir), home=home)
    )
    for thread in threads:
        thread.start()
    for proc in procs:
        finish(proc)
    for thread in threads:
        thread.join(180)
    assert not failures, failures

    assert deliveries.count("recorded") == 12 and deliveries.count("duplicate") == 12, deliveries
    files = rows(
        direct,
        "SELECT tr.run_name, c.path, count(*) OVER (PARTITION BY c.path) AS copies "
        "FROM checkpoints c JOIN training_runs tr ON tr.id = c.training_run_id",
    )
    expected = {
        str(s.epoch_path(e))
        for s in [*library_runs, *process_runs, watched]
        for e in range(1, s.epochs + 1)
    }
    assert {f["path"] for f in files} == expected
    assert all(f["copies"] == 1 for f in files)
    runs = rows(
        direct,
        "SELECT run_name, count(*) AS n FROM training_runs WHERE run_name LIKE 'lib%%' "
        "OR run_name LIKE 'cli%%' GROUP BY run_name",
    )
    assert len(runs) == 6 and all(r["n"] == 1 for r in runs)  # one run per training, dated
    assert {r["run_name"].split("_")[0] for r in runs} == {
        f"{p}{i}" for p in ("lib", "cli") for i in range(3)
    }
    scores = rows(
        direct,
        "SELECT epoch_number, visual_quality_score FROM epoch_results er "
        "JOIN training_runs tr ON tr.id = er.training_run_id "
        "WHERE run_name = 'SD15_PERFECT_Nov9' AND epoch_number <= 6 ORDER BY 1",
    )
    assert [(s["epoch_number"], s["visual_quality_score"]) for s in scores] == [
        (e, e) for e in range(1, 7)
    ]
    trained = rows(
        direct,
        "SELECT epoch_number, loss FROM epoch_results er JOIN training_runs tr "
        "ON tr.id = er.training_run_id WHERE run_name = 'pooled_trainer' ORDER BY 1",
    )
    assert [(t["epoch_number"], t["loss"]) for t in trained] == [(e, 1.0 / e) for e in range(1, 6)]
    spool = EventDelivery(target=Target(url, "--database-url", home)).spool
    assert spool.pending() == 0 and spool.rejected() == 0
