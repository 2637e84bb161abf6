"""TRAINING_COMPARISON_ANALYSIS.md: the findings in words, what changed from run to run,
what the successes share, the issues found most often, the production-ready epochs."""

from __future__ import annotations

import math
from collections import Counter
from decimal import Decimal
from typing import Any

from ..markdown import DASH, code, day, number, paragraph, table, text
from .data import ReportData
from .words import (
    STATUS_WORDS,
    VERDICT_ORDER,
    count,
    epoch_numbers,
    footer_line,
    join,
    quality,
    summary_line,
    verdict_counts,
)

COMPARED_SETTINGS = (
    ("base model", "base_model"), ("network module", "network_module"),
    ("network dim", "network_dim"), ("network alpha", "network_alpha"),
    ("resolution", "resolution"), ("images", "num_images"),
    ("caption version", "caption_version"), ("learning rate", "learning_rate"),
    ("U-Net learning rate", "unet_lr"), ("text encoder learning rate", "text_encoder_lr"),
    ("optimizer", "optimizer"), ("LR scheduler", "lr_scheduler"),
    ("epochs planned", "num_epochs"), ("max train steps", "max_train_steps"),
    ("batch size", "batch_size"), ("mixed precision", "mixed_precision"), ("seed", "seed"),
)  # fmt: skip
SETTING_LABELS = {
    "network_dim": "network dim", "network_alpha": "network alpha",
    "resolution": "resolution", "caption_version": "caption version",
    "learning_rate": "learning rate", "optimizer": "optimizer",
}  # fmt: skip
FLAGS = (("wrong backgrounds", "has_wrong_backgrounds"), ("random pixels", "has_random_pixels"),
         ("photorealistic", "is_photorealistic"))  # fmt: skip
SETTING_HEADERS = ("Setting", "Value", "Runs", "Success", "Partial", "Failure", "Not judged",
                   "Average quality")  # fmt: skip
COMBINATION_HEADERS = ("Dim", "Alpha", "Resolution", "Times tried", "Average quality",
                       "Best quality")  # fmt: skip
MAX_PLACES = 5  # runs named in a "where" cell; the rest are counted


def analysis_markdown(data: ReportData, *, footer: str | None = "--analysis-only") -> str:
    """TRAINING_COMPARISON_ANALYSIS.md: findings, run-by-run changes, what worked, issues,
    production-ready epochs.

    ``footer``: the option that writes this document alone, for the closing line that says
    how it was made (None: no closing line).
    """
    lines = ["# Training comparison analysis", "", summary_line(data), ""]
    if data.runs:
        sections = (_in_short, _success_rates, _what_worked, _run_by_run, _issues,
                    _production_ready)  # fmt: skip
        for section in sections:
            lines += [*section(data), ""]
    if footer is not None:
        lines += [footer_line(data.scope, footer), ""]
    return "\n".join(lines)


def _in_short(data: ReportData) -> list[str]:
    lines = ["## In short", ""]
    by_type: dict[str, list[dict[str, Any]]] = {}
    for run in data.runs:
        by_type.setdefault(run["model_type"] or "", []).append(run)
    order = [r["model_type"] or "" for r in data.stats["success_rate"]]
    for model_type in order:
        judged = [r for r in by_type.get(model_type, []) if r["overall_verdict"] != "pending"]
        judged.sort(key=_rank)
        if len(judged) <= 3:
            lines += [f"- {_outcome_sentence(r)}" for r in judged]
        else:  # the best and the worst; every run is in the run-by-run part
            kind = text(model_type or "unknown model type")
            lines += [f"- Best of {len(judged)} judged {kind} runs: "
                      f"{_outcome_sentence(judged[0])}",
                      f"- Worst: {_outcome_sentence(judged[-1])}"]  # fmt: skip
    pending = [r for r in data.runs if r["overall_verdict"] == "pending"]
    if pending:
        names = ", ".join(f"{code(r['run_name'])}{_progress(r)}" for r in pending)
        lines.append(f"- Not judged yet: {names}.")
    verdicts = Counter(r["overall_verdict"] for r in data.runs)
    apart = _compare_settings(data)[0]
    if verdicts["success"] and verdicts["failure"]:
        every = "The successful run" if verdicts["success"] == 1 else "Every successful run"
        lines.append(f"- {every} had {join(apart)}; no failed run did." if apart else
                     "- No setting value was shared by every success and avoided by every "
                     "failure.")  # fmt: skip
    lines += [f"- {s}" for s in _shared_by_all(data)]
    return lines


