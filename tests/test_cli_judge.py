"""The judgement and decision commands through CliRunner, error paths included; a refused
command changes nothing."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

import psycopg
import pytest
from click.testing import CliRunner
from psycopg.rows import dict_row

from lora_tracker.cli import cli

from .conftest import rows

TABLES = ("training_runs", "epoch_results", "caption_versions", "test_prompts",
          "prompt_test_results")  # fmt: skip


def snapshot(url: str) -> list[Any]:
    with psycopg.connect(url, row_factory=dict_row) as conn:
        return [conn.execute(f"SELECT * FROM {t} ORDER BY id").fetchall()
                for t in TABLES]  # fmt: skip


def run(url: str, *args: str, input: str | None = None) -> tuple[int, str]:
    result = CliRunner().invoke(cli, ["--database-url", url, *args], input=input)
    return result.exit_code, result.output


# -- refused commands: one line, the right exit code, nothing changed -----------------------

REFUSALS = [
    (["score", "SD15_PERFECT_Nov9", "7", "--visual", "11"], 2, "11 is not in the range 0<=x<=10"),
    (["score", "SD15_PERFECT_Nov9", "7", "--style", "-1"], 2, "-1 is not in the range"),
    (["score", "SD15_PERFECT_Nov9", "7", "--verdict", "great"], 2, "'great' is not one of"),
    (["score", "no_such_run", "7", "--visual", "5"], 1, "no run named 'no_such_run'"),
    (["score", "SD15", "7", "--visual", "5"], 1, "'SD15' matches several runs: "
     "SD15_PERFECT_Nov9, SD15_bespoke_baby_Nov7"),
    (["score", "SD15_PERFECT_Nov9", "7", "--flag", "random-pixels", "--clear-flag",
      "random-pixels"], 2, "--flag and --clear-flag both name random-pixels"),
    (["score", "SD15_PERFECT_Nov9", "7"], 2, "nothing to set"),
    (["score", "SD15_PERFECT_Nov9", "-3", "--visual", "5"], 2, "No such option '-3'"),
    (["verdict", "SD15_PERFECT_Nov9", "--quality", "11"], 2, "11 is not in the range"),
    (["verdict", "SD15_PERFECT_Nov9", "--overall", "great"], 2, "'great' is not one of"),
    (["verdict", "SD15_PERFECT_Nov9", "--best-epoch", "42"], 1,
     "SD15_PERFECT_Nov9 has no epoch 42 recorded"),
    (["verdict", "ghost"], 2, "nothing to set"),
    (["verdict", "ghost", "--quality", "5"], 1, "no run named 'ghost'"),
    (["show", "ghost"], 1, "no run named 'ghost'"),
    (["compare", "SD15_PERFECT_Nov9"], 2, "compare needs at least two runs"),
    (["compare", "SD15_PERFECT_Nov9", "ghost"], 1, "no run named 'ghost'"),
    (["compare", "SD15_PERFECT_Nov9", "1"], 2, "the same run is named twice"),
    (["new", "SD15_PERFECT_Nov9"], 1, "a run named SD15_PERFECT_Nov9 already exists"),
    (["new", "x", "--resolution", "big"], 2, "'big' is not like 512x512"),
    (["new", "tab\there"], 1, "a run name holds no control characters (a tab, a newline)"),
    (["caption", "add", "civitai_v2_7_training"], 1,
     "a caption version named civitai_v2_7_training already exists"),
    (["caption", "link", "nope", "SD15_PERFECT_Nov9"], 1, "no caption version named 'nope'"),
    (["caption", "show", "nope"], 1, "no caption version named 'nope'"),
    (["prompt", "score", "SD15_PERFECT_Nov9", "7", "nope", "--score", "5"], 1,
     "no test prompt named 'nope'"),
    (["prompt", "score", "SD15_PERFECT_Nov9", "7", "nope"], 2, "nothing to set"),
    (["tried"], 2, "give the planned settings"),
    (["tried", "--resolution", "huge"], 2, "'huge' is not like 512x512"),
    (["cleanup", "--older-than", "soon"], 2, "'soon' is not like 6mo"),
    (["export", "--what", "secrets"], 2, "'secrets' is not one of"),
    (["runs", "--model-type", "SD99"], 2, "'SD99' is not one of"),
    (["no-such-command"], 2, "No such command 'no-such-command'"),
]  # fmt: skip


@pytest.mark.parametrize(("args", "code", "message"), REFUSALS,
                         ids=[" ".join(a[:3]) for a, _, _ in REFUSALS])  # fmt: skip
def test_refused_commands_change_nothing(
    examples_url: str, args: list[str], code: int, message: str
) -> None:
    """Bad input: a clear one-line error, exit 1 (failed) or 2 (usage), nothing changed."""
    before = snapshot(examples_url)
    exit_code, output = run(examples_url, *args)
    assert exit_code == code, output
    assert message in output
    assert output.startswith("Error: ") and output.count("\n") == 1, output
    assert snapshot(examples_url) == before


def test_cleanup_refused_confirmation_changes_nothing(examples_url: str) -> None:
    """Answering no to cleanup's question deletes nothing (exit 1)."""
    before = snapshot(examples_url)
    code, output = run(examples_url, "cleanup", "--older-than", "6mo", input="n\n")
    assert code == 1 and "Delete 2 runs, 11 epoch results, 0 prompt results?" in output
    assert snapshot(examples_url) == before


