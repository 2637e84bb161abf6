"""Database values as JSON values (for --json, exports, spool-free payloads, the dashboard)."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any


def to_jsonable(value: Any) -> Any:
    """Database values as JSON values: numbers stay numbers, times become ISO 8601."""
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, (dt.datetime, dt.date, dt.time)):
        return value.isoformat()
    if isinstance(value, dt.timedelta):
        return value.total_seconds()
    if isinstance(value, (bytes, memoryview)):
        return bytes(value).hex()
    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v) for v in value]
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return str(value)
