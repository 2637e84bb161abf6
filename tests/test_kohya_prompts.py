"""kohya's sample prompts files: read as sd-scripts 48d368fa reads them (library/train_util.py
load_prompts / line_to_prompt_dict), written by `prompt export`, round-tripped."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

from lora_tracker.cli import cli
from lora_tracker.errors import InvalidInput
from lora_tracker.kohya_prompts import (
    export_format_for,
    export_prompts,
    kohya_sampler,
    line_options,
    parse_prompts,
    prompt_for_sample,
    read_prompts_file,
)

KOHYA_DOC_TXT = (
    "# prompt 1\n"
    "masterpiece, best quality, 1girl, in white shirts, upper body, looking at viewer,"
    " simple background --n low quality, worst quality, bad anatomy,bad composition, poor,"
    " low effort --w 768 --h 768 --d 1 --l 7.5 --s 28\n"
    "\n"
    "# prompt 2\n"
    "masterpiece, best quality, 1boy, in business suit, standing at street, looking back"
    " --n low quality, worst quality --w 576 --h 832 --d 2 --l 5.5 --s 40 --ss euler_a\n"
)


def test_txt_lines_as_kohya_counts_them() -> None:
    """Blank lines and lines starting with # are skipped; the index counts the rest."""
    found = parse_prompts(KOHYA_DOC_TXT, "txt")
    assert [p.index for p in found] == [0, 1]
    first, second = found
    assert first.prompt.endswith("simple background")
    assert first.negative_prompt == (
        "low quality, worst quality, bad anatomy,bad composition, poor, low effort"
    )
    assert (first.width, first.height, first.seed, first.cfg_scale, first.steps) == (
        768, 768, 1, 7.5, 28,
    )  # fmt: skip
    assert first.sampler is None
    assert (second.width, second.height, second.seed, second.sampler) == (576, 832, 2, "euler_a")


def test_txt_comment_is_the_raw_first_character() -> None:
    """kohya tests line[0] before stripping: an indented '#' line is a prompt; CRLF and
    lone CR end lines (universal newlines); whitespace-only lines are skipped."""
    text = "# skipped\r\n  # indented counts\r\n \t \rsecond\rthird --d 5\n"
    found = parse_prompts(text, "txt")
    assert [(p.index, p.prompt) for p in found] == [
        (0, "# indented counts"), (1, "second"), (2, "third"),
    ]  # fmt: skip
    assert found[2].seed == 5


def test_txt_byte_order_mark_is_read_as_kohya_reads_it(tmp_path: Path) -> None:
    """kohya opens the file as plain UTF-8: a BOM (Windows Notepad) stays in the first
    line, so a first '#' line after it is a prompt and counts for the numbering."""
    path = tmp_path / "prompts.txt"
    path.write_bytes("# not skipped after a BOM\na cat\n".encode("utf-8-sig"))
    found = read_prompts_file(path)
    prompts = parse_prompts(found.content, found.format)
    assert [(p.index, p.prompt) for p in prompts] == [
        (0, "\ufeff# not skipped after a BOM"), (1, "a cat"),
    ]  # fmt: skip


def test_line_options_like_kohya() -> None:
    """Split on ' --' only; options case-insensitive; a later one wins; steps clamped to
    1..1000; a number that does not parse is skipped; the first piece is matched too."""
    assert line_options("a cat --W 640 --h 480 --w 512") == {
        "prompt": "a cat", "width": 512, "height": 480,
    }  # fmt: skip
    assert line_options("x --s 5000")["sample_steps"] == 1000
    assert line_options("x --s 0")["sample_steps"] == 1
    assert line_options("x --l 1.2.3 --d 7") == {"prompt": "x", "seed": 7}
    assert line_options("x\t--n tab is no separator") == {"prompt": "x\t--n tab is no separator"}
    assert line_options("x --n neg --dfoo --ss k_euler --g 3.5 --unknown 1") == {
        "prompt": "x", "negative_prompt": "neg", "sample_sampler": "k_euler",
        "guidance_scale": 3.5,
    }  # fmt: skip
    # kohya matches the prompt piece against the options as well
    assert line_options("n cat sitting") == {"prompt": "n cat sitting",
                                             "negative_prompt": "cat sitting"}  # fmt: skip
    assert line_options("w 512 girls")["width"] == 512