# -- what the commands do ---------------------------------------------------------------------


@pytest.mark.both_servers
def test_score_sets_only_what_is_given(examples_url: str) -> None:
    """score updates the given fields, creates a missing epoch, flags and clears flags."""
    code, out = run(
        examples_url,
        "score",
        "SD15_PERFECT_Nov9",
        "8",
        "--visual",
        "6",
        "--flag",
        "random-pixels",
        "--note",
        "re-checked",
    )
    assert code == 0, out
    assert out.startswith("SD15_PERFECT_Nov9 epoch 8: visual 8 -> 6, random pixels no -> yes, "
                          "note 'Starting to overfit")  # fmt: skip
    assert out.rstrip().endswith("-> 're-checked'")
    row = rows(
        examples_url,
        "SELECT * FROM epoch_results er JOIN training_runs tr ON "
        "tr.id = er.training_run_id WHERE run_name = 'SD15_PERFECT_Nov9' "
        "AND epoch_number = 8",
    )[0]
    assert (
        row["visual_quality_score"],
        row["style_match_score"],
        row["has_random_pixels"],
        row["observations"],
        row["verdict"],
    ) == (6, 9, True, "re-checked", "acceptable")
    code, out = run(
        examples_url, "score", "SD15_P", "8", "--clear-flag", "random-pixels", "--production-ready"
    )
    assert code == 0
    row = rows(
        examples_url,
        "SELECT has_random_pixels, production_ready, visual_quality_score "
        "FROM epoch_results WHERE epoch_number = 8 AND observations = "
        "'re-checked'",
    )[0]
    assert row == {"has_random_pixels": False, "production_ready": True, "visual_quality_score": 6}
    code, out = run(
        examples_url,
        "score",
        "SDXL_Current_Nov12",
        "9",
        "--visual",
        "5",
        "--verdict",
        "good",
        "--checkpoint",
        "/runs/sdxl-000009.safetensors",
        "--add",
    )
    assert code == 0, out
    assert out == (
        "SDXL_Current_Nov12 epoch 9 (added): checkpoint "
        "'/runs/sdxl-000009.safetensors', visual 5, verdict good\n"
    )
    new = rows(
        examples_url,
        "SELECT epoch_number, checkpoint_path FROM epoch_results er "
        "JOIN training_runs tr ON tr.id = er.training_run_id "
        "WHERE run_name = 'SDXL_Current_Nov12' AND epoch_number = 9",
    )
    assert new == [{"epoch_number": 9, "checkpoint_path": "/runs/sdxl-000009.safetensors"}]


