"""The judging view's files: one HTML page with its script and style sheet, served as they
are (the data comes from ``api/judge``; writes go to the routes of :mod:`.writes`)."""

from __future__ import annotations

from functools import cache
from importlib import resources

# route -> (file in this package, content type)
JUDGE_FILES = {
    "/judge": ("judge.html", "text/html; charset=utf-8"),
    "/static/judge.js": ("judge.js", "application/javascript; charset=utf-8"),
    "/static/judge.css": ("judge.css", "text/css; charset=utf-8"),
}


@cache
def judge_file(name: str) -> bytes:
    """One of the view's files, read once from the package."""
    return (resources.files("lora_tracker.dashboard") / name).read_bytes()