def test_toml_defaults_and_subsets() -> None:
    """[prompt] defaults join each [[prompt.subset]]; the index is the subset's position."""
    text = """
[prompt]
width = 1024
sample_steps = 20

[[prompt.subset]]
prompt = "first --n not split in toml"
seed = 3

[[prompt.subset]]
prompt = "second"
negative_prompt = "ugly"
scale = 4
"""
    first, second = parse_prompts(text, "toml")
    assert (first.index, first.prompt, first.seed, first.width, first.steps) == (
        0, "first --n not split in toml", 3, 1024, 20,
    )  # fmt: skip
    assert first.negative_prompt is None
    assert (second.index, second.negative_prompt, second.cfg_scale) == (1, "ugly", 4.0)
    assert "subset" not in first.options


def test_toml_kohya_cannot_read_is_refused() -> None:
    """A key in both [prompt] and a subset (kohya's dict(**a, **b) raises), no subsets,
    or broken TOML: a one-line InvalidInput."""
    with pytest.raises(InvalidInput, match="repeats width"):
        parse_prompts('[prompt]\nwidth = 1\n[[prompt.subset]]\nprompt = "a"\nwidth = 2\n', "toml")
    with pytest.raises(InvalidInput, match=r"\[\[prompt.subset\]\]"):
        parse_prompts('[prompt]\nprompt = "a"\n', "toml")
    with pytest.raises(InvalidInput, match="not valid TOML"):
        parse_prompts("[prompt\n", "toml")


def test_json_strings_and_objects() -> None:
    """A JSON list: strings are read as .txt lines, objects as kohya's prompt dicts."""
    text = json.dumps(["a --d 1 --w 640", {"prompt": "b", "seed": -4, "sample_sampler": "ddim"}])
    first, second = parse_prompts(text, "json")
    assert (first.prompt, first.seed, first.width) == ("a", 1, 640)
    assert (second.index, second.prompt, second.seed, second.sampler) == (1, "b", -4, "ddim")
    with pytest.raises(InvalidInput, match="JSON list"):
        parse_prompts('{"prompt": "a"}', "json")
    with pytest.raises(InvalidInput, match="neither text nor a table"):
        parse_prompts("[1]", "json")


def test_read_prompts_file(tmp_path: Path) -> None:
    """By the name's ending, case-sensitively as kohya; unreadable, too big or not UTF-8
    files are refused with one line."""
    good = tmp_path / "prompts.txt"
    good.write_bytes(b"a --d 1\r\nb\r\n")
    found = read_prompts_file(good)
    assert (found.format, found.path) == ("txt", str(good))
    assert [p.prompt for p in parse_prompts(found.content, found.format)] == ["a", "b"]
    upper = tmp_path / "prompts.TXT"
    upper.write_text("a\n")
    with pytest.raises(InvalidInput, match=r"only from \.txt, \.toml or \.json"):
        read_prompts_file(upper)
    with pytest.raises(InvalidInput, match="cannot read"):
        read_prompts_file(tmp_path / "gone.txt")
    big = tmp_path / "big.txt"
    big.write_text("x\n" * 2000)
    with pytest.raises(InvalidInput, match="over 1 KiB"):
        read_prompts_file(big, limit=1024)
    latin = tmp_path / "latin.txt"
    latin.write_bytes("caf\xe9".encode("latin-1"))
    with pytest.raises(InvalidInput, match="not UTF-8"):
        read_prompts_file(latin)


def _row(text: str, **values: Any) -> dict[str, Any]:
    return {"prompt_name": values.pop("name", text[:10]), "prompt_text": text, **values}


