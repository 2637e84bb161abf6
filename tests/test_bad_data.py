"""Bad data is refused with a clear error, and nothing is half-written."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest
from click.testing import CliRunner
from psycopg.rows import dict_row
from pydantic import ValidationError

from lora_tracker import captions, epochs, runs
from lora_tracker.cli import cli
from lora_tracker.db import Database
from lora_tracker.errors import AlreadyExists, InvalidInput, NotFound
from lora_tracker.models import CaptionVersionCreate, EpochFields, RunCreate, RunFields

# the server's own refusals (constraints, keys, cascades) and how they are reported
pytestmark = pytest.mark.both_servers


def snapshot(url: str) -> list[Any]:
    """Every row of every table, to prove a refused write changed nothing."""
    with psycopg.connect(url, row_factory=dict_row) as conn:
        return [
            conn.execute(f"SELECT * FROM {table} ORDER BY id").fetchall()
            for table in (
                "training_runs",
                "epoch_results",
                "caption_versions",
                "test_prompts",
                "prompt_test_results",
            )
        ]


def sql(url: str, statement: str) -> Any:
    return CliRunner().invoke(cli, ["--database-url", url, "sql", statement])


# -- through the raw SQL path: the database itself refuses ---------------------------------

REFUSED = {
    "quality_score 11": (
        "UPDATE training_runs SET quality_score = 11 WHERE run_name = 'SD15_PERFECT_Nov9'",
        "invalid training_runs.quality_score: the rule is "
        "(quality_score >= 0) AND (quality_score <= 10)",
    ),
    "negative epoch score": (
        "UPDATE epoch_results SET visual_quality_score = -1",
        "invalid epoch_results.visual_quality_score",
    ),
    "unknown overall verdict": (
        "UPDATE training_runs SET overall_verdict = 'great'",
        "invalid training_runs.overall_verdict",
    ),
    "unknown epoch verdict": (
        "UPDATE epoch_results SET verdict = 'meh' WHERE epoch_number = 7",
        "invalid epoch_results.verdict",
    ),
    "duplicate run_name": (
        "INSERT INTO training_runs (run_name) VALUES ('SD15_PERFECT_Nov9')",
        "training_runs: (run_name)=(SD15_PERFECT_Nov9) already exists",
    ),
    "epoch for a missing run": (
        "INSERT INTO epoch_results (training_run_id, epoch_number) VALUES (999999, 1)",
        'epoch_results: (training_run_id)=(999999) is not present in table "training_runs"',
    ),
    "duplicate epoch": (
        "INSERT INTO epoch_results (training_run_id, epoch_number) "
        "SELECT id, 7 FROM training_runs WHERE run_name = 'SD15_PERFECT_Nov9'",
        "epoch_results: (training_run_id, epoch_number)=",
    ),
    "bad resolution": (
        "UPDATE training_runs SET resolution = '512 by 512'",
        "invalid training_runs.resolution",
    ),
    "unknown model type": (
        "UPDATE training_runs SET model_type = 'SD99'",
        "invalid training_runs.model_type",
    ),
    "empty run name": (
        "INSERT INTO training_runs (run_name) VALUES ('   ')",
        "invalid training_runs.run_name",
    ),
    "missing run name": (
        "INSERT INTO training_runs (status) VALUES ('planned')",
        "training_runs.run_name must not be empty",
    ),
}


@pytest.mark.parametrize("case", sorted(REFUSED))
def test_raw_sql_refused_with_one_line(examples_url: str, case: str) -> None:
    """The database refuses the bad row; the CLI says why in one line, exit 1."""
    statement, message = REFUSED[case]
    before = snapshot(examples_url)
    result = sql(examples_url, statement)
    assert result.exit_code == 1
    assert result.output.startswith("Error: ")
    assert message in result.output
    assert result.output.count("\n") == 1
    assert "Traceback" not in result.output
    assert snapshot(examples_url) == before


def test_multi_statement_is_all_or_nothing(examples_url: str) -> None:
    """A good statement followed by a bad one leaves no trace of the good one."""
    before = snapshot(examples_url)
    result = sql(
        examples_url,
        "UPDATE training_runs SET notes = 'changed'; UPDATE training_runs SET quality_score = 11",
    )
    assert result.exit_code == 1
    assert snapshot(examples_url) == before


def test_delete_cascades_to_epochs(examples_url: str) -> None:
    """Deleting a run removes its epochs (ON DELETE CASCADE), not leaving orphans."""
    result = sql(examples_url, "DELETE FROM training_runs WHERE run_name = 'SDXL_Current_Nov12'")
    assert result.exit_code == 0 and "DELETE 1" in result.output
    with psycopg.connect(examples_url) as conn:
        row = conn.execute("SELECT count(*) FROM epoch_results").fetchone()
        assert row == (5,)


# -- through the library: pydantic refuses first, the database backs it up ----------------


def test_model_refuses_score_out_of_range() -> None:
    """quality_score 11 never reaches the database."""
    with pytest.raises(ValidationError, match="quality_score"):
        RunFields(quality_score=11)
    with pytest.raises(ValidationError, match="visual_quality_score"):
        EpochFields(visual_quality_score=-1)
    with pytest.raises(ValidationError, match="overall_verdict"):
        RunFields(overall_verdict="great")
    with pytest.raises(ValidationError, match="extra"):
        RunFields(qualty_score=3)  # type: ignore[call-arg]


def test_library_duplicate_run_name(examples_url: str) -> None:
    """create_run with a taken name raises AlreadyExists and adds nothing."""
    before = snapshot(examples_url)
    with (
        Database(examples_url) as db,
        pytest.raises(AlreadyExists, match="a run named SD15_PERFECT_Nov9 already exists"),
        db.transaction() as conn,
    ):
        runs.create_run(conn, RunCreate(run_name="SD15_PERFECT_Nov9", network_dim=8))
    assert snapshot(examples_url) == before


def test_library_epoch_for_missing_run(examples_url: str) -> None:
    """An epoch for a run id that does not exist raises NotFound."""
    before = snapshot(examples_url)
    with (
        Database(examples_url) as db,
        pytest.raises(NotFound, match="training_run_id"),
        db.transaction() as conn,
    ):
        epochs.upsert_epoch(conn, 424242, 1, EpochFields(visual_quality_score=5))
    assert snapshot(examples_url) == before


def test_library_unit_of_work_rolls_back(examples_url: str) -> None:
    """A run created in a transaction that then fails is not kept."""
    before = snapshot(examples_url)
    with Database(examples_url) as db, pytest.raises(InvalidInput), db.transaction() as conn:
        run = runs.create_run(conn, RunCreate(run_name="half_written", network_dim=16))
        # bypass pydantic to reach the database's own rule
        conn.execute("UPDATE training_runs SET quality_score = 11 WHERE id = %s", (run.id,))
    assert snapshot(examples_url) == before


def test_library_create_and_find(db_url: str) -> None:
    """A run created through the library is found by id, name and unique prefix."""
    with Database(db_url) as db, db.transaction() as conn:
        created = runs.create_run(
            conn,
            RunCreate(
                run_name="alpha_run_2026",
                network_dim=32,
                network_alpha=16,
                resolution="512x512",
                model_type="SD15",
                config={"lr": 1e-4},
                issues_found=["a"],
            ),
        )
        runs.create_run(conn, RunCreate(run_name="alpha_other"))
        assert runs.get_run(conn, created.id).run_name == "alpha_run_2026"
        assert runs.get_run(conn, "alpha_run_2026").id == created.id
        assert runs.get_run(conn, "alpha_r").id == created.id
        assert runs.get_run(conn, created.id).config == {"lr": 1e-4}
        with pytest.raises(Exception, match="matches several runs: alpha_other, alpha_run_2026"):
            runs.get_run(conn, "alpha")
        with pytest.raises(NotFound):
            runs.get_run(conn, "beta")
        epoch = epochs.upsert_epoch(conn, created.id, 3, EpochFields(visual_quality_score=7))
        again = epochs.upsert_epoch(conn, created.id, 3, EpochFields(verdict="good"))
        assert again.id == epoch.id
        assert again.visual_quality_score == 7 and again.verdict == "good"


def test_library_caption_version_duplicate(examples_url: str) -> None:
    """A caption version name is unique."""
    with (
        Database(examples_url) as db,
        pytest.raises(AlreadyExists, match="a caption version named civitai_v2_7_training already"),
        db.transaction() as conn,
    ):
        captions.create_caption_version(
            conn, CaptionVersionCreate(version_name="civitai_v2_7_training")
        )
