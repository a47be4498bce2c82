"""kallsyms text split by compiled code (history/kallsyms_text.py) against the format read
line by line, on this machine's /proc/kallsyms and on lines that break the format; and the
child that reads it for a report, against reading it in place."""

from __future__ import annotations

import re

import numpy as np
import pytest

from textrace.history.kallsyms import KernelSymbols
from textrace.sources.kallsyms import KallsymsReader, read_proc_kallsyms

LINE = re.compile(rb"([0-9a-f]{16}) ([tTwW]) ([^ \t\n]+)(?:\t\[([^ \t\n]+)\])?")


def by_lines(text: bytes) -> list[tuple[int, str, str | None]]:
    """(address, name, module) of each text symbol, as the format says, by address."""
    out = []
    for line in text.split(b"\n"):
        m = LINE.fullmatch(line)
        if m and int(m[1], 16):
            out.append((int(m[1], 16), m[3].decode(), m[4] and m[4].decode()))
    return sorted(out, key=lambda t: t[0])   # stable: aliases keep the file's order


def as_tuples(symbols: KernelSymbols) -> list[tuple[int, str, str | None]]:
    return [(int(a), symbols.name(i), symbols.module(i))
            for i, a in enumerate(symbols.addrs.tolist())]


def test_this_machines_kallsyms_as_the_format_reads_it():
    with open("/proc/kallsyms", "rb") as f:
        text = f.read()
    expected = by_lines(text)
    assert len(expected) > 50_000
    assert as_tuples(KernelSymbols.parse(text)) == expected


@pytest.mark.parametrize("text", [
    b"",
    b"x",
    b"ffffffff81000000 T _text",                                   # no final newline
    b"0000000000000000 T hidden\n" * 3,                             # kptr_restrict
    b"ffffffff81000000 D data\nffffffff81000010 t code\n",          # data is not code
    b"FFFFFFFF81000000 T upper\nffffffff8100000g T nothex\n",       # lowercase hex only
    b"ffffffff81000000 T a\t[]\nffffffff81000001 T b\t[m\n",        # broken modules
    b"ffffffff81000002 T  c\nffffffff81000003 T d\t[mod]\n",         # two blanks; a module
    b"ffffffff81000004 T \nffffffff81000005 T e f\n",               # no name; a space in it
    b"ffffffff81000006 T g\t[m d]\nffffffff81000007 T h\t\t[m]\n",  # blank in a module
    b"ffffffff81000009 W w\nffffffff81000008 t b\nffffffff81000008 T a\n",  # order, aliases
    b"ffffffff8100000 T short\n\n\nffffffff81000000 T ok\r\n",
])
def test_lines_that_break_the_format_are_skipped(text):
    assert as_tuples(KernelSymbols.parse(text)) == by_lines(text)


def test_the_child_reads_what_a_read_in_place_gives():
    reader = KallsymsReader()
    try:
        child = reader.result()
    finally:
        reader.close()
    here = read_proc_kallsyms()
    # modules load and unload between two reads only on a busy machine; the core kernel's
    # symbols are the same
    assert len(child) > 50_000
    core = lambda s: [t for t in as_tuples(s) if t[2] is None]  # noqa: E731
    assert core(child) == core(here)
    assert (child.addrs[1:] >= child.addrs[:-1]).all()
