"""Aligned text tables for the views' long outputs (a report has tens of thousands of rows).

rich's Table measures every cell through its console and renders segment by segment:
24.5k report rows took it about 14 s.  Here the column widths are found in one pass over
each column and every line is made by one format string, so a table costs about what its
JSON lines do.  The look is rich's with box=None: columns two spaces apart under a header
line, the last column not padded.
"""

from __future__ import annotations

from typing import Sequence

GAP = "  "


def format_columns(header: Sequence[str], columns: Sequence[Sequence[str]],
                   right: Sequence[bool] = ()) -> str:
    """The table as text, the header line then one line per row, each ending in a newline.
    `columns[i]` holds column i's cells (all columns of one length); `right[i]`: column i
    is right-aligned (numbers), else left-aligned."""
    right = list(right) + [False] * (len(header) - len(right))
    widths = [max(len(h), max(map(len, col), default=0)) for h, col in zip(header, columns)]
    specs = [f"{{:{'>' if r else '<'}{w}}}" for r, w in zip(right, widths)]
    if not right[-1]:
        specs[-1] = "{}"
    fmt = GAP.join(specs)
    body = "\n".join(map(fmt.format, *columns))
    return fmt.format(*header).rstrip() + "\n" + (body + "\n" if body else "")


def format_table(header: Sequence[str], rows: Sequence[Sequence[str]],
                 right: Sequence[bool] = ()) -> str:
    """format_columns() of rows of cells."""
    columns = list(zip(*rows)) if rows else [()] * len(header)
    return format_columns(header, columns, right)
