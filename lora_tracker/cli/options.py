"""Parameter types shared by the commands: epoch numbers, finite numbers, vocabularies
that accept any case."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import click


class EpochNumber(click.ParamType):  # type: ignore[type-arg]
    """A whole number, 0 or more: 'five' or '2.5' is refused in words people use."""

    name = "epoch"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int:
        if isinstance(value, int) and not isinstance(value, bool):
            number = value
        else:
            text = str(value).strip()
            if not (text.isascii() and text.lstrip("+-").isdigit()):
                label = param.human_readable_name if param is not None else "EPOCH"
                self.fail(f"{label} must be a whole number (0, 1, 2, ...), not {text!r}",
                          param, ctx)  # fmt: skip
            number = int(text)
        if number < 0:
            self.fail(f"an epoch number is 0 or more, not {number}", param, ctx)
        return number


class FiniteFloat(click.FloatRange):
    """A float in a range that is a real number: inf and nan are refused."""

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        number = super().convert(value, param, ctx)
        if isinstance(number, float) and not math.isfinite(number):
            self.fail(f"{value!r} is not a finite number", param, ctx)
        return number


class AnyCaseChoice(click.Choice[str]):
    """A vocabulary that accepts any case (sd15 gives SD15) and lists it as written."""

    def get_invalid_choice_message(self, value: Any, ctx: click.Context | None) -> str:
        listed = ", ".join(repr(str(c)) for c in self.choices)
        return f"{value!r} is not one of {listed}."


def choice(values: Sequence[str]) -> click.Choice[str]:
    """A vocabulary that accepts any case: --model-type sd15 gives SD15."""
    return AnyCaseChoice(list(values), case_sensitive=False)


EPOCH = EpochNumber()
FINITE_ZERO_OR_MORE = FiniteFloat(min=0)
FINITE_RATE = FiniteFloat(min=0)


def resolution(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """``--resolution``: ``512``, ``512,512`` or ``512x768`` as the record writes it."""
    from ..config_files import resolution_text
    from ..errors import InvalidValue

    if value is None:
        return None
    try:
        return resolution_text(value)
    except InvalidValue as exc:
        raise click.BadParameter(str(exc), ctx=ctx, param=param) from None