@pytest.mark.both_servers
def test_verdict_sets_and_appends(examples_url: str) -> None:
    """verdict sets the given fields; --issue and --strength append without duplicates."""
    code, out = run(
        examples_url,
        "verdict",
        "SDXL",
        "--overall",
        "failure",
        "--quality",
        "3",
        "--issue",
        "soft edges instead of crisp pixels",
        "--issue",
        "banding",
        "--strength",
        "fast",
        "--recommend",
        "discard",
        "--status",
        "completed",
        "--best-epoch",
        "6",
        "--findings",
        "SDXL is not for pixel art",
    )
    assert code == 0, out
    assert out.startswith("SDXL_Current_Nov12: status in_progress -> completed, verdict partial "
                          "-> failure, quality 4 -> 3, best epoch 6 (unchanged)")  # fmt: skip
    assert out.rstrip().endswith("issues +'banding', strengths +'fast'")
    r = rows(examples_url, "SELECT * FROM training_runs WHERE run_name = 'SDXL_Current_Nov12'")[0]
    assert r["issues_found"] == [
        "random pixels",
        "soft edges instead of crisp pixels",
        "inconsistent palette",
        "banding",
    ]
    assert r["strengths"] == ["good composition", "correct poses", "fast"]
    assert (r["recommended_for"], r["status"], r["key_findings"]) == (
        "discard",
        "completed",
        "SDXL is not for pixel art",
    )
    code, out = run(
        examples_url,
        "verdict",
        "SDXL",
        "--clear-issues",
        "--issue",
        "only one",
        "--production-ready",
    )
    assert code == 0 and "production ready no -> yes" in out
    r = rows(
        examples_url,
        "SELECT issues_found, quality_score FROM training_runs "
        "WHERE run_name = 'SDXL_Current_Nov12'",
    )[0]
    assert r == {"issues_found": ["only one"], "quality_score": 3}


@pytest.mark.both_servers
def test_new_run_by_hand(examples_url: str) -> None:
    """new records a planned run with its parameters (the reference's step 1)."""
    code, out = run(
        examples_url,
        "new",
        "SD15_retry_dim32",
        "--model-type",
        "SD15",
        "--base-model",
        "runwayml/stable-diffusion-v1-5",
        "--num-images",
        "203",
        "--caption-version",
        "civitai_v2_7_training",
        "--resolution",
        "512x512",
        "--network-dim",
        "32",
        "--network-alpha",
        "16",
        "--notes",
        "retry",
    )
    assert code == 0 and "Created run SD15_retry_dim32" in out
    r = rows(
        examples_url,
        "SELECT status, network_alpha, num_images FROM training_runs "
        "WHERE run_name = 'SD15_retry_dim32'",
    )
    assert r == [{"status": "in_progress", "network_alpha": 16, "num_images": 203}]


@pytest.mark.both_servers
def test_runs_filters_and_formats(examples_url: str) -> None:
    """runs lists training_comparison's columns, filtered, as a table, JSON or CSV."""
    code, out = run(examples_url, "runs", "--model-type", "SD15", "--json")
    assert code == 0
    found = json.loads(out)
    assert [r["run_name"] for r in found] == ["SD15_PERFECT_Nov9", "SD15_bespoke_baby_Nov7"]
    with psycopg.connect(examples_url, row_factory=dict_row) as conn:
        view = conn.execute(
            "SELECT * FROM training_comparison WHERE model_type = 'SD15' ORDER BY run_date DESC"
        ).fetchall()
    assert list(found[0]) == list(view[0])
    assert found[0]["avg_visual_quality"] == float(view[0]["avg_visual_quality"])
    code, out = run(examples_url, "runs", "--verdict", "failure", "--csv")
    assert [r["run_name"] for r in csv.DictReader(io.StringIO(out))] == ["SD15_bespoke_baby_Nov7"]
    code, out = run(examples_url, "runs", "--sort", "quality")
    lines = out.splitlines()
    assert lines[2].split()[1] == "SD15_PERFECT_Nov9" and len(lines) == 5
    code, out = run(examples_url, "runs", "--search", "nothing-like-this")
    assert code == 0 and out.strip() == "No runs match."