def _rank(run: dict[str, Any]) -> tuple[Any, ...]:
    verdict = VERDICT_ORDER.index(run["overall_verdict"])
    score = run["quality_score"] if run["quality_score"] is not None else -1
    return (-score, verdict, run["run_date"], run["id"])


def _outcome_sentence(run: dict[str, Any]) -> str:
    """'SD15 at dim 32 / alpha 16, 512x512 **succeeded** (9/10): `name`, ...'"""
    settings = []
    if run["network_dim"] is not None:
        settings.append(f"dim {number(run['network_dim'])}")
    if run["network_alpha"] is not None:
        settings.append(f"alpha {number(run['network_alpha'])}")
    described = text(run["model_type"] or "unknown model type")
    if settings:
        described += " at " + " / ".join(settings)
    if run["resolution"]:
        described += ", " + text(run["resolution"])
    in_progress = run["status"] in ("in_progress", "planned")
    verdict = {
        "success": "**succeeded**",
        "failure": "**failed**",
        "partial": "is **partial** so far" if in_progress else "was **partial**",
    }[run["overall_verdict"]]
    detail = quality(run) if run["quality_score"] is not None else "no score"
    if run["overall_verdict"] != "success" and run["issues_found"]:
        detail += ": " + ", ".join(text(i) for i in run["issues_found"])
    tail = [code(run["run_name"])]
    if run["production_ready"]:
        best = f" at epoch {run['best_epoch']}" if run["best_epoch"] is not None else ""
        tail.append(f"production ready{best}")
    if run["status"] != "completed":
        tail.append(f"still {STATUS_WORDS[run['status']]}{_progress(run)}"
                    if in_progress else STATUS_WORDS[run["status"]])  # fmt: skip
    return f"{described} {verdict} ({detail}): {', '.join(tail)}."


def _progress(run: dict[str, Any]) -> str:
    if run["num_epochs"]:
        return f" ({run['epochs_recorded']} of {run['num_epochs']} epochs recorded)"
    return f" ({count(run['epochs_recorded'], 'epoch')} recorded)"


def _setting_rows(data: ReportData) -> dict[str, list[dict[str, Any]]]:
    """The outcome_by_setting rows by setting, values in numeric order where they are
    numbers (the same order on every server, whatever its collation)."""
    grouped: dict[str, list[dict[str, Any]]] = {}
    for row in data.stats["outcome_by_setting"]:
        grouped.setdefault(row["setting"], []).append(row)
    for rows in grouped.values():
        rows.sort(key=lambda r: (_magnitude(r["value"]), r["value"]))
    return grouped


def _magnitude(value: str) -> float:
    """'32' -> 32, '512x768' -> 393216; text (caption versions, optimizers) after numbers."""
    product = 1.0
    try:
        for factor in value.split("x"):
            product *= float(factor)
    except ValueError:
        return math.inf
    return product if math.isfinite(product) else math.inf


def _value(setting: str, value: Any) -> str:
    """A setting's value in running text (the stats query gives it as text)."""
    if value is None:
        return DASH
    if setting == "learning_rate":
        return number(float(value))
    if setting in ("caption_version", "optimizer"):
        return code(value)
    return text(value)


def _shared_by_all(data: ReportData) -> list[str]:
    """Values every run had although the outcomes differ: they alone did not decide it."""
    total = len(data.runs)
    outcomes = Counter(r["overall_verdict"] for r in data.runs)
    judged = {v for v in outcomes if v != "pending"}
    if total < 2 or len(judged) < 2:
        return []
    shared = [
        f"{SETTING_LABELS[setting]} {_value(setting, row['value'])}"
        for setting, rows in _setting_rows(data).items()
        for row in rows
        if row["runs"] == total
    ]
    if not shared:
        return []
    every = "Both" if total == 2 else f"All {total}"
    return [
        f"{every} runs used {join(shared)}, with {verdict_counts(outcomes)}: "
        f"{'this' if len(shared) == 1 else 'these'} alone did not decide the outcome."
    ]