ROWS = [
    _row("portrait of pixelbaby, smiling", negative_prompt="lowres, blurry", seed=42, steps=28,
         cfg_scale=Decimal("7.50"), width=768, height=768, sampler="Euler a"),
    _row("#pixelbaby on a beach", sampler="DPM++ 2M Karras", seed=-1, name="beach"),
    _row("pixelbaby, 1girl, \u00e9t\u00e9 \"quoted\" \\ back", cfg_scale=Decimal("10")),
]  # fmt: skip


@pytest.mark.parametrize("fmt", ["kohya", "toml", "json"])
def test_export_round_trips_through_the_parser(fmt: str) -> None:
    """Every exported prompt reads back, at its line, with its text and settings."""
    exported = export_prompts(ROWS, fmt)  # type: ignore[arg-type]
    read = parse_prompts(exported.text, {"kohya": "txt"}.get(fmt, fmt))  # type: ignore[arg-type]
    assert [p.prompt for p in read] == [r["prompt_text"] for r in ROWS]
    first, second, third = read
    assert (first.negative_prompt, first.seed, first.steps, first.cfg_scale) == (
        "lowres, blurry", 42, 28, 7.5,
    )  # fmt: skip
    assert (first.width, first.height, first.sampler) == (768, 768, "euler_a")
    assert (second.seed, second.sampler) == (None, None)  # random seed, no kohya sampler
    assert third.cfg_scale == 10.0
    assert exported.notes == [
        "prompt 'beach': seed -1 means random; left out",
        "prompt 'beach': kohya has no sampler 'DPM++ 2M Karras'; left out"
        " (kohya uses --sample_sampler)",
    ]


def test_export_txt_line_format() -> None:
    """One line each: text, --n, --w/--h, --d, --l, --s, --ss; '#' text escaped with a
    leading space (kohya tests the raw first character)."""
    lines = export_prompts(ROWS, "kohya").text.splitlines()
    assert lines[0].startswith("# ")
    assert lines[1] == (
        "portrait of pixelbaby, smiling --n lowres, blurry --w 768 --h 768 --d 42 --l 7.5"
        " --s 28 --ss euler_a"
    )
    assert lines[2] == " #pixelbaby on a beach"


@pytest.mark.parametrize(
    ("text", "negative", "why"),
    [
        ("a cat --sitting", None, "after a space"),
        ("a cat", "bad --hands", "after a space"),
        ("line one\nline two", None, "several lines"),
        (" padded", None, "whitespace"),
        ("n cat on a mat", None, "options"),
        ("a cat", "--x", "starting with '--'"),
    ],
)
def test_export_txt_refuses_what_kohya_would_misread(
    text: str, negative: str | None, why: str
) -> None:
    """Text kohya's ' --' splitting or stripping would change: refused with one line
    pointing at --format toml, which holds it as is."""
    rows = [_row(text, negative_prompt=negative, name="tricky")]
    with pytest.raises(InvalidInput, match=why) as raised:
        export_prompts(rows, "kohya")
    assert "'tricky'" in str(raised.value) and "--format toml" in str(raised.value)
    read = parse_prompts(export_prompts(rows, "toml").text, "toml")
    assert read[0].prompt == text


PROMPT_TEXT = st.text(
    alphabet=st.sampled_from(list("ab #-\t\n\r\"\\'=[],.nwsdl0123 \u00e9\x7f")), min_size=1
)


@settings(max_examples=300, deadline=None)
@given(text=PROMPT_TEXT, negative=st.none() | PROMPT_TEXT, seed=st.none() | st.integers(0, 9))
def test_export_is_exact_or_refused(text: str, negative: str | None, seed: int | None) -> None:
    """Any prompt text: the .txt export reads back exactly or is refused; toml and json
    always read back exactly."""
    if not text.strip():
        return  # the database refuses blank prompts
    rows = [_row(text, negative_prompt=negative, seed=seed)]
    for fmt, parsed in (("toml", "toml"), ("json", "json"), ("kohya", "txt")):
        try:
            exported = export_prompts(rows, fmt)  # type: ignore[arg-type]
        except InvalidInput:
            assert fmt == "kohya"
            continue
        (read,) = parse_prompts(exported.text, parsed)  # type: ignore[arg-type]
        assert read.prompt == text
        assert read.negative_prompt == ((negative or "").strip() or None)
        assert read.seed == seed


