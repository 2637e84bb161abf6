"""Phrases both documents use: counts, verdicts, the summary line and the footer."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable
from typing import Any

from ..markdown import DASH, code, day, number
from .data import ReportData, ReportScope

STATUS_WORDS = {"planned": "planned", "in_progress": "in progress", "failed": "training failed",
                "cancelled": "cancelled"}  # fmt: skip
VERDICT_ORDER = ("success", "partial", "failure", "pending")


def summary_line(data: ReportData) -> str:
    """How many runs, over which dates, how they turned out."""
    scope = data.scope.describe()
    within = f" ({scope})" if scope else ""
    if not data.runs:
        return f"No runs match ({scope})." if scope else "No runs recorded yet."
    first, last = day(data.runs[0]["run_date"]), day(data.runs[-1]["run_date"])
    span = f"on {first}" if first == last else f"from {first} to {last}"
    verdicts = Counter(r["overall_verdict"] for r in data.runs)
    line = f"{count(len(data.runs), 'run')}{within} {span}: {verdict_counts(verdicts)}"
    running = sum(r["status"] in ("in_progress", "planned") for r in data.runs)
    if running:
        line += f"; {running} still in progress"
    return line + "."


def verdict_counts(verdicts: Counter[str]) -> str:
    words = {
        "success": ("success", "successes"),
        "partial": ("partial", "partial"),
        "failure": ("failure", "failures"),
        "pending": ("not judged", "not judged"),
    }
    parts = [f"{verdicts[v]} {words[v][verdicts[v] != 1]}" for v in VERDICT_ORDER if verdicts[v]]
    return join(parts)


def footer_line(scope: ReportScope, which: str) -> str:
    """How the document was made, so nobody edits it by hand."""
    command = " ".join(p for p in ("lora-tracker report --format md", which, scope.options())
                       if p)  # fmt: skip
    return (
        f"*Written by {code(command)} from the training record. Regenerate it after a run "
        "rather than editing it by hand.*"
    )


def quality(run: dict[str, Any]) -> str:
    return DASH if run["quality_score"] is None else f"{run['quality_score']}/10"


def dim_alpha(run: dict[str, Any]) -> str:
    if run["network_dim"] is None and run["network_alpha"] is None:
        return DASH
    return f"{number(run['network_dim'])} / {number(run['network_alpha'])}"


def epoch_numbers(numbers: Iterable[int]) -> str:
    """1, 2, 3, 5, 7, 8 -> '1-3, 5, 7, 8', runs of three or more as a range (en dash)."""
    values = sorted(set(numbers))
    parts: list[str] = []
    start = 0
    while start < len(values):
        end = start
        while end + 1 < len(values) and values[end + 1] == values[end] + 1:
            end += 1
        if end - start >= 2:
            parts.append(f"{values[start]}{DASH}{values[end]}")
        else:
            parts.extend(str(v) for v in values[start : end + 1])
        start = end + 1
    return ", ".join(parts)


def count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def join(items: Iterable[str]) -> str:
    words = list(items)
    if len(words) <= 2:
        return " and ".join(words)
    return ", ".join(words[:-1]) + " and " + words[-1]


def shorten(value: str, limit: int) -> str:
    """One line of at most ``limit`` characters, cut at a word with an ellipsis."""
    line = " ".join(value.split())
    if len(line) <= limit:
        return line
    cut = line[: limit - 1].rsplit(" ", 1)[0].rstrip(",;:")
    return cut + "…"


def first_sentence(value: str) -> str:
    """The text up to the end of its first sentence, on one line.

    A sentence ends at . ! or ? after a word (not "1.") and before a capital letter.
    """
    line = " ".join(value.split())
    return re.split(r"(?<=[^\s\d][.!?])\s+(?=[A-Z])", line, maxsplit=1)[0]
