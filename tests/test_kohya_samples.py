"""kohya's sample images fill the epoch x prompt grid by themselves: each sample of a run
trained with --sample_prompts becomes the prompt_test_results row of (its epoch, the test
prompt on its line), through the watcher (watch --prompts, a kohya_ss GUI config, the GUI's
sample/prompt.txt, the run's stored config) and through the hook."""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from lora_tracker.cli import cli
from lora_tracker.image_results import file_sha256

from .conftest import proxied, proxy_target, rows, wait_for
from .kohya_sim import KohyaRun
from .netproxy import Proxy
from .test_hooks_kohya import kohya_args, launch

# kohya numbers the prompts it does not skip: '#' lines and blank lines are not prompts,
# an indented '#' line is (sd-scripts 48d368fa, sample_images_common)
PROMPTS_TXT = (
    "# the fixed test prompts\n"
    "portrait of pixelbaby --n lowres, blurry --d 42 --w 512 --h 768 --l 7 --s 28\n"
    "\n"
    "pixelbaby on a beach --ss euler_a\n"
    "  # pixelbaby, hashtag style\n"
)
TEXTS = ["portrait of pixelbaby", "pixelbaby on a beach", "# pixelbaby, hashtag style"]
SEEDS: list[int | None] = [42, None, None]

GRID = """
SELECT er.epoch_number, tp.prompt_text, tp.source, ptr.*
FROM prompt_test_results ptr
JOIN epoch_results er ON er.id = ptr.epoch_result_id
JOIN test_prompts tp ON tp.id = ptr.test_prompt_id
ORDER BY er.epoch_number, ptr.image_path
"""


def watch_once(url: str, folder: Path, *extra: str) -> Any:
    result = CliRunner().invoke(cli, ["--database-url", url, "watch", "--once", *extra,
                                      str(folder)])  # fmt: skip
    assert result.exit_code == 0, result.output
    return result


def sim(out: Path, **options: Any) -> KohyaRun:
    settings: dict[str, Any] = {"epochs": 3, "save_last_n": None, "sample_seeds": SEEDS}
    return KohyaRun(out, **{**settings, **options})


def assert_grid(url: str, run: KohyaRun, epochs: list[int], source: str) -> list[dict[str, Any]]:
    """Every (epoch, line) sample is one result on the test prompt of the line's text."""
    found = rows(url, GRID)
    assert [(r["epoch_number"], r["prompt_text"]) for r in found] == [
        (epoch, text) for epoch in epochs for text in TEXTS
    ]
    for result in found:
        name = Path(result["image_path"]).name
        assert name.startswith(f"{run.output_name}_e{result['epoch_number']:06d}_")
        assert result["generator"] == "kohya"
        assert result["result_key"] == f"image:{file_sha256(result['image_path'])}"
        assert result["captured_at"] is not None
        assert result["image_metadata"]["prompts_file"] == source
    first = [r for r in found if r["prompt_text"] == TEXTS[0]]
    assert {(r["seed"], r["steps"], float(r["cfg_scale"]), r["width"], r["height"])
            for r in first} == {(42, 28, 7.0, 512, 768)}  # fmt: skip
    assert {r["sampler"] for r in found if r["prompt_text"] == TEXTS[1]} == {"euler_a"}
    return found


