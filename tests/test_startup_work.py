"""What a command does before its own work: the schema check at connect is one query when
the schema is current (and still tells a blank or outdated database apart), and a process
that never spools does not load the spool's file lock."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg.rows import dict_row

from lora_tracker import migrations
from lora_tracker.db import Database
from lora_tracker.errors import SchemaNotInitialized
from lora_tracker.settings import Target

ROOT = Path(__file__).resolve().parent.parent


def _statements_at_connect(url: str, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    sent: list[str] = []
    original = psycopg.Connection.execute

    def execute(self: Any, query: Any, *args: Any, **kwargs: Any) -> Any:
        sent.append(str(query))
        return original(self, query, *args, **kwargs)

    monkeypatch.setattr(psycopg.Connection, "execute", execute)
    with Database(target=Target(url, "--database-url", ROOT)) as db:
        db.connect()
    monkeypatch.undo()
    return sent


@pytest.mark.both_servers
def test_schema_check_is_one_query_when_current(
    db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    sent = _statements_at_connect(db_url, monkeypatch)
    assert len(sent) == 1 and "schema_migrations" in sent[0]
    assert migrations.available_versions() == tuple(m.version for m in migrations.available())


@pytest.mark.both_servers
def test_schema_check_still_tells_blank_and_outdated_apart(blank_url: str) -> None:
    with pytest.raises(SchemaNotInitialized, match="has no lora-tracker schema"):
        Database(target=Target(blank_url, "--database-url", ROOT)).connect()
    with psycopg.connect(blank_url, autocommit=True, row_factory=dict_row) as conn:
        migrations.migrate(conn)
        last = migrations.available_versions()[-1]
        conn.execute("DELETE FROM schema_migrations WHERE version = %s", (last,))
    with pytest.raises(SchemaNotInitialized, match=f"lacks migrations {last}"):
        Database(target=Target(blank_url, "--database-url", ROOT)).connect()


def test_spool_loads_its_file_lock_only_to_write(tmp_path: Path) -> None:
    script = (
        "import sys\n"
        "from pathlib import Path\n"
        "from lora_tracker.spool import Spool\n"
        "spool = Spool(Path(sys.argv[1]))\n"
        "print(spool.pending(), spool.replay(lambda line: None).applied,\n"
        "      'filelock' in sys.modules)\n"
        "spool.append('{}')\n"
        "print(spool.pending(), 'filelock' in sys.modules)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path / "spool")],
        capture_output=True, text=True, check=True, env={"PYTHONPATH": str(ROOT)},
    )  # fmt: skip
    assert done.stdout.split("\n")[:2] == ["0 0 False", "1 True"]


@pytest.mark.both_servers
def test_capture_into_a_schema_behind_says_not_ready(
    blank_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A shared database one migration behind this version answers, so capture says it is
    not ready (and what to run), not that it is unavailable; the file waits in the spool."""
    from lora_tracker.capture.delivery import EventDelivery
    from lora_tracker.capture.events import observe_checkpoint

    from .kohya_sim import checkpoint_bytes, sd15_metadata

    with psycopg.connect(blank_url, autocommit=True, row_factory=dict_row) as conn:
        migrations.migrate(conn)
        last = migrations.available_versions()[-1]
        conn.execute("DELETE FROM schema_migrations WHERE version = %s", (last,))
    path = tmp_path / "behind-000001.safetensors"
    meta = sd15_metadata("behind", 1, 1731146400.0) | {"ss_epoch": "1"}
    path.write_bytes(checkpoint_bytes(meta, 8, seed=1))
    delivery = EventDelivery(blank_url)
    try:
        outcome, _ = delivery.submit(observe_checkpoint(path))
    finally:
        delivery.close()
    assert outcome == "spooled"
    assert "database not ready, events go to the spool: " in caplog.text
    assert f"lacks migrations {last}: run `lora-tracker init`" in caplog.text
    assert "database unavailable" not in caplog.text


def test_a_backfill_of_plain_kohya_files_does_not_import_pydantic(
    tmp_path: Path, db_url: str
) -> None:
    """Issue 14: pydantic is a sixth of a `watch --once` of 500 files. Capture's events are
    plain dataclasses and its run fields' checks plain code, so a folder of kohya files,
    its samples and config, is recorded without it (it comes when a value needs it, or an
    event goes to the spool)."""
    from .kohya_sim import KohyaRun

    sim = KohyaRun(tmp_path / "out", epochs=3, save_last_n=None)
    sim.run()
    (tmp_path / "out" / "config_lora-20260101-120000.toml").write_text(
        'hub_token = "hf_x"\nnetwork_dim = 32\nlearning_rate = 1e-4\n'
    )
    script = (
        "import atexit, sys\n"
        "atexit.register(lambda: print('pydantic' in sys.modules, file=sys.stderr))\n"
        "from lora_tracker.cli import main\n"
        "sys.argv = ['lora-tracker', '--database-url', sys.argv[1], 'watch', '--once',"
        " sys.argv[2]]\n"
        "main()\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script, db_url, str(tmp_path / "out")],
        capture_output=True, text=True, env={"PYTHONPATH": str(ROOT),
                                             "LORA_TRACKER_HOME": str(tmp_path / "home")},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "3 recorded" in done.stderr and "6 sample images linked" in done.stderr
    assert done.stderr.rstrip().endswith("False"), done.stderr
    with psycopg.connect(db_url) as conn:
        found = conn.execute("SELECT network_dim, config::text FROM training_runs").fetchall()
    assert found[0][0] == 32 and "hf_x" not in found[0][1] and len(found) == 1