@pytest.mark.both_servers
def test_show_and_compare(examples_url: str) -> None:
    """show gives configuration, judgement, epochs and prompt grid; compare marks differences."""
    run(
        examples_url,
        "prompt",
        "add",
        "baby_sitting",
        "--text",
        "pixel art baby sitting",
        "--seed",
        "42",
        "--steps",
        "30",
        "--cfg",
        "7",
        "--category",
        "pose",
    )
    run(examples_url, "prompt", "add", "baby_hat", "--text", "pixel art baby with a hat")
    run(
        examples_url,
        "prompt",
        "score",
        "SD15_PERFECT_Nov9",
        "7",
        "baby_s",
        "--score",
        "9",
        "--verdict",
        "pass",
        "--image",
        "/out/e7_sitting.png",
    )
    run(
        examples_url,
        "prompt",
        "score",
        "SD15_PERFECT_Nov9",
        "8",
        "baby_hat",
        "--score",
        "6",
        "--verdict",
        "partial",
    )
    code, out = run(examples_url, "show", "SD15_P")
    assert code == 0
    assert "SD15_PERFECT_Nov9 (id 1): success 9/10 · production ready · best epoch 7" in out
    assert "network_dim        32" in out and "Epochs (3)" in out
    assert "Test prompts (epoch x prompt: score verdict)" in out
    assert "9 pass" in out and "6 partial" in out
    assert "none written yet" not in out  # the reference run has its findings
    run(examples_url, "new", "judged_later", "--model-type", "SD15")
    code, out = run(examples_url, "show", "judged_later")
    judgement = out.split("\nJudgement\n")[1].split("\n\n")[0]
    assert judgement == "  none written yet (lora-tracker verdict RUN --findings TEXT --issue TEXT)"
    code, out = run(examples_url, "show", "SD15_P", "--json")
    data = json.loads(out)
    assert data["run"]["run_name"] == "SD15_PERFECT_Nov9"
    assert [e["epoch_number"] for e in data["epochs"]] == [6, 7, 8]
    assert data["prompt_results"][0]["image_path"] == "/out/e7_sitting.png"
    code, out = run(examples_url, "compare", "SD15_PERFECT_Nov9", "SD15_bespoke_baby_Nov7")
    assert code == 0
    line = next(x for x in out.splitlines() if " network_dim " in x)
    assert line.startswith("*") and "32" in line and "64" in line
    line = next(x for x in out.splitlines() if " num_images " in x)
    assert not line.startswith("*")
    assert "9/9/9 best" in out and "0/0/2 failure" in out
    code, out = run(examples_url, "compare", "1", "2", "3", "--json")
    data = json.loads(out)
    assert data["runs"] == ["SD15_PERFECT_Nov9", "SD15_bespoke_baby_Nov7", "SDXL_Current_Nov12"]
    assert {s["setting"]: s["differs"] for s in data["settings"]}["resolution"] is True
    code, out = run(examples_url, "prompt", "show", "SD15_PERFECT_Nov9")
    assert out.splitlines()[0].split() == ["epoch", "baby_hat", "baby_sitting"]
    code, out = run(examples_url, "prompt", "list", "--json")
    assert {p["prompt_name"]: p["results"] for p in json.loads(out)} == {
        "baby_hat": 1,
        "baby_sitting": 1,
    }
    code, out = run(examples_url, "prompt", "retire", "baby_hat")
    code, out = run(examples_url, "prompt", "list", "--json")
    assert [p["prompt_name"] for p in json.loads(out)] == ["baby_sitting"]