@pytest.mark.both_servers
def test_watch_prompts_option_links_every_sample(tmp_path: Path, db_url: str) -> None:
    """`watch --prompts FILE`: a line whose text is a test prompt fills that prompt's
    cells; the other lines create prompts marked with the file and the run; a second
    watch changes nothing."""
    prompts = tmp_path / "prompts.txt"
    prompts.write_text(PROMPTS_TXT)
    added = CliRunner().invoke(cli, ["--database-url", db_url, "prompt", "add", "portrait",
                                     "--text", TEXTS[0], "--category", "pose"])  # fmt: skip
    assert added.exit_code == 0
    run = sim(tmp_path / "out")
    run.run()
    watch_once(db_url, tmp_path / "out", "--prompts", str(prompts))
    assert_grid(db_url, run, [1, 2, 3], str(prompts))
    made = rows(db_url, "SELECT * FROM test_prompts ORDER BY id")
    assert [(p["prompt_name"], p["source"]) for p in made] == [
        ("portrait", None),
        ("pixelbaby on a beach", f"kohya prompts file {prompts}"),
        ("# pixelbaby, hashtag style", f"kohya prompts file {prompts}"),
    ]
    run_id = rows(db_url, "SELECT id FROM training_runs")[0]["id"]
    assert [p["source_run_id"] for p in made] == [None, run_id, run_id]
    assert made[1]["sampler"] == "euler_a"

    before = rows(db_url, "SELECT * FROM prompt_test_results ORDER BY id")
    again = watch_once(db_url, tmp_path / "out", "--prompts", str(prompts))
    assert "0 recorded, 3 already recorded" in again.output
    assert rows(db_url, "SELECT * FROM prompt_test_results ORDER BY id") == before
    assert len(rows(db_url, "SELECT * FROM test_prompts")) == 3


def test_gui_config_names_a_toml_prompts_file(tmp_path: Path, db_url: str) -> None:
    """A kohya_ss GUI config beside the outputs names the prompts file (here kohya's toml
    format: [prompt] defaults, one [[prompt.subset]] per prompt)."""
    prompts = tmp_path / "prompts.toml"
    prompts.write_text(
        "[prompt]\nsample_steps = 28\n\n"
        f'[[prompt.subset]]\nprompt = {json.dumps(TEXTS[0])}\nnegative_prompt = "lowres"\n'
        "seed = 42\nwidth = 512\nheight = 768\nscale = 7.0\n\n"
        f'[[prompt.subset]]\nprompt = {json.dumps(TEXTS[1])}\nsample_sampler = "euler_a"\n\n'
        f"[[prompt.subset]]\nprompt = {json.dumps(TEXTS[2])}\n"
    )
    out = tmp_path / "out"
    run = sim(out)
    run.run()
    (out / "config_lora-20260101-120000.toml").write_text(
        f'[sample]\nsample_prompts = "{prompts}"\nsample_every_n_epochs = 1\n'
    )
    watch_once(db_url, out)
    assert_grid(db_url, run, [1, 2, 3], str(prompts))


def test_kohya_ss_sample_prompt_txt(tmp_path: Path, db_url: str) -> None:
    """kohya_ss writes its prompts box to {output_dir}/sample/prompt.txt: found there."""
    out = tmp_path / "out"
    run = sim(out)
    run.run()
    (out / "sample" / "prompt.txt").write_text(PROMPTS_TXT)
    watch_once(db_url, tmp_path)
    assert_grid(db_url, run, [1, 2, 3], str(out / "sample" / "prompt.txt"))


def test_stored_config_of_the_run(tmp_path: Path, db_url: str) -> None:
    """Samples that come after the run was recorded, when nothing beside them names the
    prompts file: the run's stored configuration does."""
    prompts = tmp_path / "prompts.txt"
    prompts.write_text(PROMPTS_TXT)
    out = tmp_path / "out"
    run = sim(out)
    run.run()
    shutil.move(out / "sample", tmp_path / "later")
    gui = out / "config_lora-20260101-120000.toml"
    gui.write_text(f'sample_prompts = "{prompts}"\n')
    watch_once(db_url, out)
    assert rows(db_url, GRID) == []
    assert rows(db_url, "SELECT config FROM training_runs")[0]["config"]["sample_prompts"] == (
        str(prompts)
    )
    gui.unlink()
    shutil.move(tmp_path / "later", out / "sample")
    watch_once(db_url, out)
    assert_grid(db_url, run, [1, 2, 3], str(prompts))


