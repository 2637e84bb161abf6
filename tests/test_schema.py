"""The schema: migrations, tables, views, constraints, RLS and the trigger, on both servers."""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import time
from typing import Any

import psycopg
import pytest
from psycopg.rows import dict_row

from lora_tracker import migrations
from lora_tracker.migrations import migrate

from .conftest import ROOT

# the schema, its migrations and RLS: what each server must hold
pytestmark = pytest.mark.both_servers

TABLES = {
    "training_runs",
    "epoch_results",
    "test_prompts",
    "prompt_test_results",
    "caption_versions",
}
VIEWS = {"best_training_runs", "production_ready_epochs", "training_comparison"}
# beyond the reference document: schema bookkeeping and automatic capture
OWN_TABLES = {
    "schema_migrations",
    "checkpoints",
    "applied_events",
    "stats_run_groups",
    "stats_epoch_flags",
    "stats_run_group_changes",
    "stats_epoch_flag_changes",
    "deleted_checkpoints",
    "deleted_runs",
}

# Every column the reference document names, by table.
REFERENCE_COLUMNS = {
    "training_runs": [
        "id",
        "run_name",
        "run_date",
        "status",
        "base_model",
        "model_type",
        "num_images",
        "caption_version",
        "resolution",
        "network_dim",
        "network_alpha",
        "checkpoint_file_size_mb",
        "overall_verdict",
        "quality_score",
        "production_ready",
        "best_epoch",
        "key_findings",
        "issues_found",
        "strengths",
        "recommended_for",
        "notes",
        "created_at",
        "updated_at",
    ],
    "epoch_results": [
        "id",
        "training_run_id",
        "epoch_number",
        "checkpoint_path",
        "checkpoint_file_size_mb",
        "test_output_dir",
        "visual_quality_score",
        "style_match_score",
        "prompt_adherence_score",
        "has_wrong_backgrounds",
        "has_random_pixels",
        "is_photorealistic",
        "verdict",
        "production_ready",
        "observations",
        "created_at",
        "updated_at",
    ],
    "caption_versions": [
        "id",
        "version_name",
        "includes_hex_codes",
        "includes_accessories",
        "includes_jewelry",
        "detail_level",
        "sample_caption",
        "used_in_training_runs",
        "created_at",
        "updated_at",
    ],
    "test_prompts": [
        "id",
        "prompt_text",
        "negative_prompt",
        "seed",
        "sampler",
        "steps",
        "cfg_scale",
        "category",
        "created_at",
        "updated_at",
    ],
    "prompt_test_results": [
        "id",
        "epoch_result_id",
        "test_prompt_id",
        "image_path",
        "score",
        "verdict",
        "notes",
        "created_at",
        "updated_at",
    ],
}

# What automatic capture needs, beyond the reference document.
CAPTURE_COLUMNS = {
    "training_runs": [
        "learning_rate",
        "unet_lr",
        "text_encoder_lr",
        "optimizer",
        "lr_scheduler",
        "seed",
        "num_epochs",
        "max_train_steps",
        "total_steps",
        "batch_size",
        "session_id",
        "host",
        "checkpoint_metadata",
        "config",
    ],
    "epoch_results": [
        "checkpoint_hash",
        "checkpoint_on_disk",
        "loss",
        "sample_images",
        "checkpoint_metadata",
        "global_step",
        "checkpoint_size_bytes",
    ],
}


def schema_fingerprint(conn: psycopg.Connection[Any]) -> list[tuple[Any, ...]]:
    """Everything that describes the schema, to compare two states."""
    cur = conn.cursor(row_factory=psycopg.rows.tuple_row)
    columns = cur.execute(
        "SELECT table_name, column_name, data_type, is_nullable, column_default "
        "FROM information_schema.columns WHERE table_schema = 'public' "
        "ORDER BY table_name, column_name"
    ).fetchall()
    constraints = cur.execute(
        "SELECT conrelid::regclass::text, conname, pg_get_constraintdef(oid) FROM pg_constraint "
        "WHERE connamespace = 'public'::regnamespace ORDER BY 1, 2"
    ).fetchall()
    indexes = cur.execute(
        "SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = 'public' ORDER BY 1"
    ).fetchall()
    views = cur.execute(
        "SELECT viewname, definition FROM pg_views WHERE schemaname = 'public' ORDER BY 1"
    ).fetchall()
    return [*columns, *constraints, *indexes, *views]