@pytest.mark.both_servers
def test_captions(tmp_path: Path, examples_url: str) -> None:
    """caption add from a folder (count, detail level, hash), list, show, link."""
    folder = tmp_path / "dataset"
    folder.mkdir()
    (folder / "a.txt").write_text(
        "pixel art baby, pink onesie (#F4B6C2), white bow, gold "
        "bracelet, sitting, plain white background"
    )
    (folder / "b.txt").write_text("pixel art baby, blue hat, standing, plain background")
    (folder / "a.png").write_bytes(b"")
    code, out = run(
        examples_url,
        "caption",
        "add",
        "v3_short",
        "--from-dir",
        str(folder),
        "--run",
        "SD15_bespoke_baby_Nov7",
    )
    assert code == 0, out
    assert "Added caption version v3_short, 2 captions, moderate" in out
    assert "Linked runs: SD15_bespoke_baby_Nov7" in out
    version = rows(examples_url, "SELECT * FROM caption_versions WHERE version_name = 'v3_short'")[
        0
    ]
    assert (
        version["includes_hex_codes"],
        version["includes_accessories"],
        version["includes_jewelry"],
    ) == (True, True, True)
    assert len(version["caption_set_hash"]) == 64
    assert version["used_in_training_runs"] == ["SD15_bespoke_baby_Nov7"]
    assert rows(
        examples_url,
        "SELECT caption_version FROM training_runs WHERE run_name = 'SD15_bespoke_baby_Nov7'",
    ) == [{"caption_version": "v3_short"}]
    code, out = run(examples_url, "caption", "list", "--json")
    listed = {c["version_name"]: c for c in json.loads(out)}
    assert listed["civitai_v2_7_training"]["runs"] == 2
    assert listed["v3_short"]["verdicts"] == "failure"
    code, out = run(examples_url, "caption", "show", "civitai_v2_7_training")
    assert code == 0 and "Runs trained on civitai_v2_7_training (2)" in out
    code, out = run(examples_url, "caption", "link", "civitai_v2_7_training", "SD15_b")
    assert code == 0 and "Linked to civitai_v2_7_training: SD15_bespoke_baby_Nov7" in out
    empty = tmp_path / "empty"
    empty.mkdir()
    before = snapshot(examples_url)
    code, out = run(examples_url, "caption", "add", "v4", "--from-dir", str(empty))
    assert code == 1 and "no .txt captions in" in out
    assert snapshot(examples_url) == before


@pytest.mark.both_servers
def test_tried(tmp_path: Path, examples_url: str) -> None:
    """tried lists equivalent and nearby runs; an equivalent failure exits 3, loudly."""
    code, out = run(
        examples_url,
        "tried",
        "--model-type",
        "SD15",
        "--network-dim",
        "64",
        "--resolution",
        "512x512",
    )
    assert code == 3
    assert "Tried before with the same settings (1):" in out
    assert "SD15_bespoke_baby_Nov7" in out
    assert "!!! THIS CONFIGURATION ALREADY FAILED:\n    - SD15_bespoke_baby_Nov7 (0/10" in out
    banner = out[out.index("!!! THIS") :].splitlines()
    assert len(banner) >= 3 and max(len(line) for line in banner) <= 100, banner  # wrapped
    code, out = run(
        examples_url,
        "tried",
        "--model-type",
        "SD15",
        "--network-dim",
        "32",
        "--resolution",
        "512,512",
        "--json",
    )
    assert code == 0
    data = json.loads(out)
    assert [r["run_name"] for r in data["equivalent"]] == ["SD15_PERFECT_Nov9"]
    assert [r["run_name"] for r in data["nearby"]] == ["SD15_bespoke_baby_Nov7"]
    assert data["failed_before"] is False
    code, out = run(examples_url, "tried", "--model-type", "SD15", "--network-dim", "16")
    assert code == 0 and "Never tried with exactly these settings." in out
    assert "SD15_PERFECT_Nov9" in out  # dim 32 is within a factor of 2
    config = tmp_path / "plan.toml"
    config.write_text(
        '[network]\nnetwork_dim = 64\n[basics]\nresolution = "512,512"\n'
        'pretrained_model_name_or_path = "runwayml/stable-diffusion-v1-5"\n'
    )
    code, out = run(examples_url, "tried", "--config", str(config))
    assert code == 3, out
    assert "network_dim=64" in out and "resolution=512x512" in out


@pytest.mark.both_servers
def test_stats_and_export(tmp_path: Path, examples_url: str) -> None:
    """stats runs the dashboard queries; export writes tables and views as CSV or JSON."""
    code, out = run(examples_url, "stats", "--json")
    data = json.loads(out)
    rates = {r["model_type"]: r for r in data["success_rate"]}
    assert rates["SD15"]["total_runs"] == 2 and rates["SD15"]["successful"] == 1
    assert rates["SDXL"]["avg_quality"] == 4
    assert {r["issue"] for r in data["issue_frequency"]} == {
        "photorealistic babies",
        "pixel art style lost",
        "wrong backgrounds",
    }
    code, out = run(examples_url, "stats")
    assert "Training success rate by model type" in out and "Failure patterns" in out
    target = tmp_path / "epochs.csv"
    code, out = run(examples_url, "export", "--what", "epochs", "-o", str(target))
    assert code == 0 and "Wrote 13 epochs rows" in out
    exported = list(csv.DictReader(target.open()))
    assert len(exported) == 13 and exported[0]["run_name"]
    code, out = run(examples_url, "export", "--format", "json", "--what", "training_comparison")
    assert [r["run_name"] for r in json.loads(out)] == [
        "SDXL_Current_Nov12",
        "SD15_PERFECT_Nov9",
        "SD15_bespoke_baby_Nov7",
    ]
    code, out = run(examples_url, "export", "-o", str(tmp_path / "no" / "such" / "dir.csv"))
    assert code == 1 and "cannot write" in out