def _success_rates(data: ReportData) -> list[str]:
    rows = [
        [text(r["model_type"] or "unknown"), number(r["total_runs"]), number(r["successful"]),
         f"{number(r['success_pct'])}%", number(r["avg_quality"])]
        for r in data.stats["success_rate"]
    ]  # fmt: skip
    return ["## Success rate by model type", "",
            table(("Model", "Runs", "Successful", "Success rate", "Average quality"), rows,
                  "lrrrr")]  # fmt: skip


def _what_worked(data: ReportData) -> list[str]:
    lines = ["## What the successful runs share", ""]
    verdicts = Counter(r["overall_verdict"] for r in data.runs)
    if not verdicts["success"]:
        lines += ["No run has succeeded yet.", ""]
    else:
        lines += _share_lines(data)
    settings = _setting_table(data)
    if not settings:
        return [*lines, "No network dim, alpha, resolution, captions, learning rate or "
                "optimizer recorded yet."]  # fmt: skip
    lines += [
        "How the runs with each value of a setting turned out:",
        "",
        table(SETTING_HEADERS, settings, "llrrrrrr"),
    ]
    best = data.stats["best_parameters"]
    if best:
        rows = [[number(r["network_dim"]), number(r["network_alpha"]), text(r["resolution"] or
                 DASH), number(r["times_tried"]), number(r["avg_quality"]),
                 number(r["best_quality"])] for r in best]  # fmt: skip
        lines += ["", "Network and resolution combinations, best average quality first "
                  "(judged runs):", "",
                  table(COMBINATION_HEADERS, rows, "rrlrrr")]  # fmt: skip
    return lines


def _compare_settings(data: ReportData) -> tuple[list[str], list[str], list[str]]:
    """Per setting: the value every success had and no failure had (apart), the value every
    success had and some failures too (alike), or the values the successes differ in."""
    successes = sum(r["overall_verdict"] == "success" for r in data.runs)
    apart: list[str] = []
    alike: list[str] = []
    differ: list[str] = []
    for setting, rows in _setting_rows(data).items():
        with_success = [r for r in rows if r["successful"]]
        label = SETTING_LABELS[setting]
        if len(with_success) > 1:
            differ.append(f"{label} ({join(_value(setting, r['value']) for r in with_success)})")
        elif with_success and with_success[0]["successful"] == successes:
            row = with_success[0]
            value = f"{label} {_value(setting, row['value'])}"
            if row["failed"]:
                alike.append(f"{value} ({count(row['failed'], 'failure')} too)")
            else:
                apart.append(value)
    return apart, alike, differ


def _share_lines(data: ReportData) -> list[str]:
    apart, alike, differ = _compare_settings(data)
    lines = []
    if apart:
        failures = any(r["overall_verdict"] == "failure" for r in data.runs)
        lines.append(f"- **Only in successes:** {join(apart)}"
                     + ("; no failed run had these." if failures else "."))  # fmt: skip
    if alike:
        lines.append(f"- **In successes and failures alike** (so not what decided it): "
                     f"{join(alike)}.")  # fmt: skip
    if differ:
        lines.append(f"- **Differ among the successes:** {join(differ)}.")
    return [*lines, ""] if lines else []


def _setting_table(data: ReportData) -> list[list[str]]:
    rows = []
    for setting, values in _setting_rows(data).items():
        for index, row in enumerate(values):
            value = row["value"]
            shown = number(float(value)) if setting == "learning_rate" else value
            rows.append([
                SETTING_LABELS[setting] if index == 0 else "",
                code(shown, in_table=True) if setting in ("caption_version", "optimizer")
                else text(shown),
                number(row["runs"]), number(row["successful"]), number(row["partial"]),
                number(row["failed"]), number(row["pending"]), number(row["avg_quality"]),
            ])  # fmt: skip
    return rows