def columns_of(conn: psycopg.Connection[Any], table: str) -> set[str]:
    rows = conn.execute(
        "SELECT column_name FROM information_schema.columns "
        "WHERE table_schema = 'public' AND table_name = %s",
        (table,),
    ).fetchall()
    return {r["column_name"] for r in rows}


def test_migrations_apply_on_blank_database(blank_url: str) -> None:
    """A blank database gets every migration, each recorded once."""
    with psycopg.connect(blank_url, autocommit=True, row_factory=dict_row) as conn:
        assert migrations.is_blank(conn)
        applied = migrate(conn)
        assert applied == [m.version for m in migrations.available()]
        assert migrations.applied_versions(conn) == applied
        assert migrations.pending_versions(conn) == []


def test_second_migrate_changes_nothing(blank_url: str) -> None:
    """Running the migrations again applies nothing and leaves the schema identical."""
    with psycopg.connect(blank_url, autocommit=True, row_factory=dict_row) as conn:
        migrate(conn)
        before = schema_fingerprint(conn)
        assert migrate(conn) == []
        assert schema_fingerprint(conn) == before
        rows = conn.execute("SELECT count(*) AS n FROM schema_migrations").fetchone()
        assert rows is not None and rows["n"] == len(migrations.available())


def test_tables_and_views_exist(conn: psycopg.Connection[Any]) -> None:
    """The 5 tables and 3 views of the reference document exist."""
    tables = {
        r["table_name"]
        for r in conn.execute(
            "SELECT table_name FROM information_schema.tables "
            "WHERE table_schema = 'public' AND table_type = 'BASE TABLE'"
        ).fetchall()
    }
    views = {
        r["table_name"]
        for r in conn.execute(
            "SELECT table_name FROM information_schema.views WHERE table_schema = 'public'"
        ).fetchall()
    }
    assert tables == TABLES | OWN_TABLES
    assert views == VIEWS


@pytest.mark.parametrize("table", sorted(REFERENCE_COLUMNS))
def test_reference_columns_present(conn: psycopg.Connection[Any], table: str) -> None:
    """Every column the reference document names exists under its own name."""
    missing = set(REFERENCE_COLUMNS[table]) - columns_of(conn, table)
    assert not missing


@pytest.mark.parametrize("table", sorted(CAPTURE_COLUMNS))
def test_capture_columns_present(conn: psycopg.Connection[Any], table: str) -> None:
    """The columns automatic capture fills exist."""
    missing = set(CAPTURE_COLUMNS[table]) - columns_of(conn, table)
    assert not missing


def test_constraints(conn: psycopg.Connection[Any]) -> None:
    """CHECKs on ranges and enumerations, unique keys and foreign keys are in place."""
    rows = conn.execute(
        "SELECT conrelid::regclass::text AS tbl, contype, pg_get_constraintdef(oid) AS def "
        "FROM pg_constraint WHERE connamespace = 'public'::regnamespace"
    ).fetchall()
    defs = {(r["tbl"], r["contype"], r["def"]) for r in rows}
    text = "\n".join(f"{t} {c} {d}" for t, c, d in defs)
    for column in (
        "quality_score",
        "visual_quality_score",
        "style_match_score",
        "prompt_adherence_score",
    ):
        assert f"({column} >= 0) AND ({column} <= 10)" in text
    assert "overall_verdict = ANY" in text and "'pending'::text" in text
    assert "'very_detailed'::text" in text
    assert ("training_runs", "u", "UNIQUE (run_name)") in defs
    assert ("caption_versions", "u", "UNIQUE (version_name)") in defs
    assert ("epoch_results", "u", "UNIQUE (training_run_id, epoch_number)") in defs
    assert (
        "epoch_results",
        "f",
        "FOREIGN KEY (training_run_id) REFERENCES training_runs(id) ON DELETE CASCADE",
    ) in defs
    assert (
        "prompt_test_results",
        "f",
        "FOREIGN KEY (epoch_result_id) REFERENCES epoch_results(id) ON DELETE CASCADE",
    ) in defs


