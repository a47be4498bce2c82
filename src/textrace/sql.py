"""`textrace sql`: SQL over the tables of one or many recordings, with DuckDB embedded.

The tables are the Parquet files `export` writes (tables.TABLES), read where they
are: an export directory, or one made now in a private temporary directory from the
recordings given (only the tables the query names are built).  DuckDB runs in-process
with its built-in extensions only: none is installed or loaded from the network.

Results come out as JSON lines (DuckDB makes each row's JSON; blobs as hex) or as text
columns (addresses, UINT64, as hex; blobs as hex; NULL as '-').
"""

from __future__ import annotations

import os
import re
from typing import Iterator

from .errors import TextraceError
from .tables import TABLES

DUCKDB_CONFIG = {
    # built-in extensions only, never fetched: no network, nothing installed
    "autoinstall_known_extensions": "false",
    "autoload_known_extensions": "false",
    "allow_community_extensions": "false",
}


def tables_in(query: str) -> list[str]:
    """The tables a query names (a word match; a name in a string literal counts too,
    which only builds a table more)."""
    return [t for t in TABLES if re.search(rf"\b{t}\b", query, re.IGNORECASE)]


def _quote(s: str) -> str:
    return "'" + s.replace("'", "''") + "'"


def _ident(s: str) -> str:
    return '"' + s.replace('"', '""') + '"'


def connect(directories: list[str]):
    """A DuckDB connection with a view per table over the Parquet files of `directories`
    (each an export; their rows side by side).  A table missing from every directory is
    left out, and a query naming it fails with DuckDB's own message."""
    import duckdb
    con = duckdb.connect(":memory:", config=DUCKDB_CONFIG)
    for table in TABLES:
        files = [os.path.join(d, f"{table}.parquet") for d in directories]
        files = [f for f in files if os.path.exists(f)]
        if files:
            listed = "[" + ", ".join(_quote(f) for f in files) + "]"
            con.execute(f"CREATE VIEW {table} AS SELECT * FROM read_parquet({listed}, "
                        f"union_by_name = true)")
    return con


def run(con, query: str):
    """The query's result as a DuckDB relation; None for a statement without rows."""
    import duckdb
    try:
        return con.sql(query)
    except duckdb.Error as e:
        raise TextraceError(f"SQL: {str(e).splitlines()[0]}", field="QUERY") from None


def _fetch(rel, batch_rows: int = 1 << 16) -> Iterator[list]:
    """The relation's first column in chunks, as Python values."""
    import duckdb
    try:
        reader = rel.fetch_record_batch(batch_rows)
        for rb in reader:
            yield rb.column(0).to_pylist()
    except duckdb.Error as e:
        raise TextraceError(f"SQL: {str(e).splitlines()[0]}", field="QUERY") from None


def _unique(names: list[str]) -> list[str]:
    """Column names made unique (a join's `SELECT *` repeats them): a, a_1, ..."""
    seen: dict[str, int] = {}
    out = []
    for n in names:
        k = seen.get(n, 0)
        seen[n] = k + 1
        out.append(n if not k else f"{n}_{k}")
    return out


def json_lines(rel) -> Iterator[str]:
    """One JSON object per row, made by DuckDB (blobs as hex strings first; columns are
    taken by position, so repeated names stay apart, as name_1...)."""
    cols = ", ".join((f"lower(hex(#{i}))" if str(t) == "BLOB" else f"#{i}") + f" AS {_ident(c)}"
                     for i, (c, t) in enumerate(zip(_unique(list(rel.columns)), rel.types),
                                                1))
    rows = rel.project(cols).project("CAST(to_json(struct_pack(*COLUMNS(*))) AS VARCHAR)")
    for chunk in _fetch(rows):
        yield from chunk


def _text_expr(i: int, kind: str) -> str:
    c = f"#{i}"
    if kind == "UBIGINT":
        expr = f"printf('%#x', {c})"
    elif kind == "BLOB":
        expr = f"lower(hex({c}))"
    else:
        expr = f"CAST({c} AS VARCHAR)"
    return f"coalesce({expr}, '-')"


_NUMERIC = re.compile(r"^(TINYINT|SMALLINT|INTEGER|BIGINT|HUGEINT|U\w*INT|FLOAT|DOUBLE|"
                      r"DECIMAL.*)$")


class TextResult:
    """A result as text, kept in a DuckDB temporary table: its cells for a small result
    (a rich table), or its lines laid out by DuckDB itself for a big one (no Python string
    per cell: a million rows print in seconds)."""

    TABLE = "_textrace_text"

    def __init__(self, con, rel):
        kinds = [str(t) for t in rel.types]
        self.con = con
        self.columns = list(rel.columns)
        self.numeric = [bool(_NUMERIC.match(k)) and k != "UBIGINT" for k in kinds]
        text = rel.project(", ".join(f"{_text_expr(i, k)} AS c{i}"
                                     for i, k in enumerate(kinds, 1)))
        self._do(lambda: text.create(self.TABLE))
        self.rows = self._do(lambda: con.sql(f"SELECT count(*) FROM {self.TABLE}")
                             .fetchall()[0][0])

    @staticmethod
    def _do(step):
        import duckdb
        try:
            return step()
        except duckdb.Error as e:
            raise TextraceError(f"SQL: {str(e).splitlines()[0]}", field="QUERY") from None

    def cells(self) -> list[tuple]:
        """Every row as text cells, for a small result printed as a rich table."""
        return self._do(lambda: self.con.sql(f"SELECT * FROM {self.TABLE}").fetchall())

    def lines(self, sep: str = "  ") -> Iterator[list[str]]:
        """The header line, then the rows' lines in chunks: numbers right-aligned, the
        rest left-aligned, each column as wide as its widest cell."""
        n = len(self.columns)
        got = self._do(lambda: self.con.sql(
            "SELECT " + ", ".join(f"max(length(c{i}))" for i in range(1, n + 1))
            + f" FROM {self.TABLE}").fetchall()[0])
        widths = [max(len(c), w or 0) for c, w in zip(self.columns, got)]
        yield [sep.join(c.rjust(w) if num else c.ljust(w) for c, w, num in
                        zip(self.columns, widths, self.numeric)).rstrip()]
        cat = f" || {_quote(sep)} || ".join(
            f"{'lpad' if num else 'rpad'}(c{i}, {w}, ' ')"
            for i, (w, num) in enumerate(zip(widths, self.numeric), 1))
        rel = self._do(lambda: self.con.sql(f"SELECT rtrim({cat}) FROM {self.TABLE}"))
        yield from _fetch(rel)
