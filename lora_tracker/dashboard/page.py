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


def _script_json(data: Any) -> str:
    text = json.dumps(to_jsonable(data), ensure_ascii=False, separators=(",", ":"))
    return text.replace("</", "<\\/")  # never close the <script> early


POLL_S = 5.0  # how often the live page asks whether the data changed


def render_page(
    *,
    data: dict[str, Any] | None,
    plotly: str | None,
    live: bool,
    title: str = "lora-tracker",
    poll_s: float = POLL_S,
) -> str:
    """The page. ``plotly``: inline bundle (report) or None to load ``static/plotly.min.js``;
    ``data``: inline data (report) or None to fetch it (live), then every ``poll_s``."""
    plotly_tag = (
        f"<script>{plotly}</script>" if plotly is not None
        else '<script src="static/plotly.min.js"></script>'
    )  # fmt: skip
    data_tag = (
        f'<script type="application/json" id="data">{_script_json(data)}</script>'
        if data is not None else ""
    )  # fmt: skip
    template = (resources.files("lora_tracker.dashboard") / "page.html").read_text("utf-8")
    template = template.replace("__TITLE__", title).replace("__LIVE__", "true" if live else "false")
    template = template.replace("__POLL_MS__", str(max(100, round(poll_s * 1000))))
    # insert the (large, arbitrary) bundle and data last, so nothing in them is rescanned
    head, _, rest = template.partition("__PLOTLY__")
    middle, _, tail = rest.partition("__DATA__")
    return head + plotly_tag + middle + data_tag + tail
