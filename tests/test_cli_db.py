"""`init`, `sql` and `db status` through the CLI, on a real database."""

from __future__ import annotations

import csv
import io
import json
import socket

import psycopg
import pytest
from click.testing import CliRunner
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from lora_tracker import migrations
from lora_tracker.cli import cli
from lora_tracker.settings import mask_password, resolve_target

ALL_VERSIONS = ", ".join(m.version for m in migrations.available())


def invoke(url: str, *args: str, input: str | None = None) -> tuple[int, str]:
    result = CliRunner().invoke(cli, ["--database-url", url, *args], input=input)
    return result.exit_code, result.output


@pytest.mark.both_servers
def test_init_then_init_again(blank_url: str) -> None:
    """`init` applies the schema; a second `init` says it is up to date and changes nothing."""
    code, out = invoke(blank_url, "init")
    assert code == 0 and f"Applied migrations {ALL_VERSIONS}" in out
    code, out = invoke(blank_url, "init", "--examples")
    assert code == 0 and "Schema is up to date" in out and "Example data loaded" in out
    code, out = invoke(blank_url, "init", "--examples")
    assert code == 0
    code, out = invoke(blank_url, "sql", "--json", "SELECT count(*) AS n FROM epoch_results")
    assert json.loads(out) == [{"n": 13}]


@pytest.mark.both_servers
def test_commands_refuse_an_uninitialised_remote(blank_url: str) -> None:
    """On a configured database without the schema, commands say to run init."""
    code, out = invoke(blank_url, "sql", "SELECT 1")
    assert code == 1
    assert "has no lora-tracker schema: run `lora-tracker init`" in out


def test_sql_table_output(examples_url: str) -> None:
    """The default output is a readable table with a row count."""
    code, out = invoke(
        examples_url,
        "sql",
        "SELECT run_name, quality_score, production_ready FROM training_runs ORDER BY id",
    )
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split() == ["run_name", "quality_score", "production_ready"]
    assert lines[2].split() == ["SD15_PERFECT_Nov9", "9", "yes"]
    assert lines[-1] == "(3 rows)"


def test_sql_json_output(examples_url: str) -> None:
    """--json prints an array of row objects with real JSON types."""
    code, out = invoke(
        examples_url,
        "sql",
        "--json",
        "SELECT run_name, network_alpha, issues_found, run_date FROM training_runs "
        "WHERE run_name = 'SD15_bespoke_baby_Nov7'",
    )
    assert code == 0
    assert json.loads(out) == [
        {
            "run_name": "SD15_bespoke_baby_Nov7",
            "network_alpha": 32,
            "issues_found": ["photorealistic babies", "pixel art style lost", "wrong backgrounds"],
            "run_date": "2025-11-07T09:00:00+00:00",
        }
    ]


def test_sql_csv_output(examples_url: str) -> None:
    """--csv prints a header and one line per row."""
    code, out = invoke(
        examples_url,
        "sql",
        "--csv",
        "SELECT run_name, production_ready, strengths FROM training_runs ORDER BY id",
    )
    assert code == 0
    rows = list(csv.DictReader(io.StringIO(out)))
    assert len(rows) == 3
    assert rows[0]["run_name"] == "SD15_PERFECT_Nov9"
    assert rows[0]["production_ready"] == "true"
    assert json.loads(rows[0]["strengths"])[0] == "clean pixel art"


def test_sql_from_stdin_and_status_lines(examples_url: str) -> None:
    """'-' reads the statement from stdin; a statement without rows prints its status, and
    that status is what happened: the SD15 runs changed, the SDXL run did not."""
    query = "SELECT run_name, model_type, notes FROM training_runs ORDER BY id"
    with psycopg.connect(examples_url) as conn:
        before = conn.execute(query).fetchall()
    code, out = invoke(
        examples_url,
        "sql",
        "-",
        input="UPDATE training_runs SET notes = 'x' WHERE model_type = 'SD15';\n",
    )
    assert code == 0 and out.strip() == "UPDATE 2"
    with psycopg.connect(examples_url) as conn:  # committed, seen from another connection
        after = conn.execute(query).fetchall()
    assert [model for _, model, _ in before] == ["SD15", "SD15", "SDXL"]
    assert all(notes != "x" for _, _, notes in before)
    assert after == [
        (name, model, "x" if model == "SD15" else notes) for name, model, notes in before
    ]


