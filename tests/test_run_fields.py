"""`valid_run_fields` keeps a plainly right value without pydantic (run_fields.py's checks)
and asks the pydantic model (run_model.RunFields) otherwise: the two must give the same
answer for every field and value, which these tests check over a spread of values."""

from __future__ import annotations

import logging
import math
from datetime import datetime, timezone
from decimal import Decimal
from typing import Any

import pytest

from lora_tracker import run_fields
from lora_tracker.run_fields import RUN_FIELD_NAMES, valid_run_fields
from lora_tracker.run_model import RunFields, validated_run_fields

PROBES: list[Any] = [
    None, 0, 1, 7, 10, 11, -1, 2**31 - 1, 2**31, -(2**31), 2**63 - 1, 2**63, -(2**63),
    -(2**63) - 1, True, False,
    0.0, 1e-4, 2.5, -0.5, math.inf, -math.inf, math.nan,
    Decimal("0"), Decimal("1.50"), Decimal("-1"), Decimal("NaN"), Decimal("Infinity"),
    "", "x", "4", "1e-4", "512x768", "512x768\n", "512 x 768", "\uff15\uff11\uff12x768",
    "completed", "SDXL", "success", "in_progress", "2024-11-09T10:00:00",
    datetime(2024, 11, 9, 10, 0), datetime(2024, 11, 9, 10, 0, tzinfo=timezone.utc),
    [], ["a", "b"], ["a", 1], [1, 2], {}, {"a": 1}, {"a": "b"}, {"a": 1.5}, {1: "a"},
    {"a": {"b": [1, 2]}}, ("a",), {"a"}, b"x", object(),
]  # fmt: skip


def _same(fast: dict[str, Any], slow: dict[str, Any]) -> bool:
    if fast.keys() != slow.keys():
        return False
    for name, value in fast.items():
        other = slow[name]
        if type(value) is not type(other) or repr(value) != repr(other):
            return False
    return True


def test_every_field_of_the_model_has_a_check() -> None:
    assert frozenset(RunFields.model_fields) == RUN_FIELD_NAMES


@pytest.mark.parametrize("name", sorted(RUN_FIELD_NAMES))
def test_a_value_the_check_keeps_is_what_the_model_returns(name: str) -> None:
    kept = 0
    for value in PROBES:
        if value is not None and not run_fields._CHECKS[name](value):
            continue
        kept += 1
        slow = validated_run_fields({name: value}, "python")
        fast = valid_run_fields({name: value})
        assert _same(fast, slow), (name, value, fast, slow)
    assert kept >= 2  # None and at least one real value take the fast way


def test_a_value_the_check_leaves_gets_the_models_answer(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING)
    for name in sorted(RUN_FIELD_NAMES):
        for value in PROBES:
            fields = {name: value, "trainer": "kohya"}
            assert _same(valid_run_fields(fields), validated_run_fields(fields, "python"))


def test_the_fast_way_needs_no_pydantic_and_copies_containers() -> None:
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from lora_tracker.run_fields import valid_run_fields\n"
        "config = {'args': {'lr': 1e-4}}\n"
        "out = valid_run_fields({'network_dim': 8, 'learning_rate': 1e-4, 'config': config,"
        " 'network_alpha': __import__('decimal').Decimal('4'), 'resolution': '512x512'})\n"
        "out['config']['args']['lr'] = 1\n"
        "print(config['args']['lr'], sorted(out), 'pydantic' in sys.modules)\n"
        "valid_run_fields({'learning_rate': 1})\n"
        "print('pydantic' in sys.modules)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.split("\n")[:2] == [
        "0.0001 ['config', 'learning_rate', 'network_alpha', 'network_dim', 'resolution'] False",
        "True",  # an int learning rate: the model makes it a float
    ]


def test_a_bad_value_is_dropped_alone_with_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    out = valid_run_fields({"network_dim": 8, "network_alpha": Decimal("-1"), "nope": 1})
    assert out == {"network_dim": 8}
    said = [r.getMessage() for r in caplog.records]
    assert "lora-tracker: ignoring unknown run fields nope" in said
    assert "lora-tracker: ignoring invalid run fields network_alpha=Decimal('-1')" in said