KEPT_FAILURE = (
    "Kept 1 failed run (SD15_bespoke_baby_Nov7): `tried` and the launch guard warn before a "
    "training repeats a failed configuration only while its run is recorded; "
    "--include-failures deletes failed runs too."
)


@pytest.mark.both_servers
def test_cleanup(examples_url: str) -> None:
    """cleanup shows what it deletes, asks, and cascades to epochs and prompt results."""
    run(examples_url, "prompt", "add", "p1", "--text", "a prompt")
    run(examples_url, "prompt", "score", "SD15_bespoke_baby_Nov7", "5", "p1", "--score", "1")
    discard = ("cleanup", "--older-than", "6mo", "--recommended-for", "discard")
    code, out = run(examples_url, *discard, "--include-failures", "--dry-run")
    assert code == 0 and "Would delete 1 run, 2 epoch results, 1 prompt result" in out
    assert rows(examples_url, "SELECT count(*) AS n FROM training_runs")[0]["n"] == 3
    code, out = run(examples_url, *discard, "--include-failures", input="y\n")
    assert code == 0 and "Deleted 1 run with 2 epoch results and 1 prompt result." in out
    assert "1 failed run among them (SD15_bespoke_baby_Nov7): once it is deleted" in out
    assert rows(examples_url, "SELECT count(*) AS n FROM epoch_results")[0]["n"] == 11
    assert rows(examples_url, "SELECT count(*) AS n FROM prompt_test_results")[0]["n"] == 0
    code, out = run(examples_url, "cleanup", "--older-than", "100y", "--yes")
    assert code == 0 and out.strip() == "Nothing to delete."


@pytest.mark.both_servers
def test_cleanup_keeps_the_failures_the_guard_remembers(examples_url: str) -> None:
    """A failed run (what `tried` and the launch guard warn from) is kept and counted,
    unless --include-failures; the guard still finds it afterwards."""
    before = snapshot(examples_url)
    discard = ("cleanup", "--older-than", "6mo", "--recommended-for", "discard")
    for extra in (("--dry-run",), ("--yes",), ()):
        code, out = run(examples_url, *discard, *extra)
        assert code == 0 and out == f"Nothing to delete.\n{KEPT_FAILURE}\n", out
    assert snapshot(examples_url) == before
    code, out = run(examples_url, "cleanup", "--older-than", "6mo", "--yes")
    assert code == 0, out
    assert KEPT_FAILURE in out and "Deleted 2 runs with 11 epoch results" in out
    names = rows(examples_url, "SELECT run_name FROM training_runs")
    assert [r["run_name"] for r in names] == ["SD15_bespoke_baby_Nov7"]
    code, out = run(examples_url, "tried", "--model-type", "sd15", "--network-dim", "64",
                    "--resolution", "512x512")  # fmt: skip
    assert code == 3 and "ALREADY FAILED:\n    - SD15_bespoke_baby_Nov7" in out


# -- delete one run -----------------------------------------------------------------------------

DELETED_RUN = "SD15_bespoke_baby_Nov7"


def _give_bespoke_results(url: str) -> None:
    """A person's prompt result and a linked test image on epoch 5 of the failed run."""
    run(url, "prompt", "add", "p1", "--text", "a prompt")
    run(url, "prompt", "score", DELETED_RUN, "5", "p1", "--score", "1")
    with psycopg.connect(url) as conn:
        conn.execute(
            "INSERT INTO prompt_test_results (epoch_result_id, test_prompt_id, result_key, "
            "image_path) SELECT er.id, tp.id, 'image:' || md5('x'), '/renders/x.png' "
            "FROM epoch_results er JOIN training_runs tr ON tr.id = er.training_run_id, "
            "test_prompts tp WHERE tr.run_name = %s AND er.epoch_number = 5 "
            "AND tp.prompt_name = 'p1'",
            (DELETED_RUN,),
        )