@pytest.mark.both_servers
def test_sql_errors(examples_url: str) -> None:
    """A syntax error is one line, exit 1; --json without rows is a usage error, exit 2."""
    code, out = invoke(examples_url, "sql", "SELEC 1")
    assert code == 1 and out == 'Error: syntax error at or near "SELEC"\n'
    code, out = invoke(examples_url, "sql", "--json", "UPDATE training_runs SET notes = notes")
    assert code == 2 and "--json needs a statement that returns rows" in out
    code, out = invoke(examples_url, "sql", "SELECT * FROM no_such_table")
    assert code == 1 and "no_such_table" in out


def _with_password(url: str, password: str) -> str:
    params = conninfo_to_dict(url)
    params["password"] = password
    return make_conninfo(**params)  # type: ignore[arg-type]


@pytest.mark.both_servers
def test_db_status_masks_password(examples_url: str) -> None:
    """`db status` shows target, server version, migrations and counts, never the password."""
    url = _with_password(examples_url, "s3cret-pw")
    code, out = invoke(url, "db", "status")
    assert code == 0, out
    assert "s3cret-pw" not in out
    assert "password=***" in out
    assert "server:      PostgreSQL 1" in out
    from lora_tracker.cli.db_commands import _versions

    assert f"applied {_versions([m.version for m in migrations.available()])}" in out
    assert "training_runs          3 rows" in out


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_database_down_is_one_line_and_masked() -> None:
    """An unreachable database gives one line, exit 1, the password masked."""
    url = f"postgresql://someone:hunter2@127.0.0.1:{_free_port()}/nowhere"
    for args in (["sql", "SELECT 1"], ["init"]):
        code, out = invoke(url, *args)
        assert code == 1, (args, out)
        assert "hunter2" not in out
        assert out.startswith("Error: cannot connect to postgresql://someone:***@127.0.0.1:")
        assert out.count("\n") == 1
    # db status still reports what it knows locally, then the error
    code, out = invoke(url, "db", "status")
    assert code == 1 and "hunter2" not in out
    lines = out.splitlines()
    assert lines[0].startswith("target:      postgresql://someone:***@127.0.0.1:")
    assert any(line.startswith("spool:") for line in lines)
    assert lines[-1].startswith("Error: cannot connect to postgresql://someone:***@")


def test_url_from_environment(examples_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """LORA_TRACKER_DATABASE_URL is used when no --database-url is given."""
    monkeypatch.setenv("LORA_TRACKER_DATABASE_URL", examples_url)
    result = CliRunner().invoke(cli, ["sql", "--json", "SELECT count(*) AS n FROM training_runs"])
    assert result.exit_code == 0 and json.loads(result.output) == [{"n": 3}]
    assert resolve_target().source == "LORA_TRACKER_DATABASE_URL"
    assert resolve_target("postgresql://x@y/z").source == "--database-url"


def test_mask_password_forms() -> None:
    """URLs, key=value strings and query parameters all lose their password."""
    assert mask_password("postgresql://u:p%40ss@h:5432/db") == "postgresql://u:***@h:5432/db"
    assert mask_password("postgresql://u@h/db") == "postgresql://u@h/db"
    assert mask_password("host=h password=abc user=u") == "host=h password=*** user=u"
    assert mask_password("host=h password='a b' user=u") == "host=h password=*** user=u"
    assert (
        mask_password("postgresql://h/db?user=u&password=abc&sslmode=require")
        == "postgresql://h/db?user=u&password=***&sslmode=require"
    )


def test_help_is_quick_to_reach() -> None:
    """`-h` works on the group and on commands."""
    result = CliRunner().invoke(cli, ["-h"])
    assert result.exit_code == 0 and "init" in result.output and "sql" in result.output
    result = CliRunner().invoke(cli, ["sql", "-h"])
    assert result.exit_code == 0 and "--json" in result.output


def test_psycopg_sees_what_cli_wrote(db_url: str) -> None:
    """Writes through `lora-tracker sql` are committed and visible to other connections."""
    code, _ = invoke(db_url, "sql", "INSERT INTO training_runs (run_name) VALUES ('visible')")
    assert code == 0
    with psycopg.connect(db_url) as conn:
        assert conn.execute("SELECT run_name FROM training_runs").fetchall() == [("visible",)]


def test_command_list_summaries_are_whole_sentences() -> None:
    """`lora-tracker --help` lists each command with a summary that is not cut at a
    metavar's dots (click ends the first sentence at `DIR...`)."""
    import re

    for name, command in cli.commands.items():
        summary = command.get_short_help_str(limit=200)
        assert not re.search(r"\b[A-Z]+\.\.\.$", summary), (name, summary)
