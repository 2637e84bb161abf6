"""The rules that live in the library once: vocabularies against the schema's CHECKs,
judging called directly (as the dashboard will), finding by reference, and the statistics
the dashboard and `stats` share."""

from __future__ import annotations

import re
from datetime import datetime, timezone
from typing import Any

import psycopg

from lora_tracker import vocab


def _check_vocabulary(definition: str) -> tuple[str, set[str]] | None:
    """(column, allowed values) of a CHECK that is a list of text values, else None."""
    # PostgreSQL prints `col IN ('a', 'b')` as `(col = ANY (ARRAY['a'::text, 'b'::text]))`
    match = re.fullmatch(r"CHECK \(\(\(?(\w+) = ANY \(ARRAY\[(.*)\]\)\)\)?\)?", definition.strip())
    if not match:
        return None
    return match.group(1), set(re.findall(r"'([^']*)'::text", match.group(2)))


def test_schema_checks_match_python_vocabularies(conn: psycopg.Connection[Any]) -> None:
    """Every list-of-values CHECK in the migrated schema allows exactly vocab.py's values,
    and every vocabulary of vocab.py has its CHECK."""
    rows = conn.execute(
        "SELECT conrelid::regclass::text AS tbl, pg_get_constraintdef(oid) AS def "
        "FROM pg_constraint WHERE connamespace = 'public'::regnamespace AND contype = 'c'"
    ).fetchall()
    found: dict[tuple[str, str], set[str]] = {}
    for row in rows:
        parsed = _check_vocabulary(row["def"])
        if parsed is not None:
            found[(row["tbl"], parsed[0])] = parsed[1]
    expected = {key: set(values) for key, values in vocab.SCHEMA_VOCABULARIES.items()}
    assert found == expected


def test_vocabulary_tuples_follow_the_literals() -> None:
    """The CLI's tuples and pydantic's Literals are one list each (no second spelling)."""
    from typing import get_args

    from lora_tracker import models

    assert models.RunStatus is vocab.RunStatus
    assert get_args(models.ModelType) == vocab.MODEL_TYPES
    assert get_args(vocab.EpochVerdict) == models.EPOCH_VERDICTS
    assert set(vocab.END_STATUSES) < set(vocab.RUN_STATUSES)  # a run ends in a run status


def _run(conn: psycopg.Connection[Any], name: str, **values: Any) -> None:
    from lora_tracker import runs
    from lora_tracker.models import RunCreate

    runs.create_run(conn, RunCreate(run_name=name, **values))


def test_dashboard_and_stats_give_the_same_statistics(conn: psycopg.Connection[Any]) -> None:
    """Success rate and issue frequency: the dashboard's numbers are `stats`' numbers, runs
    without a model type, a verdict or a quality score included, over 20 issues cut alike."""
    from lora_tracker import decisions
    from lora_tracker.dashboard import data

    _run(conn, "a", model_type="SD15", overall_verdict="success", quality_score=8)
    _run(conn, "b", model_type="SD15", overall_verdict="failure", quality_score=2,
         issues_found=[f"issue {i:02}" for i in range(25)])  # fmt: skip
    _run(conn, "c", model_type="SD15")  # not judged yet: pending
    _run(conn, "d", overall_verdict="success")  # no model type, no quality
    _run(conn, "e", overall_verdict="failure", issues_found=["issue 03"])
    _run(conn, "f", model_type="SDXL", overall_verdict="failure")  # issues_found NULL
    shown = data.snapshot(conn)
    found = decisions.stats(conn)
    assert shown["success_rate"] == found["success_rate"]
    assert shown["issue_frequency"] == found["issue_frequency"]
    rates = {r["model_type"]: r for r in found["success_rate"]}
    assert [r["model_type"] for r in found["success_rate"]] == ["SD15", None, "SDXL"]
    assert (rates["SD15"]["total_runs"], rates["SD15"]["successful"]) == (3, 1)
    assert str(rates["SD15"]["success_pct"]) == "33.3"
    assert str(rates["SD15"]["avg_quality"]) == "5.00"
    assert (rates[None]["total_runs"], rates[None]["successful"]) == (2, 1)
    assert rates[None]["avg_quality"] is None
    assert str(rates["SDXL"]["success_pct"]) == "0.0"
    issues = found["issue_frequency"]
    assert len(issues) == 20 and issues[0] == {"issue": "issue 03", "frequency": 2}
    # the narrowed path (a filter that keeps everything) reads the runs, not the summaries,
    # and agrees with them
    long_ago = datetime(2000, 1, 1, tzinfo=timezone.utc)
    assert decisions.success_rate(conn, since=long_ago) == found["success_rate"]
    assert decisions.issue_frequency(conn, since=long_ago) == issues


