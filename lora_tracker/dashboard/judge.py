"""The judging view's files: one HTML page (rendered once per server, with what it needs to
write) and its script and style sheet, served as they are. The data comes from
``api/judge``; writes go to the routes of :mod:`.writes` through ``static/write.js``."""

from __future__ import annotations

from functools import cache
from importlib import resources

# route -> (file in this package, content type)
JUDGE_FILES = {
    "/static/judge.js": ("judge.js", "text/javascript; charset=utf-8"),
    "/static/judge.css": ("judge.css", "text/css; charset=utf-8"),
}


@cache
def judge_file(name: str) -> bytes:
    """One of the view's files, read once from the package."""
    return (resources.files("lora_tracker.dashboard") / name).read_bytes()


def render_judge_page(write_tags: str) -> str:
    """The page at ``/judge``, with the server's ``write_tags`` (its write mode: off on a
    read-only server, on with the token inlined, or ask for it), as the dashboard's page."""
    return judge_file("judge.html").decode("utf-8").replace("__WRITE__", write_tags)
