"""Aligned text tables for the views' long outputs (a report has 100k+ rows).

rich's Table measures every cell through its console and renders segment by segment:
24.5k report rows took it about 14 s.  Here the column widths are found in one pass over
each column and the lines are laid out as bytes by numpy, a column at a time, so a table
of 111k rows costs ~30 ms instead of the ~0.3 s of one format string per row.  The look is
rich's with box=None: columns two spaces apart under a header line, the last column not
padded.

A column is a sequence of strings or, where the caller has the values in numpy, a
`Decimal` (numbers formatted here, without a string per cell), a `Coded` (cells drawn from
a few distinct strings by number) or a `Tagged` (a short tag before each cell, without
concatenating them first); the last column's cells may come as `Lines`, laid out already.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

GAP = "  "
_SPACE, _NL = 32, 10


@dataclass
class Decimal:
    """Non-negative integers printed in decimal with `decimals` of their digits after a
    point (hundredths with decimals=2 print as "%.2f" prints them), then `suffix`."""

    values: np.ndarray
    decimals: int = 0
    suffix: str = ""

    def __len__(self) -> int:
        return len(self.values)

    def cells(self) -> list[str]:
        """Each value as text, with its decimals and suffix."""
        d, s = self.decimals, self.suffix
        if not d:
            return [f"{v}{s}" for v in self.values.tolist()]
        scale = 10 ** d
        return [f"{v // scale}.{v % scale:0{d}d}{s}" for v in self.values.tolist()]


@dataclass
class Coded:
    """Cell i is names[codes[i]]: a column of few distinct strings (a report's 100k rows
    name a few hundred shared objects) laid out from its names, by number."""

    codes: np.ndarray     # integer, each an index into names
    names: Sequence[str]

    def __len__(self) -> int:
        return len(self.codes)

    def cells(self) -> list[str]:
        """Each cell's string."""
        return list(map(self.names.__getitem__, self.codes.tolist()))


@dataclass
class Lines:
    """Cells laid out already: each cell's UTF-8 text followed by a newline, `count` of
    them (a report's 100k address rows made by numpy, never a string each).  Only the
    last column, which is not padded, can be given so."""

    blob: bytes
    count: int

    def __len__(self) -> int:
        return self.count

    def cells(self) -> list[str]:
        """Each cell's string."""
        return self.blob.decode("utf-8", "surrogatepass").split("\n")[:-1]


@dataclass
class Tagged:
    """Each cell `tags[i] + text[i]`, the tags all of one length (kept apart so that the
    table puts them in place instead of a string being made per cell); the tags strings
    or a Coded."""

    tags: Sequence[str] | Coded
    text: Sequence[str] | Lines

    def __len__(self) -> int:
        return len(self.text)

    def cells(self) -> list[str]:
        """Each value as text, its tag in front."""
        return list(map(str.__add__, _cells(self.tags), _cells(self.text)))


def _cells(col) -> Sequence[str]:
    return col.cells() if isinstance(col, (Decimal, Coded, Lines, Tagged)) else col


def format_columns(header: Sequence[str], columns: Sequence, right: Sequence[bool] = ()) -> str:
    """The table as text, the header line then one line per row, each ending in a newline.
    `columns[i]` holds column i's cells (all columns of one length): strings, a Decimal or
    a Tagged; `right[i]`: column i is right-aligned (numbers), else left-aligned."""
    return format_columns_utf8(header, columns, right).decode("utf-8", "surrogatepass")


def format_columns_utf8(header: Sequence[str], columns: Sequence,
                        right: Sequence[bool] = ()) -> bytes:
    """format_columns() encoded in UTF-8, as the layout makes it (a report's table is
    written out as it is, not decoded to be encoded again: ~15 ms of 10 MB)."""
    right = list(right) + [False] * (len(header) - len(right))
    fast = _format_fast(header, columns, right)
    if fast is not None:
        return fast
    return _format_slow(header, [_cells(c) for c in columns], right).encode(
        "utf-8", "surrogatepass")


def _format_slow(header, columns, right) -> str:
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


# --- the numpy layout ----------------------------------------------------------------------
# Every column but the last has a fixed width, so those make one (rows x width) byte block;
# the last column's cells are joined with newlines into one blob, and the two are
# interleaved by a mask.  Widths count characters and the blocks bytes, so a padded column
# must be ASCII; anything else (non-ASCII padded cells, a newline in a cell, a negative
# number, a right-aligned last column) takes the format-string path above.