def _run_by_run(data: ReportData) -> list[str]:
    lines = ["## Run by run", "",
             "Each run against the run before it with the same model type: the settings "
             "that changed and how the outcome moved.", ""]  # fmt: skip
    previous: dict[str | None, dict[str, Any]] = {}
    for run in data.runs:
        before = previous.get(run["model_type"])
        lines += _run_section(run, before, data.epochs.get(run["id"], []))
        previous[run["model_type"]] = run
    return lines[:-1]


def _run_section(
    run: dict[str, Any], before: dict[str, Any] | None, run_epochs: list[dict[str, Any]]
) -> list[str]:
    lines = [f"### {day(run['run_date'])} · {code(run['run_name'])}", ""]
    state = [text(run["model_type"] or "unknown model type"), _verdict_words(run)]
    if run["production_ready"]:
        best = f" (best epoch {run['best_epoch']})" if run["best_epoch"] is not None else ""
        state.append(f"production ready{best}")
    elif run["best_epoch"] is not None:
        state.append(f"best epoch {run['best_epoch']}")
    if run["status"] != "completed":
        state.append(f"**{STATUS_WORDS[run['status']]}**")
    lines += [" · ".join(state) + ".", ""]
    if before is None:
        settings = [f"{label} {_setting_value(run, column)}"
                    for label, column in COMPARED_SETTINGS if run[column] is not None]  # fmt: skip
        first = f"First {text(run['model_type'])} run" if run["model_type"] else "First run"
        lines += [f"{first} in this report" + (f": {', '.join(settings)}." if settings else "."),
                  ""]  # fmt: skip
    else:
        lines += _changes(run, before)
    notes = [("Key findings", run["key_findings"]), ("Failure", run["failure_reason"])]
    for label, value in notes:
        if value and value.strip():
            lines += [f"**{label}:** {paragraph(value)}", ""]
    for label, items in (("Issues", run["issues_found"]), ("Strengths", run["strengths"])):
        if items:
            lines += [f"**{label}:** " + "; ".join(text(i) for i in items) + ".", ""]
    lines += [_epochs_line(run, run_epochs), ""]
    return lines


def _changes(run: dict[str, Any], before: dict[str, Any]) -> list[str]:
    since = f"{code(before['run_name'])} ({day(before['run_date'])})"
    changed = [
        [text(label), _setting_value(before, column, in_table=True),
         _setting_value(run, column, in_table=True)]
        for label, column in COMPARED_SETTINGS
        # a setting one of the two did not record is unknown, not changed
        if before[column] is not None and run[column] is not None
        and _comparable(before[column]) != _comparable(run[column])
    ]  # fmt: skip
    if changed:
        lines = [f"Changed from {since}:", "", table(("Setting", "Before", "Now"), changed), ""]
    else:
        lines = [f"Same settings as {since}.", ""]
    return [*lines, f"Outcome: {_movement(before, run)}", ""]


def _comparable(value: Any) -> Any:
    """Numbers compared as written (alpha 16 and 16.0 are the same setting)."""
    return number(value) if isinstance(value, (int, float, Decimal)) else value


def _setting_value(run: dict[str, Any], column: str, *, in_table: bool = False) -> str:
    value = run[column]
    if value is None:
        return DASH
    if column in ("caption_version", "base_model", "optimizer", "network_module"):
        return code(value, in_table=in_table)
    if isinstance(value, str):
        return text(value)
    return number(value)


def _movement(before: dict[str, Any], now: dict[str, Any]) -> str:
    old, new = _verdict_words(before), _verdict_words(now)
    if before["quality_score"] is None or now["quality_score"] is None:
        return f"{old} → {new}."
    delta = now["quality_score"] - before["quality_score"]
    if delta == 0:
        moved = "the same quality"
    else:
        moved = f"{count(abs(delta), 'point')} {'better' if delta > 0 else 'worse'}"
    return f"{old} → {new}, {moved}."


def _verdict_words(run: dict[str, Any]) -> str:
    if run["overall_verdict"] == "pending":
        return "not judged yet"
    score = f" ({quality(run)})" if run["quality_score"] is not None else ""
    return f"{run['overall_verdict']}{score}"