@pytest.mark.both_servers
def test_delete_shows_asks_and_removes_one_run(examples_url: str) -> None:
    """delete RUN shows the run and what goes with it, asks (no: nothing changes), --dry-run
    changes nothing, and yes removes the run, its epochs, prompt results and image links."""
    _give_bespoke_results(examples_url)
    before = snapshot(examples_url)
    shown = (
        f"Run {DELETED_RUN} (id 2, 2025-11-07, completed, verdict failure), with 2 epoch "
        "results, 1 prompt result and 1 test image link.\n"
        "Files on disk stay: its checkpoints, samples and test images are not touched.\n"
        "It was judged a failure: once it is deleted, `tried` and the launch guard no longer "
        "warn when a training repeats its settings.\n"
    )
    code, out = run(examples_url, "delete", DELETED_RUN, "--dry-run")
    assert (code, out) == (0, shown + "Dry run: nothing deleted.\n")
    code, out = run(examples_url, "delete", "SD15_b", input="n\n")
    assert code == 1 and out.startswith(shown) and f"Delete {DELETED_RUN}?" in out
    assert snapshot(examples_url) == before
    code, out = run(examples_url, "delete", "2", input="y\n")
    assert code == 0, out
    assert out.endswith(
        f"Deleted run {DELETED_RUN} with 2 epoch results, 1 prompt result and 1 test image link.\n"
    )
    assert rows(examples_url, "SELECT count(*) AS n FROM training_runs")[0]["n"] == 2
    assert rows(examples_url, "SELECT count(*) AS n FROM epoch_results")[0]["n"] == 11
    assert rows(examples_url, "SELECT count(*) AS n FROM prompt_test_results")[0]["n"] == 0
    assert rows(examples_url, "SELECT prompt_name FROM test_prompts") == [{"prompt_name": "p1"}]


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["delete", "no_such_run", "--yes"], 1, "Error: no run named 'no_such_run'"),
        (["delete", "SD15_PERFCT_Nov9"], 1, "(did you mean SD15_PERFECT_Nov9?)"),
        (["delete", "SD15", "--yes"], 1, "'SD15' matches several runs"),
        (["delete", "SD15_b", "--yes"], 2, "Error: 'SD15_b' is only the start of "
         "SD15_bespoke_baby_Nov7: with --yes, give the run's full name or id"),
        (["delete", "99", "--dry-run"], 1, "Error: no run"),
    ],
)  # fmt: skip
def test_delete_refuses_what_is_no_run(
    examples_url: str, args: list[str], code: int, message: str
) -> None:
    """An unknown or ambiguous run, or a bare prefix with --yes: one line, nothing changed."""
    before = snapshot(examples_url)
    exit_code, output = run(examples_url, *args)
    assert exit_code == code, output
    assert output.startswith("Error: ") and output.count("\n") == 1, output
    assert message in output
    assert snapshot(examples_url) == before


def test_delete_leaves_the_files_and_the_watcher_leaves_them_out(
    db_url: str, tmp_path: Path
) -> None:
    """A watched run deleted: every file stays on disk, and watching again records nothing."""
    import shutil

    from .conftest import ROOT

    folder = tmp_path / "kohya_output"
    shutil.copytree(ROOT / "examples" / "kohya_output", folder)
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    assert run(db_url, "watch", "--once", str(folder))[0] == 0
    name = rows(db_url, "SELECT run_name FROM training_runs")[0]["run_name"]
    code, out = run(db_url, "delete", name, "--yes")
    assert code == 0, out
    assert out.endswith(
        f"Deleted run {name} with 3 epoch results, 6 sample image links and 3 checkpoint "
        "file records.\n"  # what is not there is not counted
    )
    assert sorted(p for p in folder.rglob("*") if p.is_file()) == files
    assert rows(db_url, "SELECT count(*) AS n FROM training_runs")[0]["n"] == 0
    code, out = run(db_url, "watch", "--once", str(folder))
    assert code == 0 and "3 of deleted runs left out" in out, out
    assert rows(db_url, "SELECT count(*) AS n FROM training_runs")[0]["n"] == 0


