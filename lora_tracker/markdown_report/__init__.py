"""The two human-readable files of the reference document, written from the database:
TRAINING_TIMELINE_TABLE.md (every run in date order) and TRAINING_COMPARISON_ANALYSIS.md
(what changed from run to run, what the successes share, issues, production-ready epochs).

The data comes from the queries `runs`, `stats` and `compare` use (see ``data``); the rest
only writes text. The output is byte-stable: the same data gives the same bytes (dates in
UTC, every order fixed, no time of writing), so a copy kept in git changes only when the
record does.
"""

from __future__ import annotations

from ..pg import Connection
from .analysis import analysis_markdown
from .data import ReportData, ReportScope, collect
from .timeline import timeline_markdown

__all__ = ["ReportData", "ReportScope", "analysis_markdown", "collect", "render",
           "timeline_markdown"]  # fmt: skip


def render(
    conn: Connection,
    scope: ReportScope | None = None,
    *,
    timeline: bool = True,
    analysis: bool = True,
) -> str:
    """The timeline, the analysis, or both (timeline first), as one Markdown text."""
    data = collect(conn, scope)
    if timeline and analysis:  # one footer, at the end
        return timeline_markdown(data, footer=None) + "\n" + analysis_markdown(data, footer="")
    if timeline:
        return timeline_markdown(data)
    return analysis_markdown(data) if analysis else ""