def _epochs_line(run: dict[str, Any], run_epochs: list[dict[str, Any]]) -> str:
    planned = f" of {run['num_epochs']}" if run["num_epochs"] else ""
    line = f"**Epochs:** {run['epochs_recorded']}{planned} recorded"
    if not run_epochs:
        return line + "."
    line += f" ({epoch_numbers(e['epoch_number'] for e in run_epochs)})"
    scores = [e["visual_quality_score"] for e in run_epochs
              if e["visual_quality_score"] is not None]  # fmt: skip
    if scores:
        low, high = min(scores), max(scores)
        spread = f"{low}" if low == high else f"{low} to {high}"
        line += f"; visual quality {spread} out of 10"
    flagged = [f"{label} ({_epoch_word(run_epochs, column)})" for label, column in FLAGS
               if any(e[column] for e in run_epochs)]  # fmt: skip
    if flagged:
        line += ". Flagged: " + "; ".join(flagged)
    return line + "."


def _epoch_word(run_epochs: list[dict[str, Any]], column: str) -> str:
    numbers = [e["epoch_number"] for e in run_epochs if e[column]]
    noun = "epoch" if len(numbers) == 1 else "epochs"
    return f"{noun} {epoch_numbers(numbers)}"


def _issues(data: ReportData) -> list[str]:
    lines = ["## Issues found most often", ""]
    where: dict[str, list[dict[str, Any]]] = {}
    for run in data.runs:
        for issue in dict.fromkeys(" ".join(i.split()) for i in run["issues_found"]):
            where.setdefault(issue, []).append(run)
    if where:
        ranked = sorted(where.items(), key=lambda item: (
            -len(item[1]), -sum(r["overall_verdict"] == "failure" for r in item[1]),
            item[0].casefold(), item[0]))  # fmt: skip
        rows = [[text(issue), number(len(found)),
                 number(sum(r["overall_verdict"] == "failure" for r in found)),
                 _places([code(r["run_name"], in_table=True) for r in found], ", ")]
                for issue, found in ranked]  # fmt: skip
        lines += [table(("Issue", "Runs", "In failed runs", "Where"), rows, "lrrl"), ""]
    else:
        lines += ["No issues recorded.", ""]
    flag_rows = []
    for label, column in FLAGS:
        places = [(run, [e["epoch_number"] for e in data.epochs.get(run["id"], []) if e[column]])
                  for run in data.runs]  # fmt: skip
        places = [(run, numbers) for run, numbers in places if numbers]
        if places:
            flag_rows.append([
                label, number(sum(len(n) for _, n in places)),
                _places([f"{code(run['run_name'], in_table=True)} ({epoch_numbers(numbers)})"
                         for run, numbers in places], "; "),
            ])  # fmt: skip
    if flag_rows:
        lines += ["Flags set on epochs:", "",
                  table(("Flag", "Epochs", "Where (epochs)"), flag_rows, "lrl")]  # fmt: skip
    else:
        lines.append("No epoch is flagged (wrong backgrounds, random pixels, photorealistic).")
    return lines


def _places(names: list[str], separator: str) -> str:
    """The first MAX_PLACES names, then how many more."""
    if len(names) <= MAX_PLACES:
        return separator.join(names)
    return separator.join(names[:MAX_PLACES]) + f" and {len(names) - MAX_PLACES} more"


def _production_ready(data: ReportData) -> list[str]:
    lines = ["## Production-ready epochs", ""]
    rows = []
    for run in data.runs:
        for e in data.epochs.get(run["id"], []):
            if e["production_ready"]:
                on_disk = {True: "yes", False: "removed", None: "not checked"}
                rows.append([
                    code(run["run_name"], in_table=True), number(e["epoch_number"]),
                    "/".join(DASH if e[c] is None else str(e[c]) for c in
                             ("visual_quality_score", "style_match_score",
                              "prompt_adherence_score")),
                    text(e["verdict"] or DASH),
                    code(e["checkpoint_path"], in_table=True) if e["checkpoint_path"] else DASH,
                    on_disk[e["checkpoint_on_disk"]],
                ])  # fmt: skip
    if not rows:
        return [*lines, "No epoch is marked production ready yet."]
    return [*lines, table(("Run", "Epoch", "Visual / style / adherence", "Verdict",
                           "Checkpoint file", "On disk"), rows, "lrrlll")]  # fmt: skip