def _format_fast(header, columns, right) -> bytes | None:
    n = len(columns[0]) if columns else 0
    if not n or right[-1] or any(len(c) != n for c in columns):
        return None
    blocks = []
    widths = []
    for h, col, r in zip(header[:-1], columns[:-1], right[:-1]):
        if isinstance(col, Decimal):
            block = _decimal_block(col) if r else None
        else:
            block = _text_block(col if isinstance(col, Coded) else _cells(col), n, right=r)
        if block is None:
            return None
        width = max(len(h), block.shape[1])
        if width > block.shape[1]:
            pad = np.full((n, width - block.shape[1]), _SPACE, dtype=np.uint8)
            block = np.hstack([pad, block] if r else [block, pad])
        blocks.append(block)
        blocks.append(np.full((n, len(GAP)), _SPACE, dtype=np.uint8))
        widths.append(width)
    last = columns[-1]
    text = last.text if isinstance(last, Tagged) else last
    if isinstance(last, Tagged):
        tag = _text_block(last.tags, n, same_length=True)
        if tag is None:
            return None
        blocks.append(tag)
    joined = text.blob if isinstance(text, Lines) else \
        ("\n".join(text) + "\n").encode("utf-8", "surrogatepass")
    if joined.count(b"\n") != n:
        return None
    blob = np.frombuffer(joined, dtype=np.uint8)
    fixed = np.hstack(blocks) if blocks else np.zeros((n, 0), dtype=np.uint8)
    width = fixed.shape[1]
    ends = np.flatnonzero(blob == _NL) + 1            # each cell's end in the blob
    out = np.empty(n * width + len(blob), dtype=np.uint8)
    if width:
        # True over each line's fixed part, False over its last cell
        runs = np.empty(2 * n, dtype=np.int64)
        runs[0::2] = width
        runs[1::2] = np.diff(ends, prepend=0)
        in_fixed = np.repeat(np.tile(np.array([True, False]), n), runs)
        out[in_fixed] = fixed.reshape(-1)
        out[~in_fixed] = blob
    else:
        out[:] = blob
    head = GAP.join([f"{h:>{w}}" if r else f"{h:<{w}}" for h, w, r in
                     zip(header[:-1], widths, right)] + [header[-1]])
    return (head.rstrip() + "\n").encode("utf-8", "surrogatepass") + out.tobytes()


def _text_block(cells: Sequence[str] | Coded, n: int, *, right: bool = False,
                same_length: bool = False) -> np.ndarray | None:
    """The cells aligned in a (n x width) byte block, None if some cell is not ASCII
    (widths count characters).  Made from the distinct cells (a report's dso column has
    a few hundred)."""
    if isinstance(cells, Coded):
        # the names used, renumbered (a name no cell has must not widen the column)
        codes = np.asarray(cells.codes, dtype=np.intp)
        used = np.flatnonzero(np.bincount(codes, minlength=len(cells.names)))
        renumber = np.zeros(len(cells.names), dtype=np.intp)
        renumber[used] = np.arange(len(used))
        distinct, index = list(map(cells.names.__getitem__, used.tolist())), renumber[codes]
    else:
        distinct, index = list(dict.fromkeys(cells)), None
    if not all(map(str.isascii, distinct)):
        return None
    width = max(map(len, distinct), default=0)
    if same_length and any(len(c) != width for c in distinct):
        return None
    table = np.frombuffer("".join(c.rjust(width) if right else c.ljust(width)
                                  for c in distinct).encode("ascii"),
                          dtype=np.uint8).reshape(len(distinct), width)
    if len(distinct) == 1:
        return np.broadcast_to(table, (n, width))
    if index is None:
        number = {c: i for i, c in enumerate(distinct)}
        index = np.fromiter(map(number.__getitem__, cells), dtype=np.intp, count=n)
    return table[index]


def _decimal_block(col: Decimal) -> np.ndarray | None:
    """The numbers right-aligned in a (n x width) byte block; None for negative ones."""
    v = np.asarray(col.values).astype(np.int64, copy=False)
    if len(v) and int(v.min()) < 0:
        return None
    d = col.decimals
    suffix = col.suffix.encode("ascii") if col.suffix.isascii() else None
    if suffix is None:
        return None
    # digits per value: at least d + 1 (a leading zero before the point)
    digits = np.ones(len(v), dtype=np.int64)
    p = 10
    top = int(v.max()) if len(v) else 0
    while p <= top:
        digits += v >= p
        p *= 10
    np.maximum(digits, d + 1, out=digits)
    most = int(digits.max()) if len(v) else d + 1
    text_width = most + (1 if d else 0)
    width = text_width + len(suffix)
    block = np.full((len(v), width), _SPACE, dtype=np.uint8)
    if suffix:
        block[:, text_width:] = np.frombuffer(suffix, dtype=np.uint8)
    rest = v.copy()
    col_at = text_width - 1
    for j in range(most):           # j-th digit from the right
        if d and j == d:
            block[:, col_at] = ord(".")
            col_at -= 1
        digit = (rest % 10).astype(np.uint8) + ord("0")
        rest //= 10
        block[:, col_at] = np.where(j < digits, digit, _SPACE)
        col_at -= 1
    return block
