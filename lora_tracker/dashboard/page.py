"""The dashboard page: one HTML document with its CSS and JavaScript; charts by Plotly.

Live (served by `lora-tracker dashboard`): the page loads ``api/data`` and each run's
epochs from ``api/run/<id>``, and polls ``api/fingerprint`` to refresh when a training run
records something. Report (`lora-tracker report`): the data and Plotly itself are inlined,
so the file works anywhere, offline.
"""

from __future__ import annotations

import json
from importlib import resources
from typing import Any

from ..jsonable import to_jsonable

PLOTLY_PACKAGE_FILE = ("plotly", "package_data", "plotly.min.js")


def plotly_js() -> str:
    """Plotly's JavaScript bundle as shipped inside the plotly Python package."""
    package, *parts = PLOTLY_PACKAGE_FILE
    entry = resources.files(package)
    for part in parts:
        entry = entry / part
    return entry.read_text(encoding="utf-8")


# Inside <script> the HTML parser ends the element at "</script" and enters an escaped
# state at "<!--" (then "<script" makes it skip the real "</script>"): no "<", ">" or "&"
# may reach the page raw. U+2028/2029 are escaped too, for older JavaScript parsers.
_SCRIPT_ESCAPES = str.maketrans({
    "<": "\\u003c", ">": "\\u003e", "&": "\\u0026", "\u2028": "\\u2028", "\u2029": "\\u2029",
})  # fmt: skip


def script_json(data: Any) -> str:
    """``data`` as JSON that is safe inside a <script> element (nothing in it can end the
    element or open another); JSON.parse reads it back unchanged."""
    text = json.dumps(to_jsonable(data), ensure_ascii=False, separators=(",", ":"))
    return text.translate(_SCRIPT_ESCAPES)


def write_tags(writes: str, token: str) -> str:
    """What a live page carries to write: ``writes`` is off, on (``token`` is inlined) or
    ask (the user enters it); ``static/write.js`` reads these and offers ltWrite.post."""
    from html import escape

    return (
        f'<meta name="lt-writes" content="{escape(writes)}">'
        f'<meta name="lt-token" content="{escape(token)}">'
        '<script src="static/write.js"></script>'
    )


READ_ONLY_TAG = '<meta name="lt-writes" content="off">'
POLL_S = 5.0  # how often the live page asks whether the data changed


def render_page(
    *,
    data: dict[str, Any] | None,
    plotly: str | None,
    live: bool,
    title: str = "lora-tracker",
    poll_s: float = POLL_S,
    writes: str = "off",
    token: str = "",
) -> str:
    """The page. ``plotly``: inline bundle (report) or None to load ``static/plotly.min.js``;
    ``data``: inline data (report) or None to fetch it (live), then every ``poll_s``.
    ``writes``/``token``: see `write_tags` (live only; a report never writes)."""
    plotly_tag = (
        f"<script>{plotly}</script>" if plotly is not None
        else '<script src="static/plotly.min.js"></script>'
    )  # fmt: skip
    data_tag = (
        f'<script type="application/json" id="data">{script_json(data)}</script>'
        if data is not None else ""
    )  # fmt: skip
    template = (resources.files("lora_tracker.dashboard") / "page.html").read_text("utf-8")
    template = template.replace("__TITLE__", title).replace("__LIVE__", "true" if live else "false")
    template = template.replace("__POLL_MS__", str(max(100, round(poll_s * 1000))))
    template = template.replace("__WRITE__", write_tags(writes, token) if live else READ_ONLY_TAG)
    # insert the (large, arbitrary) bundle and data last, so nothing in them is rescanned
    head, _, rest = template.partition("__PLOTLY__")
    middle, _, tail = rest.partition("__DATA__")
    page = head + plotly_tag + middle + data_tag + tail
    if live:
        return page  # the server sends its policy as a header
    # a file has no headers: the report carries its policy, its own scripts by hash, in the
    # head (before anything it governs; the first "lt-writes" is the template's, in <head>)
    from html import escape

    from .gate import page_csp

    policy = escape(page_csp(page, served=False), quote=False)  # no " in a policy
    meta = f'<meta http-equiv="Content-Security-Policy" content="{policy}">'
    return page.replace(READ_ONLY_TAG, meta + READ_ONLY_TAG, 1)