def test_step_samples_follow_the_step_checkpoint(tmp_path: Path, db_url: str) -> None:
    """Step samples at a step with a checkpoint count for that checkpoint's epoch; at a
    step without one they stay run samples only; a sample whose seed the file no longer
    has, or a PNG still being written, is not linked."""
    prompts = tmp_path / "prompts.txt"
    prompts.write_text(PROMPTS_TXT)
    out = tmp_path / "out"
    run = sim(out, epochs=2)
    run.save_step(50)  # mid-epoch 1 (the epoch files are at steps 100 and 200)
    at_checkpoint = run.write_step_samples(50)
    between = run.write_step_samples(150)
    run.run()
    second = sorted((out / "sample").glob(f"{run.output_name}_e000002_*"))
    stale = second[0].with_name(second[0].name.replace("_42.png", "_7.png"))
    stale.write_bytes(second[0].read_bytes())  # seed 7: not what line 0 says
    partial = second[1]
    whole = partial.read_bytes()
    partial.write_bytes(whole[:-12])  # no IEND yet: kohya is still writing it
    watch_once(db_url, out, "--prompts", str(prompts))
    found = rows(db_url, GRID)
    linked = {r["image_path"] for r in found}
    assert {str(p) for p in at_checkpoint} <= linked
    assert not {str(p) for p in between} & linked
    assert str(stale) not in linked and str(partial) not in linked
    steps = [r for r in found if r["image_metadata"].get("step") == 50]
    assert [(r["epoch_number"], r["prompt_text"]) for r in steps] == [(1, t) for t in TEXTS]
    assert {r["image_metadata"]["checkpoint"] for r in steps} == {
        str(out / f"{run.output_name}-step00000050.safetensors")
    }
    samples = rows(db_url, "SELECT sample_images FROM epoch_results WHERE epoch_number = 1")
    assert {str(p) for p in between} <= set(samples[0]["sample_images"])
    partial.write_bytes(whole)  # kohya finished writing it
    watch_once(db_url, out, "--prompts", str(prompts))
    assert str(partial) in {r["image_path"] for r in rows(db_url, GRID)}


PER_PROMPT = """
SELECT tp.prompt_name, er.epoch_number, ptr.seed, ptr.score, ptr.verdict, ptr.image_path
FROM prompt_test_results ptr
JOIN epoch_results er ON er.id = ptr.epoch_result_id
JOIN training_runs tr ON tr.id = er.training_run_id
JOIN test_prompts tp ON tp.id = ptr.test_prompt_id
WHERE tr.run_name = %s
ORDER BY tp.prompt_name, er.epoch_number
"""


@pytest.mark.both_servers
def test_hook_links_samples_from_a_json_prompts_file(tmp_path: Path, db_url: str) -> None:
    """The hook sees args.sample_prompts (kohya's .json format: lines and tables); the
    README's per-prompt query and `prompt show` return the linked results, and a score
    given afterwards lands beside them."""
    prompts = tmp_path / "prompts.json"
    prompts.write_text(json.dumps([
        f"{TEXTS[0]} --n lowres, blurry --d 42 --w 512 --h 768 --l 7 --s 28",
        {"prompt": TEXTS[1], "sample_sampler": "euler_a"},
        {"prompt": TEXTS[2]},
    ]))  # fmt: skip
    out = tmp_path / "out"
    done = launch("train_network.py", db_url,
                  *kohya_args(out, "--sample_prompts", str(prompts), epochs=3))  # fmt: skip
    assert done.returncode == 0, done.stderr
    found = rows(db_url, GRID)
    assert [(r["epoch_number"], r["prompt_text"]) for r in found] == [
        (epoch, text) for epoch in (1, 2, 3) for text in TEXTS
    ]
    assert {r["image_metadata"]["found_by"] for r in found} == {"--sample_prompts"}
    assert {r["seed"] for r in found if r["prompt_text"] == TEXTS[0]} == {42}
    run_name = rows(db_url, "SELECT run_name FROM training_runs")[0]["run_name"]
    per_prompt = rows(db_url, PER_PROMPT, (run_name,))
    assert len(per_prompt) == 9 and {r["epoch_number"] for r in per_prompt} == {1, 2, 3}
    shown = CliRunner().invoke(cli, ["--database-url", db_url, "prompt", "show", run_name,
                                     "--json"])  # fmt: skip
    assert shown.exit_code == 0, shown.output
    assert {r["image_path"] for r in json.loads(shown.output)} == {r["image_path"] for r in found}