def test_sampler_names() -> None:
    """kohya's own names pass; A1111 / ComfyUI names of the same sampler map; others None."""
    assert kohya_sampler("k_euler_a") == "k_euler_a"
    assert kohya_sampler("Euler a") == "euler_a"
    assert kohya_sampler("euler_ancestral") == "euler_a"
    assert kohya_sampler("DPM++ 2M") == "dpmsolver++"
    assert kohya_sampler("DPM++ 2M Karras") is None
    assert kohya_sampler("") is None


def test_export_format_by_name() -> None:
    """-o's ending chooses the format; a contradicting --format or a name kohya cannot
    read is refused."""
    assert export_format_for(None, None) == "kohya"
    assert export_format_for(Path("p.toml"), None) == "toml"
    assert export_format_for(Path("p.txt"), "kohya") == "kohya"
    with pytest.raises(InvalidInput, match="as toml, not as kohya"):
        export_format_for(Path("p.toml"), "kohya")
    with pytest.raises(InvalidInput, match="only from"):
        export_format_for(Path("p.md"), "kohya")


def test_prompt_for_sample() -> None:
    """A sample's index and seed suffix must agree with the file: otherwise no prompt."""
    prompts = parse_prompts("a --d 4\nb\n", "txt")
    assert prompt_for_sample(prompts, 0, 4) == prompts[0]
    assert prompt_for_sample(prompts, 1, None) == prompts[1]
    assert prompt_for_sample(prompts, 0, None) is None  # seed set, no suffix: file changed
    assert prompt_for_sample(prompts, 1, 9) is None
    assert prompt_for_sample(prompts, 2, None) is None


def _cli(url: str, *args: str) -> Any:
    return CliRunner().invoke(cli, ["--database-url", url, *args])


def test_prompt_export_command(db_url: str, tmp_path: Path) -> None:
    """`prompt export` prints or writes the active prompts in id order; notes on stderr;
    a prompt .txt cannot hold is refused with one line and nothing written."""
    assert _cli(db_url, "prompt", "export").exit_code == 1
    for args in (
        ["first", "--text", "a cat on a mat", "--seed", "3", "--sampler", "Euler a"],
        ["second", "--text", "a dog", "--sampler", "DPM++ 2M Karras", "--cfg", "6"],
        ["retired", "--text", "old"],
    ):
        assert _cli(db_url, "prompt", "add", *args).exit_code == 0
    assert _cli(db_url, "prompt", "retire", "retired").exit_code == 0
    printed = _cli(db_url, "prompt", "export")
    assert printed.exit_code == 0, printed.output
    assert printed.stdout.splitlines()[1:] == ["a cat on a mat --d 3 --ss euler_a", "a dog --l 6"]
    assert "no sampler 'DPM++ 2M Karras'" in printed.stderr
    target = tmp_path / "prompts.toml"
    written = _cli(db_url, "prompt", "export", "-o", str(target))
    assert written.exit_code == 0 and "--sample_prompts" in written.stderr
    found = read_prompts_file(target)
    assert [p.prompt for p in parse_prompts(found.content, found.format)] == [
        "a cat on a mat", "a dog",
    ]  # fmt: skip
    assert _cli(db_url, "prompt", "add", "bad", "--text", "x --y").exit_code == 0
    refused = _cli(db_url, "prompt", "export", "-o", str(tmp_path / "p.txt"))
    assert refused.exit_code == 1
    assert "'bad'" in refused.output and "--format toml" in refused.output
    assert not (tmp_path / "p.txt").exists()
    # a file name kohya would not read, or one contradicting --format: a usage error
    for args in (
        ["-o", str(tmp_path / "p.yaml")],
        ["-o", str(tmp_path / "p.json"), "--format", "toml"],
    ):
        wrong = _cli(db_url, "prompt", "export", *args)
        assert wrong.exit_code == 2, wrong.output
        assert len(wrong.output.strip().splitlines()) == 1
    assert not (tmp_path / "p.yaml").exists() and not (tmp_path / "p.json").exists()