def test_delete_run_in_the_library(examples_conn: Any) -> None:
    """runs.delete_run removes one run and says what went with it; others stay."""
    from lora_tracker import runs

    preview = runs.run_deletion_preview(examples_conn, "SDXL_Current_Nov12")
    done = runs.delete_run(examples_conn, "SDXL_Current_Nov12")
    assert done == preview and done.epochs == 8 and not done.failed
    left = examples_conn.execute("SELECT run_name FROM training_runs ORDER BY id").fetchall()
    assert [r["run_name"] for r in left] == ["SD15_PERFECT_Nov9", DELETED_RUN]


def test_watch_once_counts_the_sample_images_it_links(db_url: str, tmp_path: Path) -> None:
    """watch --once says how many sample images it linked: all six the first time, none
    when nothing is new, then only a sample written since."""
    import shutil

    from .conftest import ROOT

    folder = tmp_path / "kohya_output"
    shutil.copytree(ROOT / "examples" / "kohya_output", folder)
    code, out = run(db_url, "watch", "--once", str(folder))
    assert code == 0 and out.splitlines()[-1].endswith(
        "0 marked removed; 6 sample images linked"
    ), out
    code, out = run(db_url, "watch", "--once", str(folder))
    last = out.splitlines()[-1]
    assert code == 0 and last.endswith("already recorded, 0 spooled, 0 skipped, 0 marked removed")
    sample = folder / "sample"
    shutil.copy(sample / "pixelbaby_demo_e000003_01_20241109100411.png",
                sample / "pixelbaby_demo_e000003_02_20241109100412.png")  # fmt: skip
    code, out = run(db_url, "watch", "--once", str(folder))
    assert code == 0 and out.splitlines()[-1].endswith("0 marked removed; 1 sample image linked")
    linked = rows(db_url, "SELECT sum(cardinality(sample_images)) AS n FROM epoch_results")
    assert linked[0]["n"] == 7


def test_a_run_named_with_another_runs_id_is_never_guessed(examples_url: str) -> None:
    """A run named "1" while run id 1 is another: `show 1` or `score 1` picked the id
    without a word (a score went to the wrong run); now either is one line, and each
    run is reached by the other reference the line gives."""
    first = rows(examples_url, "SELECT id, run_name FROM training_runs ORDER BY id LIMIT 1")[0]
    ref = str(first["id"])
    code, output = run(examples_url, "new", ref)
    assert code == 0, output
    named = rows(examples_url, "SELECT id FROM training_runs WHERE run_name = %s", (ref,))[0]
    before = snapshot(examples_url)
    for args in (["show", ref], ["score", ref, "1", "--visual", "5", "--add"]):
        code, output = run(examples_url, *args)
        assert code == 1 and output.count("\n") == 1, output
        assert output == (
            f"Error: {ref!r} is the id of run {first['run_name']!r} and the name of run id "
            f"{named['id']}: give {first['run_name']!r} or {named['id']}\n"
        )
    assert snapshot(examples_url) == before
    code, output = run(examples_url, "show", str(named["id"]))
    assert code == 0 and output.startswith(f"{ref} (id {named['id']}): "), output[:200]
    from lora_tracker import runs  # an id the code holds (an int) is that run's, no question

    with psycopg.connect(examples_url, row_factory=dict_row) as conn:
        assert runs.get_run(conn, int(ref)).run_name == first["run_name"]


def test_an_issue_given_twice_in_one_command_is_listed_once(examples_url: str) -> None:
    twice = ["--issue", "overfits", "--issue", "overfits", "--strength", "sharp"]
    code, output = run(examples_url, "verdict", "SD15_PERFECT_Nov9", *twice, "--strength", "sharp")
    assert code == 0, output
    found = rows(examples_url, "SELECT issues_found, strengths FROM training_runs "
                 "WHERE run_name = 'SD15_PERFECT_Nov9'")[0]  # fmt: skip
    assert found["issues_found"].count("overfits") == 1
    assert found["strengths"].count("sharp") == 1