@pytest.mark.both_servers
def test_spooled_events_keep_the_prompts_file(tmp_path: Path, db_url: str) -> None:
    """The database down: the events wait in the spool with the prompts file's text, so
    with the file deleted meanwhile `sync` still links every sample, exactly once."""
    proxy = Proxy(proxy_target(db_url))  # never up: the database is unreachable
    prompts = tmp_path / "prompts.txt"
    prompts.write_text(PROMPTS_TXT)
    run = sim(tmp_path / "out")
    run.run()
    down = watch_once(proxied(db_url, proxy), tmp_path / "out", "--prompts", str(prompts))
    assert "3 spooled" in down.output
    prompts.unlink()
    synced = CliRunner().invoke(cli, ["--database-url", db_url, "sync"])
    assert synced.exit_code == 0, synced.output
    assert_grid(db_url, run, [1, 2, 3], str(prompts))
    before = rows(db_url, "SELECT * FROM prompt_test_results ORDER BY id")
    again = CliRunner().invoke(cli, ["--database-url", db_url, "sync"])
    assert again.exit_code == 0
    assert rows(db_url, "SELECT * FROM prompt_test_results ORDER BY id") == before


def test_watch_refuses_a_prompts_file_kohya_cannot_read(tmp_path: Path, db_url: str) -> None:
    """`watch --prompts` with a file kohya would not sample from: one line, exit 2."""
    bad = tmp_path / "prompts.md"
    bad.write_text("a cat\n")
    out = tmp_path / "out"
    out.mkdir()
    result = CliRunner().invoke(cli, ["--database-url", db_url, "watch", "--once",
                                      "--prompts", str(bad), str(out)])  # fmt: skip
    assert result.exit_code == 2
    assert "only from .txt, .toml or .json" in result.output
    assert rows(db_url, "SELECT count(*) AS n FROM applied_events")[0]["n"] == 0


@pytest.mark.parametrize(
    ("name", "text"),
    [("prompts.txt", ""), ("prompts.txt", "# only a comment\n\n"), ("prompts.json", "[]")],
)
def test_watch_refuses_a_prompts_file_without_a_prompt(
    tmp_path: Path, db_url: str, name: str, text: str
) -> None:
    """`watch --prompts` with a file that holds no prompt (kohya would sample nothing, so
    no sample could ever be linked): one line, exit 2, the folder not even looked at."""
    empty = tmp_path / name
    empty.write_text(text)
    out = tmp_path / "out"
    sim(out, epochs=1).run()
    result = CliRunner().invoke(cli, ["--database-url", db_url, "watch", "--once",
                                      "--prompts", str(empty), str(out)])  # fmt: skip
    assert result.exit_code == 2
    assert f"Invalid value for '--prompts': {empty} holds no prompt" in result.output
    assert len(result.output.strip().splitlines()) == 1
    assert rows(db_url, "SELECT count(*) AS n FROM applied_events")[0]["n"] == 0
    assert rows(db_url, "SELECT count(*) AS n FROM training_runs")[0]["n"] == 0


@pytest.mark.parametrize(
    ("name", "text", "said", "status"),
    [
        ("absent.txt", None, "no such file, kohya cannot render samples from it", 0),
        ("prompts.yaml", "- a cat\n", "stops with an error where it reads this file", 1),
        ("prompts.txt", "# nothing yet\n", "holds no prompt, kohya will render no samples", 0),
    ],
)
def test_hook_says_at_launch_when_kohya_will_not_sample(
    tmp_path: Path, db_url: str, name: str, text: str | None, said: str, status: int
) -> None:
    """A --sample_prompts file kohya will not sample from is said once, before the first
    epoch (train_network.py finds a .yaml out only at its first sampling, and stops)."""
    prompts = tmp_path / name
    if text is not None:
        prompts.write_text(text)
    done = launch("train_network.py", db_url, *kohya_args(tmp_path / "out", epochs=2),
                  "--sample_prompts", str(prompts))  # fmt: skip
    assert done.returncode == status, done.stderr
    warned = [line for line in done.stderr.splitlines() if "--sample_prompts" in line]
    assert len(warned) == 1 and said in warned[0] and str(prompts) in warned[0]
    assert rows(db_url, GRID) == []