def test_row_level_security_enabled(conn: psycopg.Connection[Any]) -> None:
    """Every table has RLS on (and not forced, so the owner connection works)."""
    rows = conn.execute(
        "SELECT relname, relrowsecurity, relforcerowsecurity FROM pg_class "
        "WHERE relnamespace = 'public'::regnamespace AND relkind = 'r'"
    ).fetchall()
    by_name = {r["relname"]: r for r in rows}
    for table in TABLES | OWN_TABLES:
        assert by_name[table]["relrowsecurity"] is True, table
        assert by_name[table]["relforcerowsecurity"] is False, table


def test_views_are_security_invoker(conn: psycopg.Connection[Any]) -> None:
    """Views run with the caller's rights, so they cannot bypass RLS."""
    rows = conn.execute(
        "SELECT relname, reloptions FROM pg_class "
        "WHERE relnamespace = 'public'::regnamespace AND relkind = 'v'"
    ).fetchall()
    assert {r["relname"] for r in rows} == VIEWS
    for r in rows:
        assert "security_invoker=true" in (r["reloptions"] or []), r["relname"]


def test_rls_hides_rows_from_other_roles(examples_url: str) -> None:
    """A role without a policy (Supabase's anon) sees no rows, through tables or views."""
    with psycopg.connect(examples_url, autocommit=True, row_factory=dict_row) as conn:
        owner = conn.execute("SELECT current_user AS u").fetchone()
        assert owner is not None
        role = f"lt_anon_{int(time.time() * 1000) % 10**9}"
        try:
            conn.execute(
                psycopg.sql.SQL("CREATE ROLE {} NOLOGIN").format(psycopg.sql.Identifier(role))
            )
        except psycopg.errors.InsufficientPrivilege:
            pytest.skip("this role may not create roles")
        try:
            conn.execute(
                psycopg.sql.SQL("GRANT SELECT ON ALL TABLES IN SCHEMA public TO {}").format(
                    psycopg.sql.Identifier(role)
                )
            )
            conn.execute(
                psycopg.sql.SQL("GRANT {} TO {}").format(
                    psycopg.sql.Identifier(role), psycopg.sql.Identifier(owner["u"])
                )
            )
            with conn.transaction():
                conn.execute(
                    psycopg.sql.SQL("SET LOCAL ROLE {}").format(psycopg.sql.Identifier(role))
                )
                n_table = conn.execute("SELECT count(*) AS n FROM training_runs").fetchone()
                n_view = conn.execute("SELECT count(*) AS n FROM training_comparison").fetchone()
            assert n_table is not None and n_table["n"] == 0
            assert n_view is not None and n_view["n"] == 0
            owner_count = conn.execute("SELECT count(*) AS n FROM training_runs").fetchone()
            assert owner_count is not None and owner_count["n"] == 3
        finally:
            conn.execute(psycopg.sql.SQL("DROP OWNED BY {}").format(psycopg.sql.Identifier(role)))
            conn.execute(psycopg.sql.SQL("DROP ROLE {}").format(psycopg.sql.Identifier(role)))


def test_updated_at_trigger(examples_conn: psycopg.Connection[Any]) -> None:
    """An UPDATE moves updated_at forward on runs and epochs; created_at stays."""
    conn = examples_conn
    before = conn.execute(
        "SELECT created_at, updated_at FROM training_runs WHERE run_name = 'SD15_PERFECT_Nov9'"
    ).fetchone()
    conn.execute("UPDATE training_runs SET notes = 'x' WHERE run_name = 'SD15_PERFECT_Nov9'")
    after = conn.execute(
        "SELECT created_at, updated_at FROM training_runs WHERE run_name = 'SD15_PERFECT_Nov9'"
    ).fetchone()
    assert before is not None and after is not None
    assert after["created_at"] == before["created_at"]
    assert after["updated_at"] > before["updated_at"]
    epoch_before = conn.execute("SELECT max(updated_at) AS t FROM epoch_results").fetchone()
    conn.execute("UPDATE epoch_results SET observations = 'y' WHERE epoch_number = 7")
    epoch_after = conn.execute("SELECT max(updated_at) AS t FROM epoch_results").fetchone()
    assert epoch_before is not None and epoch_after is not None
    assert epoch_after["t"] > epoch_before["t"]


