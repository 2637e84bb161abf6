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