def test_hook_says_nothing_of_a_good_prompts_file(tmp_path: Path, db_url: str) -> None:
    prompts = tmp_path / "prompts.txt"
    prompts.write_text(PROMPTS_TXT)
    done = launch("train_network.py", db_url, *kohya_args(tmp_path / "out", epochs=1),
                  "--sample_prompts", str(prompts))  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "--sample_prompts" not in done.stderr
    assert len(rows(db_url, GRID)) == 3


def test_watch_says_which_samples_its_prompts_file_does_not_match(
    tmp_path: Path, db_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A sample whose prompt is not in the file (or sets another seed there) is named,
    with the prompt counted as a person counts (prompt 3 renders _02_)."""
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("portrait of pixelbaby --d 42\npixelbaby on a beach --d 8\n")
    out = tmp_path / "out"
    sim(out, epochs=1).run()  # seeds 42, none, none
    caplog.set_level(logging.INFO, logger="lora_tracker")
    watch_once(db_url, out, "--prompts", str(prompts))
    said = [m for m in caplog.messages if "not linked" in m]
    assert [m.split(": ", 1)[1] for m in said] == [
        f"{prompts} sets another seed for prompt 2 (_01_) (changed since?), not linked",
        f"{prompts} has no prompt 3 (_02_) (changed since?), not linked",
    ]
    assert [r["prompt_text"] for r in rows(db_url, GRID)] == ["portrait of pixelbaby"]


def test_live_watcher_links_samples_as_kohya_writes_them(
    tmp_path: Path, db_url: str, start_watcher: Callable[..., Any]
) -> None:
    """A running watcher links each sample as kohya writes it."""
    prompts = tmp_path / "prompts.txt"
    prompts.write_text(PROMPTS_TXT)
    out = tmp_path / "out"
    out.mkdir()
    start_watcher(out, db_url, prompts_path=prompts)
    run = sim(out)
    run.run()
    wait_for(lambda: len(rows(db_url, GRID)) == 9)
    assert_grid(db_url, run, [1, 2, 3], str(prompts))


@pytest.mark.both_servers
def test_hook_step_samples_follow_their_step_checkpoint(tmp_path: Path, db_url: str) -> None:
    """--sample_every_n_steps with --save_every_n_steps: kohya samples, then saves the step
    file; each step's samples land in the epoch of the checkpoint saved at that step."""
    prompts = tmp_path / "prompts.txt"
    prompts.write_text(PROMPTS_TXT)
    out = tmp_path / "out"
    done = launch("train_network.py", db_url, "--output_dir", str(out), "--output_name",
                  "pixelbaby", "--max_train_epochs", "2", "--save_every_n_steps", "2",
                  "--sample_every_n_steps", "2", "--sample_prompts", str(prompts))  # fmt: skip
    assert done.returncode == 0, done.stderr
    found = rows(db_url, GRID)
    steps = sorted((r["image_metadata"]["step"], r["epoch_number"]) for r in found)
    # 3 steps an epoch: steps 2 (epoch 1), 4 and 6 (epoch 2), three prompts each
    assert steps == [(2, 1)] * 3 + [(4, 2)] * 3 + [(6, 2)] * 3
    assert {r["prompt_text"] for r in found} == set(TEXTS)


RUN_1, RUN_2 = "pixelbaby_2024-11-09", "pixelbaby_v2_2024-11-09"


@pytest.mark.both_servers
def test_grid_follows_the_prompts_file(tmp_path: Path, db_url: str) -> None:
    """The epoch x prompt grid (`show RUN`, `prompt show`, the dashboard's judging view)
    lists a run's prompts in the order of its prompts file, not by name nor by when the
    prompt was first recorded; prompts entered by hand come after them; another run
    trained with the same prompts in another order lists them in its own order."""
    from lora_tracker import prompts as prompt_rows
    from lora_tracker.dashboard import data
    from lora_tracker.db import Database

    def cli_ok(*args: str) -> str:
        result = CliRunner().invoke(cli, ["--database-url", db_url, *args])
        assert result.exit_code == 0, result.output
        return result.output

    # the file's first prompt was entered by hand long before (a lower id); by name, the
    # file's lines would read 3, 2, 1
    cli_ok("prompt", "add", "portrait", "--text", TEXTS[0])
    first = tmp_path / "prompts.txt"
    first.write_text(PROMPTS_TXT)
    sim(tmp_path / "out").run()
    watch_once(db_url, tmp_path / "out", "--prompts", str(first))
    # scored by hand after: its name sorts first, it comes last
    cli_ok("prompt", "add", "a close-up", "--text", "close-up of pixelbaby")
    cli_ok("prompt", "score", RUN_1, "2", "a close-up", "--score", "6")
    # a second run: the same prompts, the file's lines the other way round
    second = tmp_path / "reversed.txt"
    lines = [line for line in PROMPTS_TXT.splitlines(keepends=True) if line.strip()]
    second.write_text(lines[0] + "".join(reversed(lines[1:])))
    sim(tmp_path / "out2", output_name="pixelbaby_v2", sample_seeds=SEEDS[::-1]).run()
    watch_once(db_url, tmp_path / "out2", "--prompts", str(second))

    names = ["portrait", "pixelbaby on a beach", "# pixelbaby, hashtag style"]
    with Database(db_url) as db, db.transaction() as conn:
        run_ids = {r["run_name"]: r["id"] for r in conn.execute(
            "SELECT id, run_name FROM training_runs").fetchall()}  # fmt: skip
        assert sorted(run_ids) == [RUN_1, RUN_2]
        results = prompt_rows.results_of_runs(conn, list(run_ids.values()))
        judged = data.judging_view(conn, RUN_1)["results"]
        judged_v2 = data.judging_view(conn, RUN_2)["results"]
    epoch2 = [(r["prompt_name"], r["prompt_index"]) for r in results[run_ids[RUN_1]]
              if r["epoch_number"] == 2]  # fmt: skip
    assert epoch2 == [(names[0], 0), (names[1], 1), (names[2], 2), ("a close-up", None)]
    assert prompt_rows.grid(results[run_ids[RUN_1]])[0] == ["epoch", *names, "a close-up"]
    assert prompt_rows.grid(results[run_ids[RUN_2]])[0] == ["epoch", *reversed(names)]
    # the judging view's columns: the prompts in the order of its results
    assert list(dict.fromkeys(r["prompt_name"] for r in judged)) == [*names, "a close-up"]
    assert list(dict.fromkeys(r["prompt_name"] for r in judged_v2)) == list(reversed(names))

    # `show RUN`: the grid's columns and the test images, epoch by epoch, in the file's order
    def in_order(line: str, wanted: list[str]) -> bool:
        return all(n in line for n in wanted) and [line.index(n) for n in wanted] == sorted(
            line.index(n) for n in wanted
        )

    def test_images(shown: str) -> list[str]:
        return [line.split(" · ", 1)[1].split(":")[0] for line in shown.splitlines()
                if line.startswith("  epoch 2 · ")]  # fmt: skip

    shown = cli_ok("show", RUN_1, "--wide")
    assert any(in_order(line, [*names, "a close-up"]) for line in shown.splitlines()), shown
    assert test_images(shown) == names, shown
    assert test_images(cli_ok("show", RUN_2, "--wide")) == list(reversed(names))
    # `prompt show RUN`: the same grid
    head = cli_ok("prompt", "show", RUN_1).splitlines()[0]
    assert in_order(head, [*names, "a close-up"]), head
