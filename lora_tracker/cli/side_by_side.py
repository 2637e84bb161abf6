"""Tables with one column per run (`compare`), laid out to fit the terminal without losing
a run: long values wrap inside their column, and when the runs cannot all stand side by
side at a readable width they are shown in blocks of as many as fit, the first columns
(the setting, the epoch) repeated in each block. With no width (piped output, --wide) the
table is printed whole, on one line a row, as every other table."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .output import display_cell, escape_control, format_table

RUN_COLUMN_FLOOR = 18  # runs narrower than this each go to a block of their own
_GAP = 2


def format_side_by_side(
    fixed: Sequence[str],
    runs: Sequence[str],
    rows: Sequence[Sequence[Any]],
    *,
    width: int | None,
    block_note: str = "",
) -> str:
    """``rows`` (values of the ``fixed`` columns, then one per run) as a table that fits
    ``width``: every run and every value shown, long ones wrapped, the runs in blocks
    when they do not fit side by side (each headed by which runs it shows, and
    ``block_note``)."""
    columns = [*fixed, *runs]
    if width is None:
        return format_table(columns, rows, width=None)
    from rich.cells import cell_len

    headers = [escape_control(str(c), keep_newlines=False) for c in columns]
    cells = [[display_cell(v) for v in row] for row in rows]
    natural = [max([cell_len(h), *(cell_len(r[i]) for r in cells)]) for i, h in enumerate(headers)]
    count = len(fixed)
    fixed_width = sum(natural[:count]) + _GAP * (count - 1)
    room = width - fixed_width
    blocks = _blocks(natural[count:], room)
    right = [_numeric([row[i] for row in rows]) for i in range(count)]
    out: list[str] = []
    for number, block in enumerate(blocks):
        shown = list(range(count)) + [count + i for i in block]
        widths = natural[:count] + _share([natural[count + i] for i in block], room)
        if len(blocks) > 1:
            first, last = block[0] + 1, block[-1] + 1
            which = f"run {first}" if first == last else f"runs {first}-{last}"
            note = f"; {block_note}" if block_note else ""
            out.append(("\n" if number else "") + f"({which} of {len(runs)}{note})")
        out.extend(_lines([headers[i] for i in shown], widths, [False] * len(shown)))
        out.append(" ".join("-" * (w + 1) for w in widths[:-1]) + " " + "-" * widths[-1])
        for row in cells:
            aligned = right + [False] * len(block)
            out.extend(_lines([row[i] for i in shown], widths, aligned))
    return "\n".join(line.rstrip() for line in out)


def _numeric(values: Sequence[Any]) -> bool:
    present = [v for v in values if v is not None and v != ""]
    return bool(present) and all(isinstance(v, int) and not isinstance(v, bool) for v in present)


def _blocks(natural: list[int], room: int) -> list[list[int]]:
    """The run columns (indexes) in blocks, each as many as fit ``room`` at their floor
    width (a value shorter than the floor needs only its own width); as few blocks as
    that takes, of even size (5 runs that fit 4 a block: 3 and 2, not 4 and 1)."""

    def fits(block: list[int]) -> bool:
        return sum(_GAP + min(natural[i], RUN_COLUMN_FLOOR) for i in block) <= room

    greedy: list[list[int]] = [[]]
    for i in range(len(natural)):
        if greedy[-1] and not fits([*greedy[-1], i]):
            greedy.append([])
        greedy[-1].append(i)
    count = len(greedy)
    size = -(-len(natural) // count)
    even = [list(range(start, min(start + size, len(natural))))
            for start in range(0, len(natural), size)]  # fmt: skip
    return even if len(even) == count and all(map(fits, even)) else greedy


def _share(natural: list[int], room: int) -> list[int]:
    """Widths for one block's run columns in ``room``: each its natural width when all
    fit; else the narrow ones whole and the rest sharing what is left evenly."""
    space = max(room - _GAP * len(natural), len(natural) * 4)
    widths = list(natural)
    if sum(natural) <= space:
        return widths
    open_ = sorted(range(len(natural)), key=lambda i: natural[i])
    while open_:
        fair = space // len(open_)
        if natural[open_[0]] > fair:
            for n, i in enumerate(open_):  # the remainder to the first columns
                widths[i] = fair + (1 if n < space - fair * len(open_) else 0)
            break
        space -= natural[open_[0]]
        open_.pop(0)
    return widths


def _lines(texts: list[str], widths: list[int], right: list[bool]) -> list[str]:
    """One row, each cell wrapped to its width: as many lines as its tallest cell."""
    from rich.cells import cell_len

    wrapped = [_wrap(text, w) for text, w in zip(texts, widths, strict=True)]
    lines = []
    for n in range(max(len(w) for w in wrapped)):
        parts = []
        for cell, w, align_right in zip(wrapped, widths, right, strict=True):
            text = cell[n] if n < len(cell) else ""
            pad = " " * (w - cell_len(text))
            parts.append(pad + text if align_right else text + pad)
        lines.append((" " * _GAP).join(parts))
    return lines


def _wrap(text: str, width: int) -> list[str]:
    """``text`` in lines of at most ``width`` terminal cells: broken after spaces, hyphens,
    underscores and slashes where it can (paths and names break at their parts), anywhere
    where it must."""
    import re

    from rich.cells import cell_len, chop_cells

    if cell_len(text) <= width:
        return [text]
    lines: list[str] = []
    line = ""
    for piece in re.findall(r"[^\s/_-]*(?:[/_-]+|\s+|$)", text):
        if not piece:
            continue
        if line and cell_len(line + piece.rstrip()) > width:
            lines.append(line.rstrip())
            line = ""
        if not line:
            piece = piece.lstrip()
        while cell_len(piece.rstrip()) > width:  # longer than a line: cut where it must
            head, *_ = chop_cells(piece, width)
            lines.append(head)
            piece = piece[len(head) :]
        line += piece
    if line.strip():
        lines.append(line.rstrip())
    return lines or [""]
