"""texttable: the numpy layout gives the text one format string per row gives."""

import random

import numpy as np

from textrace.texttable import (Coded, Decimal, Lines, Tagged, _cells, _format_slow,
                                 format_columns)


def _by_format_strings(header, columns, right):
    return _format_slow(header, [_cells(c) for c in columns],
                        list(right) + [False] * (len(header) - len(right)))


def test_layout_matches_format_strings():
    """Numbers, padded strings (ASCII or not: those fall back; given or by number),
    tagged last cells (empty, with blanks, with lone surrogates as kallsyms names decode;
    given as strings or laid out already), headers wider or narrower than their cells."""
    rnd = random.Random(1)
    for _ in range(500):
        n = rnd.randint(0, 20)
        values = np.array([rnd.choice([0, 7, 10, 99, 100, 12345, 10**12]) for _ in range(n)],
                          dtype=np.int64)
        dsos = [rnd.choice(["a", "bb", "[kernel.kallsyms]", "é", ""]) for _ in range(n)]
        syms = [rnd.choice(["f", "g\udcff", "", "h i", "ü", "0x00007f0000001000"])
                for _ in range(n)]
        tags = [rnd.choice(["[k] ", "[.] "]) for _ in range(n)]
        header = rnd.choice([("Overhead", "Samples", "Shared Object", "Symbol"),
                             ("O", "S", "D", "")])
        right = (True, rnd.random() < 0.5)
        if rnd.random() < 0.5:
            # by number, from names some of which no cell uses (a wide one among them)
            names = ["a", "bb", "[kernel.kallsyms]", "é", "", "never used, and wide"]
            dsos = Coded(np.array([names.index(d) for d in dsos], dtype=np.int64), names)
            tags = Coded(np.array([int(t == "[k] ") for t in tags], dtype=np.int64),
                         ["[.] ", "[k] ", "[longer tag] "])
        if rnd.random() < 0.5 and "\n" not in "".join(syms):
            # the last column laid out already
            syms = Lines("".join(s + "\n" for s in syms).encode("utf-8", "surrogatepass"),
                         len(syms))
        columns = (Decimal(values, rnd.choice([0, 2]), rnd.choice(["%", ""])),
                   list(map(str, values.tolist())), dsos,
                   Tagged(tags, syms) if rnd.random() < 0.5 else syms)
        assert format_columns(header, columns, right) == \
            _by_format_strings(header, columns, right)


def test_hundredths_print_as_percent_format():
    """Decimal(hundredths, 2, "%") of a percent rounded to 2 places is "%.2f%%" of it."""
    percent = np.round(np.random.default_rng(2).random(10000) * 100, 2)
    percent[:3] = (0.0, 100.0, 0.01)
    hundredths = np.rint(percent * 100).astype(np.int64)
    assert Decimal(hundredths, 2, "%").cells() == ["%.2f%%" % p for p in percent.tolist()]
    text = format_columns(("Overhead", "x"), (Decimal(hundredths, 2, "%"), ["y"] * 10000),
                          (True,))
    assert [line.split()[0] for line in text.splitlines()[1:]] == \
        ["%.2f%%" % p for p in percent.tolist()]