def test_runs_and_prompts_are_found_alike(conn: psycopg.Connection[Any]) -> None:
    """By id, exact name or unique prefix, with the same refusals for runs and prompts;
    a LIKE wildcard in the reference matches only itself."""
    import pytest

    from lora_tracker import prompts, runs
    from lora_tracker.errors import AmbiguousName, InvalidInput, NotFound
    from lora_tracker.models import TestPromptCreate

    for name in ("SD15_a", "SD15_b", "SDXL_x"):
        _run(conn, name)
        prompts.add_prompt(conn, TestPromptCreate(prompt_name=name, prompt_text="a cat"))
    for get, plural in ((runs.run_row, "runs"), (prompts.get_prompt, "prompts")):
        name_column = "run_name" if get is runs.run_row else "prompt_name"
        one = get(conn, "SDXL")
        assert one[name_column] == "SDXL_x"
        assert get(conn, str(one["id"]))[name_column] == "SDXL_x"
        assert get(conn, " SD15_a ")[name_column] == "SD15_a"
        with pytest.raises(
            AmbiguousName, match=f"'SD15' matches several {plural}: SD15_a, SD15_b$"
        ):
            get(conn, "SD15")
        with pytest.raises(NotFound, match=r"^no .* named 'SD_'"):
            get(conn, "SD_")
        with pytest.raises(InvalidInput, match="name or id is required"):
            get(conn, " ")
    with pytest.raises(NotFound, match=r"\(did you mean SDXL_x"):
        runs.get_run(conn, "SDXL_y")
    with pytest.raises(NotFound, match=r"see `lora-tracker prompt list`"):
        prompts.get_prompt(conn, "nope")


def _everything(conn: psycopg.Connection[Any]) -> list[list[dict[str, Any]]]:
    """Every row a judging call could change, to show that a refusal changed none."""
    return [
        conn.execute(f"SELECT * FROM {table} ORDER BY id").fetchall()
        for table in ("training_runs", "epoch_results", "prompt_test_results", "test_prompts")
    ]


def _judged_run(conn: psycopg.Connection[Any]) -> None:
    from lora_tracker import epochs
    from lora_tracker.models import EpochFields

    _run(conn, "judged", model_type="SD15", status="in_progress")
    run_id = conn.execute("SELECT id FROM training_runs WHERE run_name = 'judged'").fetchone()
    assert run_id is not None
    for number in (1, 2):
        epochs.upsert_epoch(conn, run_id["id"], number, EpochFields())


def test_score_epoch_takes_plain_values_flags_and_a_checkpoint(
    conn: psycopg.Connection[Any], tmp_path: Any
) -> None:
    """Plain dict input, flags by name, a checkpoint sized in MB rounded to 2 places; the
    changes say before and after, and undo_fields puts the values back."""
    from decimal import Decimal

    from lora_tracker import judging

    _judged_run(conn)
    checkpoint = tmp_path / "judged-000002.safetensors"
    checkpoint.write_bytes(b"\0" * 1_234_567)
    done = judging.score_epoch(
        conn, "judged", 2, {"visual_quality_score": 7, "verdict": "good"},
        flags=["random-pixels"], clear_flags=["photorealistic"], checkpoint=checkpoint,
    )  # fmt: skip
    assert not done.added
    epoch = done.epoch
    assert (epoch.visual_quality_score, epoch.verdict) == (7, "good")
    assert (epoch.has_random_pixels, epoch.is_photorealistic) == (True, False)
    assert epoch.checkpoint_path == str(checkpoint)
    assert epoch.checkpoint_file_size_mb == Decimal("1.18")  # 1,234,567 / 2**20 = 1.177...
    changed = {c.field: (c.before, c.after) for c in done.changes}
    assert changed["visual_quality_score"] == (None, 7)
    assert changed["checkpoint_size_bytes"] == (None, 1_234_567)
    again = judging.score_epoch(conn, "judged", 2, {"visual_quality_score": 9})
    assert [(c.field, c.before, c.after) for c in again.changes] == [("visual_quality_score", 7, 9)]
    undone = judging.score_epoch(conn, "judged", 2, again.undo_fields())
    assert undone.epoch.visual_quality_score == 7


def test_judging_refusals_change_nothing(conn: psycopg.Connection[Any]) -> None:
    """A flag both set and cleared, an unknown flag, an unrecorded epoch, a bad score, a
    best epoch that is not recorded: refused with the library's errors, nothing written."""
    import pytest
    from pydantic import ValidationError

    from lora_tracker import judging
    from lora_tracker.errors import FlagConflict, InvalidValue, NotFound

    _judged_run(conn)
    before = _everything(conn)
    with pytest.raises(FlagConflict) as conflict:
        judging.score_epoch(conn, "judged", 1, {"visual_quality_score": 5},
                            flags=["random-pixels", "photorealistic"],
                            clear_flags=["random-pixels"])  # fmt: skip
    assert conflict.value.flags == ["random-pixels"] and conflict.value.exit_code == 2
    with pytest.raises(InvalidValue, match="'glitter' is not a flag"):
        judging.score_epoch(conn, "judged", 1, flags=["glitter"])
    with pytest.raises(NotFound, match="judged has epochs 1-2 recorded; --add records epoch 9"):
        judging.score_epoch(conn, "judged", 9, {"visual_quality_score": 5})
    with pytest.raises(ValidationError):
        judging.score_epoch(conn, "judged", 1, {"visual_quality_score": 11})
    with pytest.raises(NotFound, match="judged has no epoch 5 recorded"):
        judging.record_verdict(conn, "judged", {"overall_verdict": "success", "best_epoch": 5},
                               add_issues=["blurry"], clear_strengths=True)  # fmt: skip
    with pytest.raises(NotFound, match="no prompt result with id 999"):
        judging.score_prompt_result(conn, 999, {"score": 3})
    assert _everything(conn) == before


