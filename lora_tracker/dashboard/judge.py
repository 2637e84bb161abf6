"""The judging view's files: one HTML page (rendered once per server, with what it needs to
write) and its script and style sheet, served as they are. The data comes from
``api/judge``; writes go to the routes of :mod:`.writes` through ``static/write.js``."""

from __future__ import annotations

from functools import cache
from importlib import resources

from .page import write_tags

# route -> (file in this package, content type)
JUDGE_FILES = {
    "/static/judge.js": ("judge.js", "text/javascript; charset=utf-8"),
    "/static/judge.css": ("judge.css", "text/css; charset=utf-8"),
}


@cache
def judge_file(name: str) -> bytes:
    """One of the view's files, read once from the package."""
    return (resources.files("lora_tracker.dashboard") / name).read_bytes()


def render_judge_page(*, writes: str, token: str) -> bytes:
    """The page at ``/judge``: ``writes`` is off (read-only server), on (``token`` is
    inlined) or ask (the user enters the token), as for the dashboard's page."""
    template = judge_file("judge.html").decode("utf-8")
    return template.replace("__WRITE__", write_tags(writes, token)).encode("utf-8")