def test_indexes_for_lookups(conn: psycopg.Connection[Any]) -> None:
    """Indexes exist for the lookups the CLI makes."""
    names = {
        r["indexname"]
        for r in conn.execute("SELECT indexname FROM pg_indexes WHERE schemaname = 'public'")
    }
    for index in (
        "training_runs_run_date_idx",
        "training_runs_model_type_idx",
        "training_runs_session_uq",
        "epoch_results_checkpoint_path_idx",
        "training_runs_run_name_pattern_idx",
    ):
        assert index in names


@pytest.mark.skipif(shutil.which("psql") is None, reason="needs the psql client")
def test_sql_files_run_by_hand_with_psql(blank_url: str) -> None:
    """`psql -1 -f` applies the same files, and `init` afterwards has nothing to do."""
    for name in [*sorted(p.name for p in (ROOT / "sql").glob("0*.sql")), "example_data.sql"]:
        done = subprocess.run(
            [
                "psql",
                blank_url,
                "-v",
                "ON_ERROR_STOP=1",
                "-q",
                "-1",
                "-f",
                str(ROOT / "sql" / name),
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0, done.stderr
    with psycopg.connect(blank_url, autocommit=True, row_factory=dict_row) as conn:
        assert migrations.pending_versions(conn) == []
        assert migrate(conn) == []
        n = conn.execute("SELECT count(*) AS n FROM epoch_results").fetchone()
        assert n is not None and n["n"] == 13


def test_failed_migration_leaves_nothing(blank_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A migration that fails part-way is rolled back whole, its version not recorded."""
    from lora_tracker.errors import MigrationError

    good = migrations.available()
    broken = migrations.Migration(
        "9999", "broken", "CREATE TABLE half_made (id int); SELECT no_such_function();"
    )
    monkeypatch.setattr(migrations, "available", lambda: (*good, broken))
    with psycopg.connect(blank_url, autocommit=True, row_factory=dict_row) as conn:
        with pytest.raises(MigrationError, match="9999_broken"):
            migrate(conn)
        assert "9999" not in migrations.applied_versions(conn)
        assert conn.execute("SELECT to_regclass('half_made') AS t").fetchone() == {"t": None}
        # the good ones before it were kept
        assert migrations.applied_versions(conn) == [m.version for m in good]


SUPABASE_API_ROLES = ("anon", "authenticated")


def _as_role(conn: psycopg.Connection[Any], role: str, statement: str) -> int:
    """Run one statement as ``role`` in a transaction that is rolled back; its row count."""
    with conn.transaction(force_rollback=True):
        conn.execute(psycopg.sql.SQL("SET LOCAL ROLE {}").format(psycopg.sql.Identifier(role)))
        return conn.execute(statement).rowcount


def test_supabase_api_roles_can_change_nothing(
    pg15_admin_url: str, factories: dict[str, Any]
) -> None:
    """With Supabase's default grants, anon and authenticated can read, write, truncate,
    trigger and alter nothing (migration 0004 revokes what row level security misses)."""
    from .conftest import DatabaseFactory

    factory = factories.setdefault(pg15_admin_url, DatabaseFactory(pg15_admin_url))
    url = factory.create()
    ident = psycopg.sql.Identifier
    with psycopg.connect(url, autocommit=True, row_factory=dict_row) as conn:
        owner = conn.execute("SELECT current_user AS u").fetchone()
        assert owner is not None
        # As a Supabase project is set up (supabase/postgres's role setup): the API roles,
        # the owner a member of them, and ALL on every new table, sequence and function.
        # Roles are global to the server: created once, kept for other runs.
        for role in SUPABASE_API_ROLES:
            # (a concurrent run creating it at the same moment fails on the unique index)
            with contextlib.suppress(
                psycopg.errors.DuplicateObject, psycopg.errors.UniqueViolation
            ):
                conn.execute(
                    psycopg.sql.SQL("CREATE ROLE {} NOLOGIN NOINHERIT").format(ident(role))
                )
            conn.execute(psycopg.sql.SQL("GRANT {} TO {}").format(ident(role), ident(owner["u"])))
        conn.execute("GRANT USAGE ON SCHEMA public TO anon, authenticated")
        for kind in ("TABLES", "SEQUENCES", "FUNCTIONS"):
            conn.execute(
                f"ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT ALL ON {kind} "
                "TO anon, authenticated"
            )
        migrate(conn)
        migrations.load_examples(conn)

        # Every table and view the migrations made, so a later migration's new table that
        # forgets the same revoke fails here.
        relations = [
            r["relname"]
            for r in conn.execute(
                "SELECT relname FROM pg_class WHERE relnamespace = 'public'::regnamespace "
                "AND relkind IN ('r', 'v', 'p') ORDER BY relname"
            ).fetchall()
        ]
        assert set(relations) >= TABLES | OWN_TABLES | VIEWS
        for role in SUPABASE_API_ROLES:
            for relation in relations:
                granted = {
                    right: conn.execute(
                        "SELECT has_table_privilege(%s, %s, %s) AS ok", (role, relation, right)
                    ).fetchone()["ok"]  # type: ignore[index]
                    for right in ("SELECT", "INSERT", "TRUNCATE", "TRIGGER", "REFERENCES")
                }
                # Supabase's grants stay (RLS guards them); the three RLS ignores are gone.
                assert granted == {
                    "SELECT": True,
                    "INSERT": True,
                    "TRUNCATE": False,
                    "TRIGGER": False,
                    "REFERENCES": False,
                }, (role, relation)

            assert _as_role(conn, role, "SELECT * FROM training_runs") == 0
            assert _as_role(conn, role, "SELECT * FROM training_comparison") == 0
            assert _as_role(conn, role, "UPDATE training_runs SET notes = 'x'") == 0
            assert _as_role(conn, role, "DELETE FROM epoch_results") == 0
            refused = [
                "INSERT INTO training_runs (run_name) VALUES ('intruder')",
                "TRUNCATE training_runs CASCADE",
                "TRUNCATE schema_migrations",
                "ALTER TABLE training_runs DISABLE ROW LEVEL SECURITY",
                "ALTER TABLE training_runs ADD COLUMN intruder int",
                "DROP TABLE applied_events",
                "CREATE TRIGGER intruder BEFORE DELETE ON training_runs "
                "FOR EACH ROW EXECUTE FUNCTION set_updated_at()",
                "CREATE TABLE intruder (id int REFERENCES training_runs (id))",
            ]
            for statement in refused:
                with pytest.raises(psycopg.errors.InsufficientPrivilege):
                    _as_role(conn, role, statement)

        # The same check passes nothing it should not: given TRUNCATE back, anon can truncate.
        conn.execute("GRANT TRUNCATE ON ALL TABLES IN SCHEMA public TO anon")
        _as_role(conn, "anon", "TRUNCATE training_runs CASCADE")  # no error; rolled back
        conn.execute("REVOKE TRUNCATE ON ALL TABLES IN SCHEMA public FROM anon")
        left = conn.execute("SELECT count(*) AS n FROM training_runs").fetchone()
        assert left is not None and left["n"] == 3


def test_migration_waiting_for_another_applies_nothing_twice(blank_url: str) -> None:
    """A migration that waits on another process's lock sees what that one committed,
    though it looked at the blank catalog before: every file is applied exactly once."""
    import threading

    from lora_tracker.migrations import _ADVISORY_LOCK_KEY, _apply

    with (
        psycopg.connect(blank_url, autocommit=True, row_factory=dict_row) as other,
        psycopg.connect(blank_url, autocommit=True, row_factory=dict_row) as late,
    ):
        assert len(migrations.pending_versions(late)) == len(migrations.available())
        outcome: dict[str, Any] = {}

        def migrate_late() -> None:
            try:
                outcome["applied"] = migrate(late)
            except Exception as exc:  # reported below, in the test's thread
                outcome["error"] = exc

        waiter = threading.Thread(target=migrate_late)
        with other.transaction():  # another process in the middle of migrating
            other.execute("SELECT pg_advisory_xact_lock(%s)", (_ADVISORY_LOCK_KEY,))
            for migration in migrations.available():
                _apply(other, migration)
            waiter.start()
            time.sleep(1.0)
            assert waiter.is_alive()  # waiting for the lock, not applying
        waiter.join(30)
        assert outcome == {"applied": []}
        versions = late.execute("SELECT count(*) AS n FROM schema_migrations").fetchone()
        assert versions is not None and versions["n"] == len(migrations.available())