def test_verdict_clears_then_appends_and_completes(conn: psycopg.Connection[Any]) -> None:
    """clear_issues empties the list before the additions; a final verdict completes a run
    in progress; undo_fields gives the whole lists back."""
    from lora_tracker import judging

    _judged_run(conn)
    judging.record_verdict(conn, "judged", add_issues=["old issue"], add_strengths=["kept"])
    done = judging.record_verdict(
        conn, "judged", {"overall_verdict": "failure", "best_epoch": 2},
        add_issues=["wrong backgrounds"], clear_issues=True,
    )  # fmt: skip
    assert done.run.issues_found == ["wrong backgrounds"]
    assert done.run.strengths == ["kept"]
    assert (done.run.status, done.run.best_epoch) == ("completed", 2)
    undo = done.undo_fields()
    assert undo["issues_found"] == ["old issue"] and undo["status"] == "in_progress"
    back = judging.record_verdict(conn, "judged", undo)
    assert back.run.issues_found == ["old issue"] and back.run.status == "in_progress"


def test_score_one_prompt_result_by_id(conn: psycopg.Connection[Any]) -> None:
    """Of several results of one epoch on one prompt, only the one named by id changes."""
    from lora_tracker import judging, prompts
    from lora_tracker.models import TestPromptCreate

    _judged_run(conn)
    prompts.add_prompt(conn, TestPromptCreate(prompt_name="cat", prompt_text="a cat"))
    own = judging.score_prompt(conn, "judged", 1, "cat", {"score": 4, "notes": "mine"})
    epoch_id, prompt_id = own.result["epoch_result_id"], own.result["test_prompt_id"]
    image = conn.execute(
        "INSERT INTO prompt_test_results (epoch_result_id, test_prompt_id, result_key, score)"
        " VALUES (%s, %s, 'image:ab12', 6) RETURNING id",
        (epoch_id, prompt_id),
    ).fetchone()
    assert image is not None
    done = judging.score_prompt_result(conn, image["id"], {"score": 8, "verdict": "pass"})
    assert (done.run.run_name, done.epoch_number, done.prompt_name) == ("judged", 1, "cat")
    assert done.result_id == image["id"] and done.result["result_key"] == "image:ab12"
    assert [(c.field, c.before, c.after) for c in done.changes] == [
        ("score", 6, 8), ("verdict", None, "pass"),
    ]  # fmt: skip
    mine = conn.execute(
        "SELECT score, notes FROM prompt_test_results WHERE id = %s", (own.result_id,)
    ).fetchone()
    assert mine == {"score": 4, "notes": "mine"}
    judging.score_prompt_result(conn, image["id"], done.undo_fields())
    row = conn.execute(
        "SELECT score, verdict FROM prompt_test_results WHERE id = %s", (image["id"],)
    ).fetchone()
    assert row == {"score": 6, "verdict": None}


def test_planned_settings_and_compare(conn: psycopg.Connection[Any], tmp_path: Any) -> None:
    """tried's settings: the config file read, given values on top, the resolution as the
    record writes it; compare's differing settings and its refusals."""
    import pytest

    from lora_tracker import decisions
    from lora_tracker.errors import InvalidRequest, InvalidValue

    config = tmp_path / "plan.toml"
    config.write_text('[network]\nnetwork_dim = 64\n[basics]\nresolution = "512,512"\n')
    planned = decisions.planned_settings({"network_dim": 32, "optimizer": None}, config)
    assert planned.settings == {"network_dim": 32, "resolution": "512x512"}
    report = planned.config_report()
    assert report is not None and report["kind"] and "network_dim" in report["used"]
    assert decisions.planned_settings({"resolution": " 768 "}).settings == {"resolution": "768x768"}
    with pytest.raises(InvalidValue, match="'huge' is not like 512x512") as bad:
        decisions.planned_settings({"resolution": "huge"})
    assert bad.value.field == "resolution"

    _run(conn, "one", network_dim=16, network_alpha=8, model_type="SD15")
    _run(conn, "two", network_dim=32, network_alpha=8, model_type="SD15")
    found = decisions.compare_runs(
        conn, ["one", "two"], ("model_type", "network_dim", "network_alpha", "optimizer"),
        ("epoch_number",),
    )  # fmt: skip
    assert [(s["setting"], s["differs"]) for s in found.settings] == [
        ("model_type", False), ("network_dim", True), ("network_alpha", False),
    ]  # fmt: skip
    with pytest.raises(InvalidRequest, match="compare needs at least two runs"):
        decisions.compare_runs(conn, ["one"], ("model_type",), ())
    one_id = found.runs[0]["id"]
    with pytest.raises(InvalidRequest, match="the same run is named twice"):
        decisions.compare_runs(conn, ["one", str(one_id)], ("model_type",), ())
