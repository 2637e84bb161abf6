"""TRAINING_TIMELINE_TABLE.md: every run in date order, one row each."""

from __future__ import annotations

from typing import Any

from ..markdown import DASH, code, day, number, table, text
from .data import ReportData
from .words import (
    STATUS_WORDS,
    dim_alpha,
    first_sentence,
    footer_line,
    quality,
    shorten,
    summary_line,
)

TIMELINE_HEADERS = ("Date", "Run", "Model", "Base model", "Dim / alpha", "Resolution",
                    "Images", "Captions", "Epochs", "Best epoch", "Quality", "Verdict",
                    "Production ready", "Key findings")  # fmt: skip
TIMELINE_ALIGN = "llllrlrlrrrlll"
KEY_FINDING_WIDTH = 140  # the first sentence, cut at a word when longer


def timeline_markdown(data: ReportData, *, footer: str | None = "--timeline-only") -> str:
    """TRAINING_TIMELINE_TABLE.md: every run in date order, one row each.

    ``footer``: the option that writes this document alone, for the closing line that says
    how it was made (None: no closing line).
    """
    lines = ["# Training timeline", "", summary_line(data), ""]
    if data.runs:
        lines += [
            "Epochs: recorded / planned. Quality: the run's score out of 10. Dates in UTC.",
            "",
            table(TIMELINE_HEADERS, [_timeline_row(r) for r in data.runs], TIMELINE_ALIGN),
            "",
        ]
    if footer is not None:
        lines += [footer_line(data.scope, footer), ""]
    return "\n".join(lines)


def _timeline_row(run: dict[str, Any]) -> list[str]:
    planned = number(run["num_epochs"]) if run["num_epochs"] is not None else "?"
    return [
        day(run["run_date"]),
        code(run["run_name"], in_table=True),
        text(run["model_type"] or DASH),
        text(run["base_model"] or DASH),
        dim_alpha(run),
        text(run["resolution"] or DASH),
        number(run["num_images"]),
        code(run["caption_version"], in_table=True) if run["caption_version"] else DASH,
        f"{run['epochs_recorded']} / {planned}",
        number(run["best_epoch"]),
        quality(run),
        _verdict_cell(run),
        "yes" if run["production_ready"] else "no",
        text(shorten(first_sentence(run["key_findings"] or ""), KEY_FINDING_WIDTH)) or DASH,
    ]


def _verdict_cell(run: dict[str, Any]) -> str:
    status = STATUS_WORDS.get(run["status"])
    verdict = run["overall_verdict"]
    if verdict == "pending":
        verdict = "not judged"
    return f"{verdict} (**{status}**)" if status else verdict
